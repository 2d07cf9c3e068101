"""Apps that say who the client was, for tests/reliability/test_hostile_edge.py.

Each of the three kinds answers with what it was told of the client, and
records a "call" line in $PREFORK_TEST_CALLS (see wsgiapps.record), so a
test proves a refused connection never reached the app:

- ``wsgi``: JSON {"remote_addr", "remote_port", "scheme"} from the environ;
- ``asgi``: the same from the scope (``client``, ``scheme``);
- ``AddressHandler``: a handler class answering each line with
  ``ADDRESS PORT`` of its ``client_address``.
"""

import json
import socketserver

from wsgiapps import record


def wsgi(environ, start_response):
    seen = {"remote_addr": environ.get("REMOTE_ADDR"), "remote_port": environ.get("REMOTE_PORT"),
            "scheme": environ.get("wsgi.url_scheme")}
    record("call", **seen)
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    while (await receive()).get("more_body"):
        pass
    client = scope.get("client") or (None, None)
    seen = {"remote_addr": client[0], "remote_port": None if client[1] is None else str(client[1]),
            "scheme": scope.get("scheme")}
    record("call", **seen)
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class AddressHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            host, port = self.client_address[:2]
            record("call", remote_addr=host, remote_port=str(port), line=line.decode("latin-1"))
            self.wfile.write(f"{host} {port}\n".encode())
