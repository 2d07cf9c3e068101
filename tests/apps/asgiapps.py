"""ASGI applications used only by the ASGI integration tests.

``raw`` speaks ASGI by hand, every HTTP message type, routed by path;
``fast`` is a FastAPI app (imported lazily: FastAPI is a test dependency).
Apps append JSON lines to $PREFORK_TEST_CALLS as tests/apps/wsgiapps.py's
do (``record``), so a test sees what the app saw after the client is gone
(an ``http.disconnect``, a lifespan shutdown).
"""

import asyncio
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

from wsgiapps import hoard, record

LIFESPAN_ENV = "PREFORK_TEST_LIFESPAN"    # "fail": startup.failed; "raise": an exception
# A file whose content, read at each startup, is that mode: a reload can then fail.
LIFESPAN_FILE_ENV = "PREFORK_TEST_LIFESPAN_FILE"


def _query(scope):
    parsed = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


async def _read_body(receive):
    parts, messages = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), messages, True
        messages += 1
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), messages, False


async def _respond(send, status, body, content_type=b"text/plain", extra=()):
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + list(extra)})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(scope, receive, send):
    mode = os.environ.get(LIFESPAN_ENV, "")
    switch = os.environ.get(LIFESPAN_FILE_ENV, "")
    if switch and os.path.exists(switch):
        with open(switch) as f:
            mode = f.read().strip()
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if mode == "fail":
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            if mode == "raise":
                raise RuntimeError("startup exploded")
            scope["state"]["booted_by"] = os.getpid()
            record("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            record("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def raw(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    path = scope["path"]
    query = _query(scope)
    if path.endswith("/hello"):
        await _respond(send, 200, b"Hello, world!")
    elif "/echo" in path:
        body, messages, gone = await _read_body(receive)
        seen = {key: scope[key] for key in ("type", "http_version", "method", "scheme", "path",
                                             "root_path", "client", "server", "asgi")}
        seen.update(raw_path=scope["raw_path"].decode("latin-1"),
                    query_string=scope["query_string"].decode("latin-1"),
                    headers=[[n.decode("latin-1"), v.decode("latin-1")]
                             for n, v in scope["headers"]],
                    state=scope.get("state"), extensions=sorted(scope.get("extensions", {})),
                    body_length=len(body), body_sha256=hashlib.sha256(body).hexdigest(),
                    body_messages=messages, disconnected=gone)
        await _respond(send, 200, json.dumps(seen).encode(), b"application/json")
    elif path.endswith("/stream"):
        # No Content-Length, several body messages: chunked (HTTP/1.1).
        parts = int(query.get("parts", "3"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for n in range(parts):
            await send({"type": "http.response.body", "body": b"part %d\n" % n,
                        "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path.endswith("/big"):
        size = int(query.get("size", str(4 << 20)))
        block = b"x" * 65536
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        while sent < size:
            piece = block[:size - sent]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})
    elif path.endswith("/nolength"):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"made"})
    elif path.endswith("/empty"):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
    elif path.endswith("/trailers"):
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"with trailers"})
        await send({"type": "http.response.trailers",
                    "headers": [(b"x-checksum", b"abc123")]})
    elif path.endswith("/pathsend"):
        name = os.path.abspath(__file__)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/x-python")]})
        await send({"type": "http.response.pathsend", "path": name})
    elif path.endswith("/error"):
        raise RuntimeError("the app failed before answering")
    elif path.endswith("/error-after-start"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("the app failed in the middle of its answer")
    elif path.endswith("/nothing"):
        return      # no response at all
    elif path.endswith("/slow"):
        await asyncio.sleep(float(query.get("s", "1")))
        await _respond(send, 200, b"slow done")
    elif path.endswith("/block"):
        time.sleep(float(query.get("s", "1")))      # blocks the whole loop, on purpose
        await _respond(send, 200, b"blocked")
    elif path.endswith("/disconnect"):
        # Answer nothing; wait for the client to go, and say that it went.
        message = await receive()
        if message["type"] == "http.request":
            message = await receive()
        record("disconnect", seen=message["type"], id=query.get("id", ""))
    elif path.endswith("/lazyread"):
        # Sleeps before every receive: the client waits on the app, not the reverse.
        size, more = 0, True
        while more:
            await asyncio.sleep(float(query.get("s", "1")))
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await _respond(send, 200, str(size).encode())
    elif path.endswith("/noread"):
        await _respond(send, 200, b"did not read the body")
    elif path.endswith("/pid"):
        await _respond(send, 200, str(os.getpid()).encode())
    else:
        await _respond(send, 404, b"not found")


async def no_lifespan(scope, receive, send):
    """An app that knows only http (many hand-written ones): lifespan 'auto' skips it."""
    assert scope["type"] == "http", scope["type"]
    await _respond(send, 200, b"no lifespan here")


async def hello(scope, receive, send):
    """The ASGI twin of wsgiapps.hello: a "call" line (with ?id=), then "hello\\n"."""
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    record("call", id=_query(scope).get("id", ""), method=scope["method"])
    await _respond(send, 200, b"hello\n")


async def grower(scope, receive, send):
    """The ASGI twin of wsgiapps' /slow and /grow routes (the max_rss test).

    ``/slow?t=S``: sleep S seconds, answer {"pid"}; ``/grow?mib=N&hold=S``:
    allocate N MiB more and keep it, sleep S seconds, answer {"pid", "rss"}.
    """
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    query = _query(scope)
    answer = {"pid": os.getpid()}
    if scope["path"].startswith("/grow"):
        answer["rss"] = hoard(int(query.get("mib", "0")))
        await asyncio.sleep(float(query.get("hold", "0")))
    else:
        await asyncio.sleep(float(query.get("t", "0")))
    await _respond(send, 200, json.dumps(answer).encode(), b"application/json")


class Instance:
    """An ASGI app that is an object with an async __call__."""

    async def __call__(self, scope, receive, send):
        await raw(scope, receive, send)


instance = Instance()


def make_raw():
    """A factory: 'asgiapps:make_raw()'."""
    return raw


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]


