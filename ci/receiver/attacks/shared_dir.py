#!/usr/bin/env python3
"""Two receivers on one log directory (issue 22, hole 4): a call that is
refused must never remove a file it did not create. Each round, one
receiver stores the first chunk of a new file while the other refuses a call
for the same new name (over --max-file-size); an acknowledged chunk must be
on disk afterwards.

    python3 ci/receiver/attacks/shared_dir.py --receiver BIN --work DIR

Before the fix the refused call created the file, then unlinked it by name:
213 of 1,500 rounds lost an acknowledged chunk. ci/receiver/haproxy runs the
same rounds through HAProxy (race_rounds below).
"""

import concurrent.futures
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# Over the receivers' --max-file-size 1K: always refused.
REFUSED = os.urandom(2048)


def race_rounds(port_store, port_refuse, logdir, rounds, tag="race"):
    """`rounds` rounds of a stored chunk (to `port_store`) racing a refused
    call for the same new file (to `port_refuse`, which may be the same
    HAProxy front). Returns (acknowledged chunks, of them lost)."""
    acked = lost = 0
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(rounds):
            name = f"{tag}{i}.log"
            chunk = f"chunk {i}\n".encode()
            stored = pool.submit(common.upload, port_store, "shared01", name, 0, chunk, "127.0.4.1")
            refused = pool.submit(common.upload, port_refuse, "shared01", name, 0, REFUSED, "127.0.4.2")
            refused.result()
            if stored.result():
                acked += 1
                try:
                    on_disk = open(os.path.join(logdir, "shared01", name), "rb").read()
                except FileNotFoundError:
                    on_disk = None
                lost += on_disk != chunk
    return acked, lost


def main():
    args = common.parse_args(__doc__)
    os.makedirs(args.work, exist_ok=True)
    flags = ["--max-file-size", "1K", "--max-files-per-system", "100000", "--rate", "100000", "--burst", "100000"]
    a = common.Receiver(args.receiver, args.work, "shared-a", flags)
    b = None
    try:
        # B's --dir is a link to A's directory: one log directory, two receivers.
        b_dir = os.path.join(args.work, "shared-b-logs")
        if not os.path.islink(b_dir):
            os.symlink(a.dir, b_dir)
        b = common.Receiver(args.receiver, args.work, "shared-b", flags)
        acked, lost = race_rounds(a.port, b.port, a.dir, 1500)
    finally:
        a.stop()
        if b is not None:
            b.stop()
    ok = common.report(
        "shared-dir-refused-call", lost == 0 and acked == 1500,
        f"{lost} of {acked} acknowledged chunks lost in 1,500 rounds (was 213 of 1,500)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
