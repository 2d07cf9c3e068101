"""A target that records which process imported it (the --preload tests).

At import time it appends ``{"event": "import", "pid": os.getpid()}`` to the
file named by $PREFORK_TEST_IMPORTS.  With --preload that is the master, once;
without, every worker.  ``app`` is a WSGI app and ``Handler`` a socketserver
handler class, both answering with the PID of the worker that served and the
PID that imported this module; ``asgi_app`` is the ASGI twin of ``app``.
"""

import json
import os
import socketserver

IMPORTS_ENV = "PREFORK_TEST_IMPORTS"
IMPORTED_BY = os.getpid()


def _record():
    path = os.environ.get(IMPORTS_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps({"event": "import", "pid": IMPORTED_BY}) + "\n").encode())
    finally:
        os.close(fd)


_record()


def read(path):
    """The PIDs recorded in ``path``, in order."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        return []
    return [json.loads(line)["pid"] for line in text.splitlines() if line.strip()]


def app(environ, start_response):
    body = json.dumps({"served_by": os.getpid(), "imported_by": IMPORTED_BY}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    """The ASGI twin of ``app`` (no lifespan: 'auto' skips it)."""
    assert scope["type"] == "http", scope["type"]
    body = json.dumps({"served_by": os.getpid(), "imported_by": IMPORTED_BY}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class Handler(socketserver.StreamRequestHandler):
    """One line in, 'SERVED_BY IMPORTED_BY\\n' out."""

    def handle(self):
        self.rfile.readline()
        self.wfile.write(f"{os.getpid()} {IMPORTED_BY}\n".encode())
