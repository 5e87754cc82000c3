#!/usr/bin/env python3
"""The real Cobbler XML-RPC server, for anamon's tests.

Runs Cobbler's own server classes (CobblerXMLRPCServer, ProxiedXMLRPCInterface,
CobblerXMLRPCInterface from the installed release's cobbler/remote.py), wired
the way cobblerd wires them, on 127.0.0.1 only. Only the inventory and settings
that upload_log_data consults are stubbed (a fake `api` object); upload_log_data
and its helpers are Cobbler's code, unmodified.

Start it through ci/peer/serve, which picks the venv for --cobbler VERSION.

Cobbler writes to the hard-coded /var/log/cobbler/anamon/<system>/<file>. To
land those files in --logdir without touching the host's /var/log, the process
re-executes itself inside a private mount namespace (`unshare -m`), puts a
tmpfs over /var/log/cobbler (or /var/log when that does not exist) and
bind-mounts --logdir onto /var/log/cobbler/anamon. Needs root.
"""

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time
import xmlrpc.client

NS_ENV = "ANAMON_PEER_PARENT_MNTNS"  # set on re-exec: the parent's mount namespace

MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096


def parse_args():
    p = argparse.ArgumentParser(prog="ci/peer/serve", description=__doc__.split("\n")[0])
    p.add_argument("--cobbler", required=True, help="Cobbler release the venv must hold, e.g. 4.0.0b7")
    p.add_argument("--logdir", required=True, help="host directory that receives <system>/<file>")
    p.add_argument("--system", required=True, help="the one system name the inventory knows")
    p.add_argument("--profile", action="append", default=[],
                   help="a profile name the inventory knows (repeatable; default none)")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    p.add_argument("--port-file", help="write the port here (atomically) once listening")
    p.add_argument("--call-log", help="append one JSON line per XML-RPC call")
    p.add_argument("--anamon-enabled", default="yes", choices=["yes", "no"],
                   help="Cobbler setting anamon_enabled (default yes)")
    p.add_argument("--verbose", action="store_true", help="log Cobbler's INFO messages to stderr")
    return p.parse_args()


# --------------------------------------------------------------------------
# Mount namespace


