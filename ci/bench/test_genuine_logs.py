#!/usr/bin/env python3
"""Tests of ci/bench/run's --genuine-logs schedule (no peer, no root): log
files written here, in the genuine formats, replayed to a schedule.

  python3 ci/bench/test_genuine_logs.py
"""
import importlib.machinery
import importlib.util
import os
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(HERE, "run"))
bench = importlib.util.module_from_spec(importlib.util.spec_from_loader("bench_run", _loader))
_loader.exec_module(bench)


def hms(h, m, s, ms=0):
    return h * 3600 + m * 60 + s + ms / 1000


class LineTime(unittest.TestCase):
    def test_formats(self):
        cases = [
            (b"05:00:06,773 INF core.configuration.product: Loading\n", hms(5, 0, 6, 773)),
            (b"04:59:15,874 NOTICE kernel:Linux version 4.18.0\n", hms(4, 59, 15, 874)),
            (b"2020-10-31T05:00:24Z INFO Librepo version: 1.12.0\n", hms(5, 0, 24)),
            (b"2023-02-15T19:32:00+0000 INFO === Started libdnf-0.67.0 ===\n", hms(19, 32, 0)),
            (b"Feb 15 19:31:25 localhost kernel: Linux version 5.14.0\n", hms(19, 31, 25)),
            (b"INFO Oct-31 05:00:38 === Started libdnf-0.48.0 ===\n", hms(5, 0, 38)),
        ]
        for line, want in cases:
            self.assertAlmostEqual(bench.line_time(line), want, places=6, msg=line)

    def test_untimed(self):
        for line in (b"DEBUG:blivet:registered device format class BIOSBoot\n", b"passwd: Success\n",
                     b"dbus-daemon[1696]: Activating service\n", b"\n"):
            self.assertIsNone(bench.line_time(line), line)


class Schedule(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="genuine-logs-test-")
        self.files = {
            # A ks-script's start, two lines of one instant (one write), an
            # indented continuation, a clock step back by an hour, then 2 s later.
            "program.log": b"23:59:56,000 INF program: Running... /bin/sh /tmp/ks-script-abc\n"
                           b"23:59:58,000 INF program: Running... passwd\n"
                           b"23:59:58,000 DBG program: Locking password for user root.\n"
                           b"  continued\n"
                           b"23:59:59,500 INF program: passwd: Success\n"
                           b"22:59:59,500 INF program: after the step\n"
                           b"23:00:01,500 INF program: last\n",
            # Crosses midnight (a day back, not a step).
            "syslog": b"23:59:59,000 INFO kernel:boot\n00:00:09,000 INFO kernel:later\n",
            # No times: its lines are program.log's, logged there when it ended.
            "ks-script-abc.log": b"Locking password for user root.\npasswd: Success\n",
            # No times and nothing matches: spread over the install.
            "dbus.log": b"dbus-daemon[1]: one\ndbus-daemon[1]: two\ndbus-daemon[1]: three\n",
            "empty.log": b"",
        }
        for n, d in self.files.items():
            with open(os.path.join(self.dir, n), "wb") as f:
                f.write(d)

    def schedule(self):
        return bench.genuine_log_schedule(self.dir, 2.0, 1.0)

    def test_bytes_and_files(self):
        events, names, how, _ = self.schedule()
        # anaconda.log first (the replay writes its first line there), then every file of the directory.
        self.assertEqual(names, ["anaconda.log"] + sorted(self.files))
        for n, d in self.files.items():
            self.assertEqual(b"".join(e[2] for e in events if e[1] == n), d, n)
        self.assertEqual([e[0] for e in events], sorted(e[0] for e in events))

    def test_times(self):
        events, _, how, install_s = self.schedule()
        # The install runs from program.log's 23:59:56 to syslog's 00:00:09 the next day.
        self.assertEqual(install_s, 13.0)
        per = {}
        for t, n, d in events:
            per.setdefault(n, []).append((round(t, 3), d))
        self.assertEqual(per["program.log"][1][1],
                         b"23:59:58,000 INF program: Running... passwd\n"
                         b"23:59:58,000 DBG program: Locking password for user root.\n  continued\n")
        # 2 s, 1.5 s later, then the hour back removed (it continues at the same instant, so in the
        # same write), then 2 s later; at 2x after the 1 s lead-in.
        self.assertEqual([t for t, _ in per["program.log"]], [1.0, 2.0, 2.75, 3.75])
        self.assertEqual(per["program.log"][2][1], b"23:59:59,500 INF program: passwd: Success\n"
                                                   b"22:59:59,500 INF program: after the step\n")
        self.assertEqual(how["program.log"]["clock_steps_removed"], [{"record": 4, "seconds": 3600.0}])
        # Midnight is no step: syslog's two lines 10 s apart, 5 s at 2x.
        self.assertEqual([t for t, _ in per["syslog"]], [2.5, 7.5])
        self.assertEqual(how["syslog"]["clock_steps_removed"], [])
        # The ks-script log borrows program.log's times of the same text (2 and 3.5 s) and is
        # written at once after the last, as anaconda writes a script's log.
        self.assertEqual(per["ks-script-abc.log"], [(2.75, self.files["ks-script-abc.log"])])
        self.assertTrue(how["ks-script-abc.log"]["how"].startswith("borrowed: 2 of 2"))
        self.assertIn("written at once", how["ks-script-abc.log"]["how"])
        # dbus.log: one write a line, evenly from the install's first to its last time.
        self.assertEqual([t for t, _ in per["dbus.log"]], [1.0, 4.25, 7.5])
        self.assertTrue(how["dbus.log"]["how"].startswith("spread evenly"))
        self.assertNotIn("empty.log", per)

    def test_no_times_at_all(self):
        os.mkdir(os.path.join(self.dir, "untimed"))
        with open(os.path.join(self.dir, "untimed", "dbus.log"), "wb") as f:
            f.write(b"dbus-daemon[1]: one\n")
        with self.assertRaises(SystemExit):
            bench.genuine_log_schedule(os.path.join(self.dir, "untimed"), 5.0, 0.0)


if __name__ == "__main__":
    unittest.main()
