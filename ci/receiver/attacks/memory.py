"""Memory under load: the receiver's peak resident set (VmHWM).

upload-burst: 64 concurrent uploads of 1 MB request bodies (the default
--max-request-size is 1 MiB), from 4 addresses.
whole-mix: the same burst while 5,000 connections from 50 addresses are held
open (silent or trickling) and 32 clients read /raw of a 42 MB log at 2 KiB/s.
Pass: every upload answered True, and peak RSS under MEMORY_BOUND_MIB (why
that bound: see receiver/README.md, "Memory").
"""

import os
import resource
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import connections  # noqa: E402
import view  # noqa: E402

BURST = 64
# Raw bytes whose base64 in an upload_log_data call makes a body of about
# 1,000,000 bytes.
DATA = 748 * 1024
# The body budget (--body-memory, 32 MiB) with the parse's copies of the
# bodies it admits (about 1.5 times), hyper's buffers for 5,000 connections
# and the view's streams: see receiver/README.md.
MEMORY_BOUND_MIB = 96


def burst(port, tag):
    """64 concurrent uploads; returns how many were answered True."""
    results = []
    lock = threading.Lock()

    def one(i):
        data = bytes([65 + i % 26]) * DATA
        try:
            ok = common.upload(port, f"mem{i:02d}", tag + ".log", 0, data,
                               source=f"127.0.1.{1 + i % 4}", timeout=60)
        except OSError:
            ok = False
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return sum(results)


def main():
    args = common.parse_args(__doc__.splitlines()[0])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ok = []

    r = common.Receiver(args.receiver, args.work, "burst")
    try:
        base = r.rss_peak_kib()
        t = time.monotonic()
        stored = burst(r.port, "burst")
        took = time.monotonic() - t
        peak = r.rss_peak_kib()
        ok.append(common.report(
            "upload-burst", stored == BURST and peak < MEMORY_BOUND_MIB * 1024,
            f"{stored}/{BURST} concurrent 1 MB uploads True in {took:.1f} s; peak RSS "
            f"{peak / 1024:.1f} MiB (at start {base / 1024:.1f} MiB; bound {MEMORY_BOUND_MIB} MiB)"))
    finally:
        r.stop()

    live_port_file = os.path.join(args.work, "mix-live-view.port")
    r = common.Receiver(args.receiver, args.work, "mix",
                        ["--view", "127.0.0.1:0", "--view-port-file", live_port_file])
    flood = None
    try:
        view_port = common.wait_port_file(live_port_file)
        os.makedirs(os.path.join(r.dir, "web01"), exist_ok=True)
        with open(os.path.join(r.dir, "web01", "big.log"), "wb") as f:
            f.write((b"x" * 99 + b"\n") * (view.LOG_BYTES // 100))
        flood = connections.Flood(r.port, [f"127.0.0.{i}" for i in range(2, 52)], connections.FLOOD)
        flood.start()
        held = []
        readers = [threading.Thread(target=view.slow_reader, args=(view_port, f"127.0.2.{1 + i // 8}", held),
                                    daemon=True) for i in range(32)]
        for t in readers:
            t.start()
        time.sleep(5)
        stored = burst(r.port, "mix")
        peak = r.rss_peak_kib()
        view.STOP.set()
        ok.append(common.report(
            "whole-mix", stored == BURST and peak < MEMORY_BOUND_MIB * 1024,
            f"{stored}/{BURST} concurrent 1 MB uploads True beside {connections.FLOOD} flood connections "
            f"from 50 addresses and 32 slow /raw readers; peak RSS {peak / 1024:.1f} MiB "
            f"(bound {MEMORY_BOUND_MIB} MiB)"))
    finally:
        if flood:
            flood.stop.set()
            flood.join(10)
        r.stop()
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
