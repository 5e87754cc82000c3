"""Shared pieces of the attacks in ci/receiver/attacks/ (run by ci/receiver/attack).

Each attack module is a script of its own:
    python3 ci/receiver/attacks/NAME.py --receiver BIN --work DIR
It prints one line per attack,
    attack NAME: PASS|FAIL <figure, before/after or the measured value>
and exits 1 if any of its attacks failed. Everything listens on loopback only
(127.0.0.0/8: 127.0.0.2, 127.0.0.3, ... are distinct client addresses on Linux
with no set-up). Python 3 standard library only.
"""

import argparse
import base64
import http.client
import os
import signal
import socket
import subprocess
import time


def parse_args(doc):
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--receiver", required=True, help="the anamon-receiver binary")
    p.add_argument("--work", required=True, help="a scratch directory of this module's own")
    return p.parse_args()


def report(name, passed, figure):
    """Prints the attack's line; returns `passed` so callers can count."""
    print(f"attack {name}: {'PASS' if passed else 'FAIL'} {figure}", flush=True)
    return passed


class Receiver:
    """One anamon-receiver on 127.0.0.1 with a port file; stderr kept in a file."""

    def __init__(self, binary, work, tag, args=()):
        self.dir = os.path.join(work, tag + "-logs")
        os.makedirs(self.dir, exist_ok=True)
        self.port_file = os.path.join(work, tag + ".port")
        self.log = os.path.join(work, tag + ".stderr")
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.cmd = [binary, "--listen", "127.0.0.1:0", "--port-file", self.port_file,
                    "--dir", self.dir, *args]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited {self.proc.returncode}: {open(self.log).read()[-2000:]}")
            try:
                self.port = int(open(self.port_file).read())
                return
            except (OSError, ValueError):
                time.sleep(0.05)
        raise RuntimeError("receiver did not write its port file within 15 s")

    def rss_peak_kib(self):
        """VmHWM of the receiver process (peak resident set), KiB."""
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None

    def cpu_seconds(self):
        """User + system CPU the receiver has used so far."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stderr_text(self):
        return open(self.log, "rb").read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def upload_body(system, file, offset, data, token=None):
    """An upload_log_data call as the agent sends it (Cobbler >= 3.2.2 form)."""
    def s(v):
        return "<value><string>" + v.replace("&", "&amp;").replace("<", "&lt;") + "</string></value>"
    params = [s(system), s(file), f"<value><int>{len(data)}</int></value>",
              f"<value><int>{offset}</int></value>",
              "<value><base64>" + base64.b64encode(data).decode() + "</base64></value>"]
    if token is not None:
        params.append(s(token))
    return ("<?xml version='1.0'?><methodCall><methodName>upload_log_data</methodName><params>"
            + "".join(f"<param>{p}</param>" for p in params) + "</params></methodCall>").encode()


class SourceConnection(http.client.HTTPConnection):
    """An HTTP connection from a chosen loopback source address."""

    def __init__(self, port, source="127.0.0.1", timeout=20):
        super().__init__("127.0.0.1", port, timeout=timeout, source_address=(source, 0))


def call(port, body, source="127.0.0.1", timeout=20, conn=None, path="/cobbler_api"):
    """POSTs an XML-RPC body; returns (HTTP status, response body bytes).
    With `conn`, the request goes on that (kept-alive) connection."""
    own = conn is None
    c = conn or SourceConnection(port, source, timeout)
    try:
        c.request("POST", path, body=body, headers={"Content-Type": "text/xml"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if own:
            c.close()


def upload(port, system, file, offset, data, source="127.0.0.1", timeout=20, token=None, conn=None):
    """One upload; returns True only for an XML-RPC True answer."""
    status, body = call(port, upload_body(system, file, offset, data, token), source, timeout, conn)
    return status == 200 and b"<boolean>1</boolean>" in body


def fault_text(body):
    """The faultString of an XML-RPC fault answer, or None."""
    if b"<fault>" not in body:
        return None
    start = body.find(b"faultString")
    return body[start:].decode("utf-8", "replace")


def silent_connection(port, source="127.0.0.1"):
    """A connected socket that sends nothing (the caller closes it)."""
    s = socket.socket()
    s.bind((source, 0))
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    return s


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def wait_port_file(path, timeout=15):
    """The port in `path` once a server has written it (a receiver writes its
    view's port file around the time of its own)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(open(path).read())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no port in {path} within {timeout} s")
            time.sleep(0.05)
