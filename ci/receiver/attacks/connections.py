"""Connection floods against the upload listener, and keep-alive's cost.

flood-one-address, flood-50-addresses: 5,000 connections held open (half
silent, half trickling a request head a byte a second), each reopened as soon
as the receiver closes it; meanwhile a legitimate agent (another address)
makes 50 uploads at an agent's pace, a fresh connection each, 20 s timeout.
Pass: all 50 answered True and their p99 latency <= 1 s.

keep-alive: the receiver's CPU (utime+stime) per request for N uploads over
one persistent connection, and for N with a connection each.
"""

import os
import resource
import selectors
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FLOOD = 5000
UPLOADS = 50
PACE = 0.1           # seconds between the agent's uploads
P99_BOUND = 1.0      # seconds: the pass criterion
KEEPALIVE_N = 1000
AGENT_FOR = 90       # seconds: uploads not made by then count as failed


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Flood(threading.Thread):
    """Holds `count` connections from `sources`, reopening each the receiver closes."""

    def __init__(self, port, sources, count):
        super().__init__(daemon=True)
        self.port, self.sources, self.count = port, sources, count
        self.stop = threading.Event()
        self.opened = 0
        self.sel = selectors.DefaultSelector()

    def open_one(self, i):
        s = socket.socket()
        s.bind((self.sources[i % len(self.sources)], 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        self.opened += 1
        # Odd ones trickle a head (never finished), even ones stay silent.
        self.sel.register(s, selectors.EVENT_READ, (i, 0))

    def run(self):
        for i in range(self.count):
            self.open_one(i)
        head = b"POST /cobbler_api HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
        last_trickle = time.monotonic()
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.2):
                s, (i, _) = key.fileobj, key.data
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(s)
                    s.close()
                    self.open_one(i)
            if time.monotonic() - last_trickle >= 1.0:
                last_trickle = time.monotonic()
                for key in list(self.sel.get_map().values()):
                    i, sent = key.data
                    if i % 2 and sent < len(head):
                        try:
                            key.fileobj.send(head[sent:sent + 1])
                            self.sel.modify(key.fileobj, selectors.EVENT_READ, (i, sent + 1))
                        except OSError:
                            pass
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def agent(port, source, tag):
    """50 uploads at an agent's pace; returns (latencies of successes, failures)."""
    lat, failed = [], 0
    offset = 0
    give_up = time.monotonic() + AGENT_FOR
    for n in range(UPLOADS):
        if time.monotonic() > give_up:
            return lat, failed + UPLOADS - n
        data = f"{tag} line {n}\n".encode()
        t = time.monotonic()
        try:
            ok = common.upload(port, "legit01", tag + ".log", offset, data, source=source, timeout=20)
        except OSError:
            ok = False
        if ok:
            lat.append(time.monotonic() - t)
            offset += len(data)
        else:
            failed += 1
        time.sleep(PACE)
    return lat, failed


def flood_attack(args, name, sources):
    r = common.Receiver(args.receiver, args.work, name)
    try:
        flood = Flood(r.port, sources, FLOOD)
        flood.start()
        time.sleep(5)  # the flood is in place (and has been cut and reopened)
        lat, failed = agent(r.port, "127.0.0.200", name)
        flood.stop.set()
        flood.join(10)
        p99 = common.percentile(lat, 99)
        rss = r.rss_peak_kib()
        passed = failed == 0 and p99 is not None and p99 <= P99_BOUND
        p99_text = f"{p99 * 1000:.0f} ms" if p99 is not None else "none answered"
        return common.report(
            name, passed,
            f"{len(lat)}/{UPLOADS} uploads True under {FLOOD} connections from "
            f"{len(sources)} address(es) ({flood.opened} opened); p99 {p99_text} "
            f"(bound {P99_BOUND * 1000:.0f} ms); receiver peak RSS {rss / 1024:.1f} MiB")
    finally:
        r.stop()


def keep_alive(args):
    # The rate cap is lifted: 1,000 requests from one address in a few
    # seconds are over it, and what is measured here is the connection.
    r = common.Receiver(args.receiver, args.work, "keepalive", ["--rate", "100000", "--burst", "100000"])
    try:
        data = b"x" * 2000 + b"\n"
        # One connection for all (as ureq's pool and Python's xmlrpc do).
        conn = common.SourceConnection(r.port, "127.0.0.2")
        cpu0 = r.cpu_seconds()
        t0 = time.monotonic()
        ports, closed = set(), 0
        ok_persistent = 0
        for n in range(KEEPALIVE_N):
            ok_persistent += common.upload(r.port, "ka01", "a.log", n * len(data), data, conn=conn)
            # http.client drops its socket when the answer says the server
            # closes; it opens a new one for the next request.
            if conn.sock is None:
                closed += 1
            else:
                ports.add(conn.sock.getsockname()[1])
        persistent_cpu = (r.cpu_seconds() - cpu0) / KEEPALIVE_N
        persistent_wall = (time.monotonic() - t0) / KEEPALIVE_N
        conn.close()
        cpu0 = r.cpu_seconds()
        t0 = time.monotonic()
        ok_fresh = 0
        for n in range(KEEPALIVE_N):
            ok_fresh += common.upload(r.port, "ka02", "a.log", n * len(data), data, source="127.0.0.3")
        fresh_cpu = (r.cpu_seconds() - cpu0) / KEEPALIVE_N
        fresh_wall = (time.monotonic() - t0) / KEEPALIVE_N
        connections = closed + len(ports)
        passed = ok_persistent == ok_fresh == KEEPALIVE_N and connections == 1
        return common.report(
            "keep-alive", passed,
            f"receiver CPU per request: {persistent_cpu * 1e6:.0f} us over one persistent connection "
            f"({connections} connection(s) for {KEEPALIVE_N} requests, {persistent_wall * 1000:.2f} ms each), "
            f"{fresh_cpu * 1e6:.0f} us with a connection per request ({fresh_wall * 1000:.2f} ms each)")
    finally:
        r.stop()


def main():
    args = common.parse_args(__doc__.splitlines()[0])
    print(f"# RLIMIT_NOFILE raised to {raise_nofile()}", flush=True)
    results = [
        flood_attack(args, "flood-one-address", ["127.0.0.2"]),
        flood_attack(args, "flood-50-addresses", [f"127.0.0.{i}" for i in range(2, 52)]),
        keep_alive(args),
    ]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
