"""Slow readers against the live view (--view).

slow-raw-readers: 16 clients from one address and 16 from 16 others read
/raw of a 42 MB log at 2 KiB/s; meanwhile a page (/) is asked for from
another address every 2 s. Pass: every page answered, the slowest within 1 s.
The figure also gives how many of the readers' connections the receiver
still holds 30 s in (its side of them, from /proc/net/tcp; a reader goes on
draining its own socket buffer after the receiver has cut it), and the cuts
/metrics counts.
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LOG_BYTES = 42 << 20
RATE = 2048          # bytes per second per slow reader
PAGES = 10
PAGE_BOUND = 1.0     # seconds: the pass criterion


STOP = threading.Event()


def server_connections(port):
    """ESTABLISHED sockets whose local port is `port`: the receiver's side."""
    n = 0
    for line in open("/proc/net/tcp").readlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            n += 1
    return n


def slow_reader(port, source, held):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(30)
    t = time.monotonic()
    got = 0
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /raw/web01/big.log HTTP/1.1\r\nHost: x\r\n\r\n")
        while got < LOG_BYTES + 4096 and not STOP.is_set():
            data = s.recv(RATE)
            if not data:
                break
            got += len(data)
            time.sleep(1)
    except OSError:
        pass
    finally:
        s.close()
    held.append((time.monotonic() - t, got))


def get(port, target, source="127.0.0.1"):
    """GETs `target` from `source` (the view answers and closes); returns
    (seconds taken, the whole answer), or (None, b"") if it failed."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(20)
    t = time.monotonic()
    out = b""
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while True:
            data = s.recv(65536)
            if not data:
                break
            out += data
    except OSError:
        return None, out
    finally:
        s.close()
    return time.monotonic() - t, out


def page(port, source):
    took, out = get(port, "/", source)
    return took if out.startswith(b"HTTP/1.1 200") else None


def main():
    args = common.parse_args(__doc__.splitlines()[0])
    view_port_file = os.path.join(args.work, "live-view.port")
    r = common.Receiver(args.receiver, args.work, "view",
                        ["--view", "127.0.0.1:0", "--view-port-file", view_port_file])
    try:
        view_port = common.wait_port_file(view_port_file)
        os.makedirs(os.path.join(r.dir, "web01"), exist_ok=True)
        with open(os.path.join(r.dir, "web01", "big.log"), "wb") as f:
            line = b"x" * 99 + b"\n"
            f.write(line * (LOG_BYTES // len(line)))
        held = []
        sources = ["127.0.0.2"] * 16 + [f"127.0.0.{i}" for i in range(3, 19)]
        readers = [threading.Thread(target=slow_reader, args=(view_port, s, held), daemon=True)
                   for s in sources]
        for t in readers:
            t.start()
        time.sleep(3)
        latencies = []
        for _ in range(PAGES):
            latencies.append(page(view_port, "127.0.0.200"))
            time.sleep(2)
        time.sleep(max(0, 30 - 3 - PAGES * 2))
        still = server_connections(view_port)
        STOP.set()
        for t in readers:
            t.join(10)
        metrics = get(view_port, "/metrics")[1].decode("utf-8", "replace")
        cuts = next((l.rsplit(" ", 1)[1] for l in metrics.splitlines()
                     if 'cause="slow_reader"' in l), "none")
        answered = [x for x in latencies if x is not None]
        worst = max(answered) if answered else None
        most = max((g for _, g in held), default=0)
        passed = len(answered) == PAGES and worst <= PAGE_BOUND
        worst_text = f"{worst * 1000:.0f} ms" if worst is not None else "none"
        ok = common.report(
            "slow-raw-readers", passed,
            f"{len(answered)}/{PAGES} pages answered beside {len(sources)} /raw readers at "
            f"{RATE // 1024} KiB/s; slowest page {worst_text} (bound {PAGE_BOUND * 1000:.0f} ms); "
            f"receiver-side reader connections still open at 30 s: {still}; slow readers cut: {cuts}; "
            f"a reader got {most // 1024} KiB at most of {LOG_BYTES >> 20} MiB; receiver peak RSS {r.rss_peak_kib() / 1024:.1f} MiB")
    finally:
        r.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
