"""An ASGI echo app for the conformance replay (tests/integration/test_asgi_conformance.py).

``echo`` is the ASGI twin of wsgiapps.echo: it reads the whole body through
``receive``, records what the scope said (method, path, raw_path,
query_string, http_version, headers as [name, value] strings, body, all
latin-1) and whether ``http.disconnect`` came before the body's end, as one
"call" line in $PREFORK_TEST_CALLS keyed by the client's port, and answers
the same as JSON.  A "start" line, keyed the same, comes first, when the app
is called: a test waits for the "call" line of every "start".

``hello`` serves the load scenarios (tests/reliability/test_asgi_reload_load.py):
"Hello, world!" for any path but ``/slow?s=seconds`` (1.5 by default: a
"slow" line when it starts, the answer after).  Both accept the lifespan.
"""

import asyncio
import json
from urllib.parse import parse_qs

from wsgiapps import record


def _text(data: bytes) -> str:
    return data.decode("latin-1")


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive):
    """(the body, True if ``http.disconnect`` came before its end)."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), True
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), False


async def _answer(send, status, body, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def describe(scope, body: bytes, disconnected: bool) -> dict:
    client = scope.get("client") or (None, None)
    query = parse_qs(_text(scope["query_string"]), keep_blank_values=True)
    return {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": _text(scope["raw_path"]),
        "query_string": _text(scope["query_string"]),
        "http_version": scope["http_version"],
        "root_path": scope.get("root_path", ""),
        "remote_port": None if client[1] is None else str(client[1]),
        "id": query.get("id", [""])[-1],
        "headers": [[_text(name), _text(value)] for name, value in scope["headers"]],
        "body": _text(body),
        "disconnected": disconnected,
    }


async def echo(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    client = scope.get("client") or (None, None)
    # "start" first: the body may end in a disconnect after the client is gone,
    # and the test then waits for the "call" line that follows.
    record("start", remote_port=None if client[1] is None else str(client[1]))
    info = describe(scope, *(await _body(receive)))
    record("call", **info)
    await _answer(send, 200, json.dumps(info).encode(), b"application/json")


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"].startswith("/slow"):
        query = parse_qs(_text(scope["query_string"]))
        record("slow", id=query.get("id", [""])[-1])
        await asyncio.sleep(float(query.get("s", ["1.5"])[-1]))
        await _answer(send, 200, b"slow done\n")
        return
    await _answer(send, 200, b"Hello, world!\n")