def _fastapi_app():
    import contextlib

    from fastapi import FastAPI, Form, Request
    from fastapi.responses import PlainTextResponse, StreamingResponse

    @contextlib.asynccontextmanager
    async def lifespan(app):
        record("startup")
        yield {"db": "connected", "pid": os.getpid()}
        record("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def item(item_id: int, q: str = ""):
        return {"item_id": item_id, "q": q}

    @app.post("/json")
    async def echo_json(request: Request):
        data = await request.json()
        return {"got": data, "type": request.headers.get("content-type")}

    @app.post("/form")
    async def form(name: str = Form(...), count: int = Form(...)):
        return {"name": name, "count": count}

    @app.post("/upload")
    async def upload(request: Request):
        digest, size, parts = hashlib.sha256(), 0, 0
        async for piece in request.stream():
            digest.update(piece)
            size += len(piece)
            parts += 1
        return {"size": size, "sha256": digest.hexdigest(), "parts": parts}

    @app.get("/stream")
    async def stream(n: int = 5):
        async def lines():
            for i in range(n):
                yield f"line {i}\n"
                await asyncio.sleep(0.01)
        return StreamingResponse(lines(), media_type="text/plain")

    @app.get("/state")
    async def state(request: Request):
        return {"db": request.state.db, "pid": request.state.pid}

    @app.get("/text")
    async def text():
        return PlainTextResponse("plain")

    return app


def __getattr__(name):
    # The FastAPI app is built on first use: importing this module for the raw
    # app must not need FastAPI.
    if name == "fast":
        app = _fastapi_app()
        globals()["fast"] = app
        return app
    raise AttributeError(name)
