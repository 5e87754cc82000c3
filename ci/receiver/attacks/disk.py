#!/usr/bin/env python3
"""Disk attacks on anamon-receiver (issue 22, hole 2): the caps must hold in
aggregate, empty files must count, a flooded directory must not slow every
later upload, and a flood of names must not flood the log.

    python3 ci/receiver/attacks/disk.py --receiver BIN --work DIR

Figures before the fix (issue 22, at the defaults with 1 MiB caps): 30
invented names x 700 KB all True (20.6 MB stored); 20,000 empty files all
True, then 63 ms median per upload to that system against 7.8 ms for a fresh
one; 20,034 log lines.
"""

import concurrent.futures
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# Uploads timed per system, 1.1 s apart.
UPLOADS_TIMED = 12


def metric(view_port, cause):
    """anamon_receiver_refusals_total{cause=CAUSE} from the view's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{view_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(f'anamon_receiver_refusals_total{{cause="{cause}"}} '):
            return int(line.rsplit(" ", 1)[1])
    return None


def stored_bytes(root):
    total = 0
    for dirpath, _, files in os.walk(root):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return total


def with_view(work, tag):
    port_file = os.path.join(work, tag + ".view-port")
    return ["--view", "127.0.0.1:0", "--view-port-file", port_file], port_file


def read_port(path):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            return int(open(path).read())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"no view port in {path}")


def total_budget(binary, work):
    """30 invented system names x 700 KB against --max-total-size 10M."""
    view_args, view_port_file = with_view(work, "total")
    r = common.Receiver(binary, work, "total", ["--max-file-size", "1M", "--max-system-size", "1M",
                                                "--max-total-size", "10M", *view_args])
    try:
        data = os.urandom(700_000)
        answers = []
        for i in range(30):
            status, body = common.call(r.port, common.upload_body(f"invented{i}", "a.log", 0, data))
            answers.append(b"<boolean>1</boolean>" in body and status == 200)
        faults = [i for i, ok in enumerate(answers) if not ok]
        stored = stored_bytes(r.dir)
        counted = metric(read_port(view_port_file), "total_cap")
        status, body = common.call(r.port, common.upload_body("invented99", "a.log", 0, data))
        says = "--max-total-size" in (common.fault_text(body) or "")
    finally:
        r.stop()
    return common.report(
        "disk-total-budget", stored <= 10 << 20 and faults and says and counted == len(faults),
        f"{sum(answers)} of 30 x 700 KB answered True, {stored:,} bytes stored under --max-total-size 10M "
        f"(was 30, 20.6 MB); {len(faults)} faults naming --max-total-size, /metrics total_cap {counted}")


def empty_files_and_cost(binary, work):
    """20,000 zero-byte files into one system from 40 loopback addresses;
    then the median cost of an upload to a system holding 20,000 files
    (planted beside the receiver, as a flood before the cap would leave it)
    against a fresh system; then the log lines all this wrote."""
    r = common.Receiver(binary, work, "empty", ["--rate", "1000", "--burst", "1000"])
    passed = True
    try:
        sources = [f"127.0.0.{10 + i}" for i in range(40)]

        def flood(k):
            source, ok = sources[k % 40], 0
            for i in range(k, 20_000, 40):
                ok += common.upload(r.port, "flooded", f"f{i}", 0, b"", source=source)
            return ok

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            accepted = sum(pool.map(flood, range(40)))
        took = time.monotonic() - began
        files = len(os.listdir(os.path.join(r.dir, "flooded")))
        passed &= common.report(
            "disk-empty-files", files <= 1000 and accepted <= 1000,
            f"{accepted} of 20,000 zero-byte files answered True ({files} on disk; --max-files-per-system "
            f"default 1000; was 20,000 True) in {took:.1f} s")

        # A directory of 20,000 files, planted: what does each upload to it cost?
        big = os.path.join(r.dir, "planted")
        os.makedirs(big)
        for i in range(20_000):
            open(os.path.join(big, f"p{i}"), "wb").close()
        open(os.path.join(big, "live.log"), "wb").close()

        def median_ms(system):
            # An agent's uploads to one system come a second or more apart:
            # each past the 1 s a system's scanned sizes are trusted.
            times, ok = [], 0
            for i in range(UPLOADS_TIMED):
                t = time.monotonic()
                ok += common.upload(r.port, system, "live.log", 0 if i == 0 else -1, b"x" * 100,
                                    source="127.0.0.99")
                times.append((time.monotonic() - t) * 1000)
                time.sleep(1.1)
            return statistics.median(times), max(times), ok

        # -1 with size == len rewrites the whole file each time: no growth.
        fresh, _, fresh_ok = median_ms("freshsys")
        flooded, worst, flooded_ok = median_ms("planted")
        passed &= common.report(
            "disk-flooded-directory-cost",
            flooded <= 3 * fresh + 5 and fresh_ok == flooded_ok == UPLOADS_TIMED,
            f"median upload {flooded:.1f} ms to a system of 20,000 files vs {fresh:.1f} ms fresh "
            f"(max {worst:.0f} ms, the first scan; {flooded_ok}/{UPLOADS_TIMED} and {fresh_ok}/{UPLOADS_TIMED} "
            f"True; was 63 vs 7.8 ms)")
    finally:
        r.stop()
    lines = r.stderr_text().count("\n")
    passed &= common.report(
        "disk-log-lines", lines <= 40 * 45,
        f"{lines} log lines for 20,000 files from 40 addresses (was 20,034; at most 20 session lines "
        f"per client a minute, then one summary)")
    return passed


def free_space_floor(binary, work):
    """--min-free-space above what the disk has: uploads refused with a
    fault naming it, counted in /metrics, nothing stored."""
    view_args, view_port_file = with_view(work, "floor")
    r = common.Receiver(binary, work, "floor", ["--min-free-space", "1000T", *view_args])
    try:
        status, body = common.call(r.port, common.upload_body("web01", "a.log", 0, b"hello"))
        fault = common.fault_text(body) or ""
        counted = metric(read_port(view_port_file), "free_space")
        stored = stored_bytes(r.dir)
    finally:
        r.stop()
    return common.report(
        "disk-free-space-floor", "--min-free-space" in fault and counted == 1 and stored == 0,
        f"upload under a 1000T floor: {'fault naming --min-free-space' if fault else 'no fault'}, "
        f"/metrics free_space {counted}, {stored} bytes stored")


def main():
    args = common.parse_args(__doc__)
    os.makedirs(args.work, exist_ok=True)
    results = [total_budget(args.receiver, args.work), empty_files_and_cost(args.receiver, args.work),
               free_space_floor(args.receiver, args.work)]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
