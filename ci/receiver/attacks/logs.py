#!/usr/bin/env python3
"""Log forging against anamon-receiver (issue 22, hole 3): no byte a client
chose may reach a log line unescaped. A lone LF or an ESC in a request line
or path, an XML element name or a method name with LF, ESC, BEL and U+202E:
every line the receiver writes must stay one line of printable ASCII that
starts as the receiver's own lines do, and faults must carry no raw control
byte either.

    python3 ci/receiver/attacks/logs.py --receiver BIN --work DIR

Before the fix: the LF and ESC were written raw (a forged line that looks
like a genuine upload line, terminal escapes).
"""

import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FORGED = "2026-12-06 00:00:00 anamon-receiver[1]: web01/a.log from 10.0.0.1: 5 bytes in 1 uploads"
# Lines of the receiver's own (not under journald): a timestamp and its name.
OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d anamon-receiver\[\d+\]: [ -~]*$")


def raw_request(port, source, data):
    """Sends bytes as they are; returns what came back (up to 64 KiB)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while len(out) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out
    except OSError:
        return b""
    finally:
        s.close()


def main():
    args = common.parse_args(__doc__)
    os.makedirs(args.work, exist_ok=True)
    r = common.Receiver(args.receiver, args.work, "logs")
    hostile = "\n" + FORGED + "\x1b[2J\x07\u202e"
    http_answers, answers = [], []
    try:
        # Each from its own address: a client's noise is logged once a minute.
        cases = [
            # A lone LF in the request line, and ESC in the path.
            b"POST /RPC2\n" + FORGED.encode() + b"\x1b[31m HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            # ESC, BEL and U+202E in a path that is no endpoint.
            b"POST /x\x1b]0;owned\x07\xe2\x80\xae HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"GET /cobbler_api\x1b[2J HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        for i, data in enumerate(cases):
            http_answers.append(raw_request(r.port, f"127.0.1.{i + 1}", data))
        # An element name and a method name the client chose.
        bodies = [
            ("<?xml version='1.0'?><methodCall><methodName>upload_log_data</methodName><params>"
             "<param><value><ev\u202eil" + "\x1b" + ">x</ev\u202eil></value></param></params></methodCall>"),
            "<?xml version='1.0'?><methodCall><methodName>upload" + hostile + "</methodName><params/></methodCall>",
            "<?xml version='1.0'?><methodCall\u202e><methodName>x</methodName></methodCall\u202e>",
        ]
        for i, body in enumerate(bodies):
            status, answer = common.call(r.port, body.encode(), source=f"127.0.2.{i + 1}")
            answers.append(answer)
    finally:
        r.stop()
    lines = r.stderr_text().split("\n")[:-1]
    bad_lines = [line for line in lines if not OWN_LINE.match(line)]
    def raw(found):
        return sum(a.count(b"\x1b") + a.count(b"\x07") + a.count("\u202e".encode()) for a in found)

    passed = common.report(
        "logs-forged-lines", not bad_lines and len(lines) > 0,
        f"{len(cases) + len(bodies)} hostile requests: {len(lines)} log lines, {len(bad_lines)} not the "
        f"receiver's own one-line form" + (f" (first: {bad_lines[0][:80]!r})" if bad_lines else ""))
    passed &= common.report(
        "logs-fault-strings", raw(answers) == 0,
        f"{raw(answers)} raw ESC/BEL/U+202E in the {len(answers)} XML-RPC answers")
    # The HTTP layer's error pages (a 404 quoting the path) reach the agent's
    # log too, in its one-line summary of an error page.
    passed &= common.report(
        "logs-http-error-bodies", raw(http_answers) == 0,
        f"{raw(http_answers)} raw ESC/BEL/U+202E in the {len(http_answers)} HTTP error answers")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
