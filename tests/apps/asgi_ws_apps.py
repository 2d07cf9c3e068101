"""ASGI apps for the WebSocket integration tests (tests/integration/test_asgi_websocket.py).

``app``: a raw ASGI app.  ``/echo`` echoes (``"pid"`` answers the worker's
PID, ``"state"`` what the lifespan startup stored), ``/deny`` closes before
the accept (403), ``/star...`` is a Starlette app with a WebSocket route.
What the app hears at the end is printed (to the server's log) for the test.
"""

import os

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def _shout(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text.upper())
    except WebSocketDisconnect as exc:
        print(f"starlette app saw disconnect {exc.code}", flush=True)


starlette_app = Starlette(routes=[WebSocketRoute("/star/shout", _shout)])


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["boot"] = "booted"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"].startswith("/star"):
        await starlette_app(scope, receive, send)
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"7")]})
        await send({"type": "http.response.body", "body": b"http ok"})
        return
    await receive()                                   # websocket.connect
    if scope["path"] == "/deny":
        await send({"type": "websocket.close"})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"raw app saw disconnect {message['code']}", flush=True)
            return
        text = message.get("text")
        if text == "pid":
            await send({"type": "websocket.send", "text": str(os.getpid())})
        elif text == "state":
            await send({"type": "websocket.send", "text": scope["state"].get("boot", "")})
        else:
            await send({"type": "websocket.send", "text": text, "bytes": message.get("bytes")})
