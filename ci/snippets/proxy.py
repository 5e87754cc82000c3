"""Stands in for the Cobbler server's Apache in the snippet tests.

usage: python3 proxy.py --www DIR --upstream PORT --port-file FILE

One host:port, as the snippets expect ($server:$http_port): GET /cobbler/...
is served from DIR (DIR/cobbler/misc/anamon.x86_64, as `make install` lays
it out under DESTDIR/var/www), POST /cobbler_api is forwarded to the peer
(ci/peer/serve) on 127.0.0.1:PORT, as Apache proxies it to cobblerd.
Binds to 127.0.0.1 only; picks a free port and writes it to --port-file.
"""
import argparse
import http.client
import http.server
import os
import posixpath
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--www", required=True)
    p.add_argument("--upstream", type=int, required=True)
    p.add_argument("--port-file", required=True)
    args = p.parse_args()
    www = os.path.abspath(args.www)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):
            sys.stderr.write("proxy: " + (fmt % a) + "\n")

        def do_GET(self):
            # Tests read this line to see which program downloaded.
            sys.stdout.write("GET %s UA=%s\n" % (self.path, self.headers.get("User-Agent", "")))
            sys.stdout.flush()
            path = posixpath.normpath(self.path.split("?", 1)[0])
            local = os.path.join(www, path.lstrip("/"))
            if not path.startswith("/cobbler/") or not os.path.isfile(local):
                self.send_error(404)
                return
            with open(local, "rb") as f:
                data = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if self.path != "/cobbler_api":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            conn = http.client.HTTPConnection("127.0.0.1", args.upstream, timeout=30)
            try:
                conn.request("POST", "/cobbler_api", body,
                             {"Content-Type": self.headers.get("Content-Type", "text/xml")})
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except OSError as e:
                self.send_error(502, str(e))
                return
            finally:
                conn.close()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