def reexec_in_private_mount_namespace():
    """Re-run this same command line under `unshare -m --propagation private`.

    unshare execs (no fork), so the PID that ci/peer/serve's caller knows stays
    the PID of the server and receives its SIGTERM directly.
    """
    env = dict(os.environ)
    env[NS_ENV] = os.readlink("/proc/self/ns/mnt")
    argv = ["unshare", "-m", "--propagation", "private", "--",
            sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
    try:
        os.execvpe("unshare", argv, env)
    except OSError as e:
        sys.exit(f"peer: cannot exec unshare: {e}")


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def redirect_anamon_dir(logdir_fd):
    """Make /var/log/cobbler/anamon (this namespace only) be the --logdir directory."""
    parent_ns = os.environ.get(NS_ENV)
    if not parent_ns or parent_ns == os.readlink("/proc/self/ns/mnt"):
        # Never mount anything in the caller's namespace.
        sys.exit("peer: not in a private mount namespace; refusing to mount")
    # A tmpfs hides whatever the host has there, and lets us create the
    # directories Cobbler expects without creating anything on the host.
    top = "/var/log/cobbler" if os.path.isdir("/var/log/cobbler") else "/var/log"
    mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    os.makedirs("/var/log/cobbler/anamon", exist_ok=True)
    # Bind through the already-open fd: works even if --logdir lies under the
    # path we just covered with the tmpfs.
    mount(f"/proc/self/fd/{logdir_fd}", "/var/log/cobbler/anamon", None, MS_BIND)
    a, b = os.stat("/var/log/cobbler/anamon"), os.fstat(logdir_fd)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        sys.exit("peer: bind mount of --logdir did not take effect")


# --------------------------------------------------------------------------
# Stubs: only the inventory/settings the XML-RPC interface consults.


class StubSettings:
    def __init__(self, anamon_enabled):
        # The only setting upload_log_data reads.
        self.anamon_enabled = anamon_enabled
        # Read (never used for uploads) by the constructors that Cobbler 3.x's
        # CobblerXMLRPCInterface.__init__ runs (TFTPGen, AutoInstallationManager,
        # Templar). Values are Cobbler's production defaults.
        self.tftpboot_location = "/srv/tftpboot"
        self.autoinstall_snippets_dir = "/var/lib/cobbler/snippets"
        self.autoinstall_templates_dir = "/var/lib/cobbler/templates"


class StubItem:
    """A system or profile: a name, and the dict Cobbler's get_item() sends
    (`to_dict`), so that the real get_system/get_profile answer for it."""

    def __init__(self, name):
        self.name = name

    def to_dict(self, resolved=False):
        return {"name": self.name, "comment": "", "owners": ["admin"]}


StubSystem = StubItem


class StubCollection:
    """A collection holding at most one item; `find(name=...)` as Cobbler's."""

    def __init__(self, items=()):
        self._items = {i.name: i for i in items}

    def find(self, name=None, **_kw):
        return self._items.get(name)

    def get(self, name):
        """Collection.get(name), which api.get_item() calls."""
        return self._items.get(name)


class StubAPI:
    """Stands in for cobbler.api.CobblerAPI: one known system, nothing else."""

    def __init__(self, release, system_name, anamon_enabled, logger, profile_names=()):
        self._release = release
        self._settings = StubSettings(anamon_enabled)
        self._system = StubSystem(system_name)
        self._systems = StubCollection([self._system])
        self._profiles = StubCollection([StubItem(n) for n in profile_names])
        self._empty = StubCollection()
        self.logger = logger  # ProxiedXMLRPCInterface (and 3.1.2's interface) take api.logger
        self._mtime = time.time()
        # Cobbler 3.1.2's interface passes api._collection_mgr to TFTPGen and
        # AutoInstallationManager, which read .api and the collections from it.
        self._collection_mgr = self
        self.api = self

    def settings(self):
        return self._settings

    # Cobbler >= 3.2: find_system / find_profile (profile never matches).
    def find_system(self, name=None, **_kw):
        return self._systems.find(name=name)

    def find_profile(self, name=None, **_kw):
        return self._profiles.find(name=name)

    # The read-only get_system/get_profile of the XML-RPC interface (which
    # need no login) go through api.get_item(what, name) and
    # _collection_mgr.get_items(what) (this object).
    def get_items(self, what):
        return {"system": self._systems, "profile": self._profiles}.get(what, self._empty)

    def get_item(self, what, name):
        return self.get_items(what).get(name)

    # Cobbler 3.1.2: api.systems().find(name=...); the others are touched by
    # constructors only.
    def systems(self):
        return self._systems

    def distros(self):
        return self._empty

    def profiles(self):
        return self._profiles

    repos = images = menus = distros

    def last_modified_time(self):
        return self._mtime

    def version(self, extended=False):
        """What this release's CobblerAPI.version() returns (same code, same data)."""
        import cobbler
        if self._release.startswith("3."):
            # 3.x reads /etc/cobbler/version, which the wheel ships (it lands in
            # site-packages/etc/cobbler/version); the host has no /etc/cobbler.
            from configparser import ConfigParser
            site = os.path.dirname(os.path.dirname(cobbler.__file__))
            config = ConfigParser()
            config.read(os.path.join(site, "etc", "cobbler", "version"))
            data = {k: config.get("cobbler", k) for k in ("gitdate", "gitstamp", "builddate", "version")}
            data["version_tuple"] = [int(n) for n in data["version"].split(".")]
            if extended:
                return data
            e = data["version_tuple"]
            if self._release == "3.1.2":  # 3.1.2 returns the raw float
                return int(e[0]) + 0.1 * int(e[1]) + 0.001 * int(e[2])
            return float(format(int(e[0]) + 0.1 * int(e[1]) + 0.001 * int(e[2]), ".3f"))
        # 4.x: from cobbler._version, as cobbler/api.py does.
        import re
        from cobbler import _version as v
        base = v.__version__.split("+")[0]
        m = re.match(r"^(\d+)\.(\d+)\.(\d+)", base)
        numeric = [int(m.group(i)) for i in (1, 2, 3)] if m else [0, 0, 0]
        data = {"version": base, "version_tuple": numeric, "gitstamp": v.__gitstamp__,
                "gitdate": v.__gitdate__, "builddate": v.__builddate__}
        if not extended:
            return float(format(numeric[0] + 0.1 * numeric[1] + 0.001 * numeric[2], ".3f"))
        return data


# --------------------------------------------------------------------------
# Call log and the dispatch wrapper


class CallLog:
    def __init__(self, path):
        # Opened before the mounts, so a path under /var/log still works.
        self._f = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def write(self, rec):
        if self._f is None:
            return
        line = json.dumps(rec, default=repr, sort_keys=False)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


class Recorder:
    """Registered with the server in place of cobblerd's ProxiedXMLRPCInterface
    instance, which it wraps: it logs each call and forwards it unchanged (apart
    from the old-contract bytes hand-over below)."""

    def __init__(self, inner, call_log, old_string_contract):
        self.inner = inner
        self.call_log = call_log
        self.old_string_contract = old_string_contract
        self.tls = threading.local()

    def _dispatch(self, method, params):
        self.tls.dispatched = True
        rec = {"t": time.time(), "method": method}
        if method == "upload_log_data" and len(params) >= 5:
            sys_name, file, size, offset, data = params[:5]
            if isinstance(data, xmlrpc.client.Binary):
                data_len = len(data.data)
            elif isinstance(data, (str, bytes)):
                data_len = len(data)
            else:
                data_len = None
            rec.update(sys_name=sys_name, file=file, size=size, offset=offset,
                       data_len=data_len, data_type=type(data).__name__)
            if self.old_string_contract and isinstance(data, str):
                # Python 2's xmlrpclib returned an ASCII <string> as a byte
                # string (str in py2); Cobbler <= 3.2.1's base64.decodestring
                # was written for that. Do what py2 did, for `data` only (the
                # names stay text, as the py3 code expects). Non-ASCII text
                # stays str, as py2 would have handed over unicode.
                try:
                    data = data.encode("ascii")
                except UnicodeEncodeError:
                    pass
                params = tuple(params[:4]) + (data,) + tuple(params[5:])
        try:
            result = self.inner._dispatch(method, params)
        except Exception as e:
            # Same text SimpleXMLRPCDispatcher puts into the fault.
            rec["fault"] = "%s:%s" % (type(e), e)
            self.call_log.write(rec)
            raise
        rec["result"] = result
        self.call_log.write(rec)
        return result


def install_unparsed_request_logging(server, recorder):
    """Requests that never reach _dispatch (malformed XML, wrong method call
    syntax) still produce a fault; log them too, so tests can count every POST."""
    orig = server._marshaled_dispatch

    def marshaled_dispatch(data, dispatch_method=None, path=None):
        recorder.tls.dispatched = False
        t = time.time()
        response = orig(data, dispatch_method, path)
        if not recorder.tls.dispatched:
            fault = "unknown"
            try:
                xmlrpc.client.loads(response)
            except xmlrpc.client.Fault as f:
                fault = f.faultString
            except Exception as e:  # pragma: no cover
                fault = repr(e)
            recorder.call_log.write({"t": t, "method": None, "fault": fault})
        return response

    server._marshaled_dispatch = marshaled_dispatch


# --------------------------------------------------------------------------


def write_port_file(dir_fd, name, port):
    tmp = f".{name}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, f"{port}\n".encode())
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def main():
    args = parse_args()
    if os.environ.get(NS_ENV) is None:
        if os.geteuid() != 0:
            sys.exit("peer: must run as root (mount namespace + bind mount)")
        os.makedirs(args.logdir, exist_ok=True)
        reexec_in_private_mount_namespace()

    # Everything the host must see is opened before the mounts change /var/log.
    logdir_fd = os.open(args.logdir, os.O_RDONLY | os.O_DIRECTORY)
    call_log = CallLog(args.call_log)
    port_dir_fd = port_name = None
    if args.port_file:
        port_dir_fd = os.open(os.path.dirname(os.path.abspath(args.port_file)), os.O_RDONLY | os.O_DIRECTORY)
        port_name = os.path.basename(args.port_file)
    redirect_anamon_dir(logdir_fd)

    import logging
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="peer[%(levelname)s] %(message)s")

    # Import Cobbler only now: 3.1.2's clogger creates /var/log/cobbler/cobbler.log
    # at import time, which now lands in the private tmpfs.
    import importlib.metadata
    installed = importlib.metadata.version("cobbler")
    if installed != args.cobbler:
        sys.exit(f"peer: this venv holds cobbler {installed}, not {args.cobbler}")
    import base64
    import contextlib
    import inspect
    # Cobbler 3.1.2 prints a notice at import; keep stdout for our ready line.
    with contextlib.redirect_stdout(sys.stderr):
        from cobbler import remote

    # Cobbler <= 3.2.1 ("old string contract": data is base64 text in <string>)
    # calls base64.decodestring, which Python 3.9 removed (it was an alias of
    # decodebytes since 3.1). Restore the alias; together with the bytes
    # hand-over in Recorder this is exactly what Python 2 provided.
    old_string_contract = "base64.decodestring" in inspect.getsource(remote.CobblerXMLRPCInterface)
    if old_string_contract and not hasattr(base64, "decodestring"):
        base64.decodestring = base64.decodebytes

    api = StubAPI(installed, args.system, args.anamon_enabled == "yes", logging.getLogger(),
                  args.profile)

    # As cobblerd's do_xmlrpc_rw: the proxied interface, a CobblerXMLRPCServer
    # on 127.0.0.1, no request logging.
    xinterface = remote.ProxiedXMLRPCInterface(api, remote.CobblerXMLRPCInterface)
    server = remote.CobblerXMLRPCServer(("127.0.0.1", args.port))
    server.logRequests = False

    # cobblerd's handler answers only "/" and "/RPC2"; in production Apache
    # proxies http://SERVER/cobbler_api to it. We have no Apache, so the
    # handler also accepts "/cobbler_api" (the path anamon clients use).
    base_handler = server.RequestHandlerClass

    class Handler(base_handler):
        rpc_paths = tuple(base_handler.rpc_paths) + ("/cobbler_api",)

        def report_404(self):
            call_log.write({"t": time.time(), "method": None, "http_status": 404, "path": self.path})
            super().report_404()

    assert Handler.protocol_version == "HTTP/1.0"  # as Cobbler: one connection per call
    server.RequestHandlerClass = Handler
    # Only affects shutdown: don't wait for a client that holds a connection.
    server.daemon_threads = True
    server.block_on_close = False

    recorder = Recorder(xinterface, call_log, old_string_contract)
    server.register_instance(recorder)
    install_unparsed_request_logging(server, recorder)

    def on_signal(_sig, _frame):
        # Exit at once. Raising into serve_forever() hung now and then (seen
        # with 3.3.10 on a loaded machine: no exit within 20 s), and a test
        # peer has nothing to clean up: the call log is flushed per record,
        # and the mounts live in this process's own namespace.
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    port = server.server_address[1]
    if port_name is not None:
        write_port_file(port_dir_fd, port_name, port)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
