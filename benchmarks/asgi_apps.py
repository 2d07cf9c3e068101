"""The ASGI application every ASGI server is measured with: the same hello world as
apps.py over HTTP, and a WebSocket echo at ``/ws`` (websocket_echo.py)."""

from apps import BODY

START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]}
BODY_MESSAGE = {"type": "http.response.body", "body": BODY}
ACCEPT = {"type": "websocket.accept"}
# Closing before the accept is how an ASGI app refuses a handshake (a 403).
REFUSE = {"type": "websocket.close", "code": 1008}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await echo(scope, receive, send)
        return
    await send(START)
    await send(BODY_MESSAGE)


async def echo(scope, receive, send):
    """Every text or bytes message back as it came, until the client leaves."""
    await receive()                            # websocket.connect
    if scope["path"] != "/ws":
        await send(REFUSE)
        return
    await send(ACCEPT)
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return                             # websocket.disconnect
        text = message.get("text")
        # A new dict per message: a server may keep or alter the one it was given.
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})
