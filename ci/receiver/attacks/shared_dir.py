#!/usr/bin/env python3
"""Two receivers on one log directory (issue 22, hole 4): a call that is
refused must never remove a file it did not create. Each round, one
receiver stores the first chunk of a new file while the other refuses a call
for the same new name (offset -2, which means nothing); an acknowledged
chunk must be on disk afterwards.

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

# Rounds per system directory: under the default --max-files-per-system.
ROUNDS_PER_SYSTEM = 500


def race_rounds(port_store, port_refuse, logdir, rounds, tag="race"):
    """`rounds` rounds of a stored chunk (to `port_store`) racing a refused
    call for the same new file (to `port_refuse`, which may be the same
    HAProxy front). Returns (acknowledged chunks, of them lost)."""
    acked = lost = 0
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(rounds):
            system, name = f"shared{i // ROUNDS_PER_SYSTEM}", f"{tag}{i}.log"
            chunk = f"chunk {i}\n".encode()
            stored = pool.submit(common.upload, port_store, system, name, 0, chunk, "127.0.4.1")
            refused = pool.submit(common.upload, port_refuse, system, name, -2, chunk, "127.0.4.2")
            refused.result()
            if stored.result():
                acked += 1
                try:
                    on_disk = open(os.path.join(logdir, system, name), "rb").read()
                except FileNotFoundError:
                    on_disk = None
                lost += on_disk != chunk
    return acked, lost


def main():
    args = common.parse_args(__doc__)
    os.makedirs(args.work, exist_ok=True)
    flags = ["--rate", "100000", "--burst", "100000"]
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
