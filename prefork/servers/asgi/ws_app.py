"""The app's side of an ASGI WebSocket session: its ``receive`` and ``send``, and its task.

:class:`AppSide` is mixed into :class:`~.websocket.WebSocketSession`.  It
turns the app's messages into the handshake's answer (``websocket.accept``:
101; ``websocket.close`` first: 403; ``websocket.http.response.*``: the
app's own denial response), frames and a close, and runs the app to its
end (1011 for an app that failed once open).  What it calls on the session
(``_write``, ``_flush``, ``_close``, ``_queue``, ``_received``,
``_resume_reading``, ``_drained``, ``_close_transport``, ``_finish``) is
the session's: the transport, the timers and the flow control.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..http.response import LAST_CHUNK, chunk, error_response
from .ws_protocol import Frames, Message, WebSocketClosed, accept_head, denial_head, disconnect

logger = logging.getLogger("prefork")

# A session's states; the session and this side both move it along.
CONNECTING, DENYING, OPEN, CLOSING, CLOSED = "connecting", "denying", "open", "closing", "closed"
SERVICE_RESTART = 1012        # RFC 6455 7.4.1 (IANA registry): the worker is being replaced
CLIENT_GONE = 499             # the access log's status when the client left before any answer


class AppSide:
    """What the app calls on its WebSocket, and the app's task; see the module docstring."""

    # Set by the session: app, scope, request, state, status, frames, max_size,
    # keepalive, _inbox, _inbox_bytes, _receiver, _disconnect, _reading_paused,
    # _going_away, _app_done, _lost, _early, _chunked.
    app: Any
    state: str

    async def receive(self) -> Message:
        while not self._inbox:
            if self._disconnect is not None:
                return dict(self._disconnect)      # every receive after the end says so
            if self._receiver is None or self._receiver.done():
                self._receiver = self.loop.create_future()
            await self._receiver
        message = self._inbox.popleft()
        if message["type"] == "websocket.receive":
            self._inbox_bytes -= len(message.get("text") or message.get("bytes") or b"")
        if self._reading_paused:
            self._resume_reading()
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        state = self.state
        if state is OPEN and kind == "websocket.send":
            frames = self.frames
            assert frames is not None
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise TypeError("websocket.send needs exactly one of 'text' and 'bytes'")
            if text is not None:
                frames.send_text(text)
            else:
                frames.send_bytes(data)
            self._flush()
            if self._writing_paused:
                await self._drained()
        elif state is OPEN and kind == "websocket.close":
            self._close(message.get("code") or 1000, message.get("reason") or "")
        elif (state is CLOSING or state is CLOSED) and kind == "websocket.close":
            pass           # closing twice, or after the client: nothing left to do
        elif state is CONNECTING and kind == "websocket.accept":
            self._accept(message)
        elif state is CONNECTING and kind == "websocket.close":
            # ASGI: a close before the accept is a denial, with 403.
            self._deny(403)
        elif state is CONNECTING and kind == "websocket.http.response.start":
            self.status = message["status"]
            head, self._chunked = denial_head(self.status, list(message.get("headers", ())))
            self._write(head)
            self.state = DENYING
        elif state is DENYING and kind == "websocket.http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self._chunked:
                self._write((chunk(body) if body else b"") + (b"" if more else LAST_CHUNK))
            elif body:
                self._write(body)
            if not more:
                self.state = CLOSED
                self._close_transport()
            elif self._writing_paused:
                await self._drained()
        elif state is CLOSING or state is CLOSED:
            raise WebSocketClosed(f"{kind!r} sent after the WebSocket closed")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket that is {state}")


    async def _run(self) -> None:
        failed = True
        try:
            await self.app(self.scope, self.receive, self.send)
            failed = False
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            logger.error("error in the ASGI app serving the WebSocket %s", self._describe(),
                         exc_info=exc)
        self._app_done = True
        state = self.state
        if state is CONNECTING and self._lost:
            self.status = CLIENT_GONE
        elif state is CONNECTING:
            if not failed:
                logger.error("the ASGI app returned without accepting or closing the "
                             "WebSocket %s", self._describe())
            self._deny(500)
        elif state is DENYING:
            if not failed:
                logger.error("the ASGI app returned before its denial response to %s was "
                             "complete", self._describe())
            self._close_transport(abort=True)     # a cut response, not a complete one
        elif state is OPEN:
            self._close(1011 if failed else 1000, "internal error" if failed else "")
        self._finish()

    def _describe(self) -> str:
        return f"{self.request.method} {self.request.target}"

    def _accept(self, message: Message) -> None:
        self._write(accept_head(self._key, message.get("subprotocol"),
                                message.get("headers", ())))
        self.status = 101
        self.state = OPEN
        self.frames = Frames(self.max_size)
        if self._going_away:
            self._close(SERVICE_RESTART, "service restart")
            self._queue(disconnect(SERVICE_RESTART, "service restart"))
        else:
            self.keepalive.start()
        early, self._early = bytes(self._early), bytearray()
        if early:
            self._received(early)
        if self._reading_paused:
            self._resume_reading()

    def _deny(self, status: int) -> None:
        self.status = status
        self._write(error_response(status))
        self.state = CLOSED
        self._close_transport()
