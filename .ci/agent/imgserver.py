#!/usr/bin/env python3
"""The agent E2E's image server (issue 14): files of one directory over HTTP
on 127.0.0.1.

    imgserver.py DIR PORTFILE

``/NAME`` serves DIR/NAME at full speed; ``/slow/NAME`` serves it at
SLOW_BYTES_PER_SECOND, so a test can kill the agent in the middle of a
write. Each transfer start and end is one line on stdout (``start PATH`` /
``done PATH``). The bound port is written to PORTFILE. Stopped by its PID.
"""

import http.server
import os
import sys
import time

SLOW_BYTES_PER_SECOND = 256 * 1024
CHUNK = 64 * 1024


def main():
    root, portfile = sys.argv[1], sys.argv[2]

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def do_GET(self):
            slow = self.path.startswith("/slow/")
            name = self.path[len("/slow/"):] if slow else self.path[1:]
            path = os.path.join(root, os.path.basename(name))
            if not name or not os.path.isfile(path):
                self.send_error(404)
                return
            size = os.path.getsize(path)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            print(f"start {self.path}", flush=True)
            try:
                with open(path, "rb") as f:
                    while True:
                        data = f.read(CHUNK)
                        if not data:
                            break
                        self.wfile.write(data)
                        if slow:
                            time.sleep(len(data) / SLOW_BYTES_PER_SECOND)
            except (BrokenPipeError, ConnectionResetError):
                print(f"aborted {self.path}", flush=True)
                return
            print(f"done {self.path}", flush=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(portfile + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(portfile + ".tmp", portfile)
    server.serve_forever()


if __name__ == "__main__":
    main()
