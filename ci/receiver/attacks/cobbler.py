#!/usr/bin/env python3
"""A hung cobblerd against anamon-receiver --cobbler-api (issue 22, hole 5):
cobblerd accepts and never answers. A new name must cost a fault within
seconds, not a server slot for minutes, and a name already known must not
wait on anybody's lookup.

    python3 ci/receiver/attacks/cobbler.py --receiver BIN --work DIR

Before the fix: lookups ran one at a time at 5 s each, so 8 uploads for new
names waited up to 40 s (the agent gives up at 20 s), and an upload for a
known name whose answer had expired waited behind them.
"""

import concurrent.futures
import os
import socket
import sys
import threading
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

KNOWN = (b"<?xml version='1.0'?><methodResponse><params><param><value><struct><member><name>name</name>"
         b"<value><string>web01</string></value></member></struct></value></param></params></methodResponse>")


class FakeCobblerd:
    """Answers get_system for web01 at once; every other call is read and
    never answered (the connection held open)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, conn):
        req = b""
        while b"</methodCall>" not in req:
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                return
            req += chunk
        # Read as cobblerd reads it (xmlrpc.client), whatever the encoder's
        # spelling of a string.
        params, method = xmlrpc.client.loads(req.split(b"\r\n\r\n", 1)[1])
        if method == "get_system" and params[:1] == ("web01",):
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(KNOWN)
                         + KNOWN)
            conn.close()
        else:
            self.held.append(conn)  # hung: never answered

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def timed_upload(port, system, source):
    t = time.monotonic()
    status, body = common.call(port, common.upload_body(system, "a.log", 0, b"hello"), source=source, timeout=60)
    return time.monotonic() - t, status == 200 and b"<boolean>1</boolean>" in body, common.fault_text(body)


def main():
    args = common.parse_args(__doc__)
    os.makedirs(args.work, exist_ok=True)
    cobblerd = FakeCobblerd()
    r = common.Receiver(args.receiver, args.work, "cobbler",
                        ["--cobbler-api", f"http://127.0.0.1:{cobblerd.port}"])
    try:
        took, ok, _ = timed_upload(r.port, "web01", "127.0.3.1")
        if not ok:
            raise RuntimeError("web01 was not accepted with a working answer")
        # 8 new names at once, each asking the hung cobblerd; meanwhile web01
        # (cached) uploads go on.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            hung = [pool.submit(timed_upload, r.port, f"new{i}", f"127.0.3.{10 + i}") for i in range(8)]
            time.sleep(0.5)
            known = [timed_upload(r.port, "web01", "127.0.3.2") for _ in range(10)]
            hung = [f.result() for f in hung]
    finally:
        r.stop()
        cobblerd.close()
    worst_new = max(t for t, _, _ in hung)
    faults = sum(1 for _, ok, fault in hung if not ok and fault and "Cobbler" in fault)
    worst_known = max(t for t, _, _ in known)
    passed = common.report(
        "cobbler-hung-lookup", faults == 8 and worst_new < 10,
        f"8 new names while cobblerd hangs: {faults} faults, the slowest after {worst_new:.1f} s "
        f"(was one lookup at a time, 5 s each: up to 40 s)")
    passed &= common.report(
        "cobbler-known-name-meanwhile", all(ok for _, ok, _ in known) and worst_known < 2,
        f"10 uploads for the known web01 meanwhile: {sum(ok for _, ok, _ in known)} True, "
        f"slowest {worst_known * 1000:.0f} ms")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
