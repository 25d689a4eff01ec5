"""A testbed backend (xlb-testkit/src/testbed/resources.rs starts one per backend namespace).

HTTP on [::]:PORT (IPv4 too); an HTTP/1.0 request gets its answer and the connection closes,
an HTTP/1.1 request with "Connection: keep-alive" keeps the connection open for the next one
(the long-lived connections of xlb_testkit::testbed::sessions):
  GET /            -> "<name>\n"
  GET /healthz     -> "ok\n"
  GET /stream?secs=S -> "<name> <i>\n" every 100 ms for S seconds (at most 60), then "done\n"
UDP on every --udp-bind address (the VIPs on lo and the backend's own addresses, so that a
reply leaves from the address the datagram was sent to): any datagram -> "<name>\n".

Standard library only. Logs nothing per request; exits on SIGTERM.
"""

import argparse
import http.server
import selectors
import signal
import socket
import sys
import threading
import time
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--udp-port", type=int, default=9000)
    p.add_argument("--udp-bind", action="append", default=[])
    a = p.parse_args()
    name = a.name.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        # 1.1 enables keep-alive for 1.1 requests; 1.0 requests still close after the answer.
        protocol_version = "HTTP/1.1"
        server_version = "xlb-testbed"

        def log_message(self, *args):
            pass

        def reply(self, body):
            # Keep-alive only when asked for: every other client (the agent's health checks
            # too) sees the connection close after the answer, as with HTTP/1.0.
            keep = self.headers.get("Connection", "").lower() == "keep-alive"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            if not keep:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path == "/healthz":
                self.reply(b"ok\n")
            elif url.path == "/stream":
                q = urllib.parse.parse_qs(url.query)
                secs = min(float(q.get("secs", ["3"])[0]), 60.0)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                end = time.monotonic() + secs
                i = 0
                while time.monotonic() < end:
                    self.wfile.write(name + b" %d\n" % i)
                    self.wfile.flush()
                    i += 1
                    time.sleep(0.1)
                self.wfile.write(b"done\n")
            else:
                self.reply(name + b"\n")

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6
        request_queue_size = 1024
        daemon_threads = True

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    httpd = Server(("::", a.http_port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    sel = selectors.DefaultSelector()
    for addr in a.udp_bind:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((addr, a.udp_port))
        sel.register(s, selectors.EVENT_READ)

    def udp_loop():
        while True:
            for key, _ in sel.select():
                try:
                    _, peer = key.fileobj.recvfrom(65535)
                    key.fileobj.sendto(name + b"\n", peer)
                except OSError:
                    pass

    threading.Thread(target=udp_loop, daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(3600):
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
