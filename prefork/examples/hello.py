"""Hello world as an http.server handler, keep-alive included.

    prefork serve prefork.examples.hello:HelloHandler -b 127.0.0.1:8000
    curl http://127.0.0.1:8000/
"""

import os
from http.server import BaseHTTPRequestHandler


class HelloHandler(BaseHTTPRequestHandler):
    """Answer every GET with a short text naming the worker that served it."""

    protocol_version = "HTTP/1.1"   # keep-alive, as a production client expects

    def do_GET(self) -> None:
        body = f"Hello, world! (worker {os.getpid()})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
