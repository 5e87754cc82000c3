#!/usr/bin/env python3
"""A DNS responder for a test's own network namespace: answers A queries for
the names given, NODATA for their other record types, NXDOMAIN for anything
else, and logs every query. The guest's resolv.conf points at qemu's 10.0.2.2,
which user-mode networking hands to this namespace's 127.0.0.1.

    dns.py --listen 127.0.0.1:53 --log FILE NAME=ADDRESS...
"""
import argparse
import socket
import struct


def parse_question(msg):
    """(name, qtype, end offset of the question) of a query."""
    labels, i = [], 12
    while msg[i]:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, _qclass = struct.unpack(">HH", msg[i + 1:i + 5])
    return ".".join(labels).lower().rstrip("."), qtype, i + 5


def answer(msg, names):
    qid, flags = struct.unpack(">HH", msg[:4])
    name, qtype, end = parse_question(msg)
    rd = flags & 0x0100
    question = msg[12:end]
    if name not in names:
        rcode, answers = 3, b""  # NXDOMAIN
    elif qtype == 1:
        rcode = 0
        # A pointer to the question's name, type A, class IN, TTL 60, 4 bytes.
        answers = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(names[name])
    else:
        rcode, answers = 0, b""  # the name exists, but has no such record
    count = 1 if answers else 0
    header = struct.pack(">HHHHHH", qid, 0x8000 | 0x0400 | rd | rcode, 1, count, 0, 0)
    return header + question + answers, name, qtype, rcode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:53")
    ap.add_argument("--log", required=True)
    ap.add_argument("names", nargs="+", help="NAME=ADDRESS")
    args = ap.parse_args()
    names = dict(n.lower().split("=", 1) for n in args.names)
    host, port = args.listen.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    with open(args.log, "a", buffering=1) as log:
        log.write(f"listening on {args.listen}\n")
        while True:
            msg, peer = sock.recvfrom(512)
            try:
                reply, name, qtype, rcode = answer(msg, names)
            except (IndexError, struct.error):
                log.write(f"malformed query from {peer}\n")
                continue
            sock.sendto(reply, peer)
            log.write(f"query {name} type {qtype} rcode {rcode}\n")


if __name__ == "__main__":
    main()
