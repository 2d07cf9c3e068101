"""RFC 6455 for an ASGI server, sans-IO: the opening handshake's heads and one connection's frames.

Nothing here touches a socket, a loop or the clock.  The asyncio side
(:mod:`.websocket`) feeds :class:`Frames` the bytes it reads and writes what
:meth:`Frames.data_to_send` returns; the handshake functions turn a parsed
request and the application's ``websocket.*`` messages into HTTP heads.

The framing itself (frame parsing and masking, control frames, the close
handshake, the message size limit) is the ``websockets`` package's sans-IO
``Protocol``: measured against wsproto in ``benchmarks/websocket_framing.py``
it parses and writes messages several times faster (masking in C).  What
ASGI needs on top is here: text decoded, and so checked as UTF-8 (1007; the
library leaves that to its own I/O layers), fragments joined into one
message, close codes reported as ``websocket.disconnect`` messages.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import logging
import struct
from http import HTTPStatus
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from websockets.exceptions import ProtocolError as FramingError
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from ..http.parser import Request
from ..http.response import HOP_BY_HOP, SERVER, date_header, simple_response

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 1.3
ABNORMAL = 1006            # no close frame: the connection just ended (never sent)
NO_STATUS = 1005           # a close frame without a code
MAX_REASON = 123           # a control frame's 125 bytes, less the code's two

Message = Dict[str, Any]

# The library logs every closed connection at INFO on its own logger; a busy
# worker's error log has no use for that.  Its errors still come through.
_library_log = logging.getLogger("prefork.websocket.framing")
_library_log.setLevel(logging.WARNING)


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket opening handshake: answer ``status``."""

    def __init__(self, status: int, why: str, headers: Sequence[Tuple[str, str]] = ()) -> None:
        super().__init__(why)
        self.status = status
        self.headers = headers

    def response(self) -> bytes:
        return simple_response(self.status, f"{self.status} {self}\n".encode(),
                               extra=self.headers)


def _tokens(request: Request, name: str) -> List[str]:
    """The comma-separated values of every ``name`` field, lower-cased."""
    return [t.strip().lower() for n, v in request.headers if n.lower() == name
            for t in v.split(",")]


def check_handshake(request: Request) -> str:
    """The client's Sec-WebSocket-Key, once the request is a valid opening handshake (4.2.1)."""
    if request.method != "GET" or request.version != "HTTP/1.1":
        raise HandshakeError(400, "a WebSocket upgrade must be an HTTP/1.1 GET")
    if "websocket" not in _tokens(request, "upgrade") \
            or "upgrade" not in _tokens(request, "connection"):
        raise HandshakeError(400, "missing 'Upgrade: websocket' or 'Connection: upgrade'")
    if _tokens(request, "sec-websocket-version") != ["13"]:
        # 4.4: tell the client which version this server speaks.
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version",
                             [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")])
    keys = [v for n, v in request.headers if n.lower() == "sec-websocket-key"]
    try:
        if len(keys) != 1 or len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise HandshakeError(400, "missing or malformed Sec-WebSocket-Key") from None
    return keys[0]


def accept_value(key: str) -> str:
    """Sec-WebSocket-Accept for a client's key (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode()


def subprotocols(request: Request) -> List[str]:
    """The subprotocols the client offers, in its order of preference."""
    return [t.strip() for n, v in request.headers if n.lower() == "sec-websocket-protocol"
            for t in v.split(",") if t.strip()]


def websocket_scope(http_scope: Dict[str, Any], request: Request) -> Dict[str, Any]:
    """The ASGI ``websocket`` scope for the connection the HTTP adapter described."""
    extensions = {k: v for k, v in (http_scope.get("extensions") or {}).items()
                  if not k.startswith("http.")}     # http.response.* mean nothing here
    extensions["websocket.http.response"] = {}
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_scope.get("http_version", "1.1"),
        "scheme": "wss" if http_scope.get("scheme") in ("https", "wss") else "ws",
        "path": http_scope["path"],
        "raw_path": http_scope.get("raw_path"),
        "query_string": http_scope.get("query_string", b""),
        "root_path": http_scope.get("root_path", ""),
        "headers": http_scope["headers"],
        "client": http_scope.get("client"),
        "server": http_scope.get("server"),
        "subprotocols": subprotocols(request),
        "extensions": extensions,
    }
    if "state" in http_scope:
        scope["state"] = http_scope["state"]
    return scope


def _fields(headers: Iterable[Any], drop: Iterable[str]) -> bytes:
    """The app's ``[name, value]`` byte pairs as field lines; refuses header injection."""
    skip = set(drop)
    out = []
    for item in headers:
        name, value = item
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError(f"ASGI header {item!r} must be a pair of bytes")
        if not name or any(c in name for c in b" \t\r\n\0:") or any(c in value for c in b"\r\n\0"):
            raise ValueError(f"invalid ASGI header {item!r}")
        if name.lower().decode("latin-1") not in skip:
            out.append(name + b": " + value + b"\r\n")
    return b"".join(out)


# The handshake fields are the server's to write; an app's copies are dropped.
_HANDSHAKE_FIELDS = ("upgrade", "connection", "sec-websocket-accept")


def accept_head(key: str, subprotocol: Optional[str], headers: Iterable[Any]) -> bytes:
    """The 101 response that opens the WebSocket, for ``websocket.accept``."""
    head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_value(key).encode() + b"\r\n")
    if subprotocol is not None:
        if not isinstance(subprotocol, str) or not subprotocol.isprintable() or "," in subprotocol:
            raise ValueError(f"invalid subprotocol {subprotocol!r}")
        head += b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1") + b"\r\n"
    return head + SERVER + date_header() + _fields(headers, _HANDSHAKE_FIELDS) + b"\r\n"


def denial_head(status: int, headers: Sequence[Any]) -> Tuple[bytes, bool]:
    """The head of a ``websocket.http.response`` denial, and whether its body goes chunked.

    The connection closes after a denial, so it says ``Connection: close``; a
    body without the app's Content-Length goes chunked, so the client can
    tell a complete denial from a cut one.
    """
    if not isinstance(status, int) or not 100 <= status <= 999 or status == 101:
        raise ValueError(f"invalid status {status!r} for a WebSocket denial response")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    fields = _fields(headers, HOP_BY_HOP)
    chunked = not any(n.lower() == b"content-length" for n, _ in headers)
    return (b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode()) + SERVER + date_header() + fields
            + (b"Transfer-Encoding: chunked\r\n" if chunked else b"")
            + b"Connection: close\r\n\r\n", chunked)


def disconnect(code: int, reason: str = "") -> Message:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


class WebSocketClosed(OSError):
    """A message sent on a WebSocket that has closed (ASGI: a server-specific OSError)."""


class Frames:
    """One open WebSocket's frames: received bytes become ASGI messages, app messages bytes.

    After each call that takes or makes frames, the caller writes
    :meth:`data_to_send`; when it says ``eof``, the server's side of the close
    is done and the transport is to be closed once that data is written.
    """

    def __init__(self, max_size: int) -> None:
        self._proto = Protocol(Side.SERVER, state=State.OPEN, max_size=max_size or None,
                               logger=_library_log)
        self._text: Optional[Any] = None          # the UTF-8 decoder of a fragmented text message
        self._parts: List[Any] = []               # a fragmented message's parts so far
        self._pings = 0
        self.ping_payload: Optional[bytes] = None  # our last ping, until its pong comes

    @property
    def open(self) -> bool:
        """No close frame sent or received yet: messages may still be sent."""
        return self._proto.state is State.OPEN

    def receive(self, data: bytes) -> List[Message]:
        """The ASGI messages in ``data``: ``websocket.receive``, then maybe one disconnect."""
        proto = self._proto
        proto.receive_data(data)
        out: List[Message] = []
        try:
            for frame in proto.events_received():
                message = self._message(frame.opcode, frame.data, frame.fin)
                if message is not None:
                    out.append(message)
        except UnicodeDecodeError as exc:
            # 8.1: invalid UTF-8 in a text message fails the connection with 1007.
            self._text, self._parts = None, []
            proto.fail(1007, f"invalid UTF-8 at byte {exc.start}")
            return out + [disconnect(1007, "invalid UTF-8")]
        if proto.parser_exc is not None and proto.close_sent is not None:
            # The library failed the connection (1002 bad frame, 1009 too big,
            # 1007 bad close reason): the app hears the code the client is sent.
            out.append(disconnect(proto.close_sent.code, proto.close_sent.reason))
            proto.parser_exc = None     # reported once
        return out

    def _message(self, opcode: Opcode, data: Any, fin: bool) -> Optional[Message]:
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if fin:         # the usual case: the whole message in one frame
                if opcode is Opcode.TEXT:
                    return {"type": "websocket.receive", "text": data.decode()}
                return {"type": "websocket.receive",
                        "bytes": data if type(data) is bytes else bytes(data)}
            # Text is decoded fragment by fragment, so bad UTF-8 fails at once.
            self._text = codecs.getincrementaldecoder("utf-8")() if opcode is Opcode.TEXT else None
            self._parts = [bytes(data) if self._text is None else self._text.decode(data)]
        elif opcode is Opcode.CONT:
            text = self._text
            self._parts.append(bytes(data) if text is None else text.decode(data, fin))
            if fin:
                parts, self._parts, self._text = self._parts, [], None
                if text is not None:
                    return {"type": "websocket.receive", "text": "".join(parts)}
                return {"type": "websocket.receive", "bytes": b"".join(parts)}
        elif opcode is Opcode.PONG:
            if self.ping_payload is not None and data == self.ping_payload:
                self.ping_payload = None
        elif opcode is Opcode.CLOSE:
            close = self._proto.close_rcvd
            return disconnect(close.code, close.reason) if close else disconnect(NO_STATUS)
        return None        # a ping: the library queued its pong

    def send_text(self, text: str) -> None:
        self._proto.send_text(text.encode())

    def send_bytes(self, data: bytes) -> None:
        self._proto.send_binary(data)

    def ping(self) -> None:
        """Send a keepalive ping; ``ping_payload`` stays set until its pong arrives."""
        self._pings += 1
        self.ping_payload = struct.pack("!I", self._pings & 0xFFFFFFFF)
        self._proto.send_ping(self.ping_payload)

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the transport closes when the client answers."""
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError(f"close code {code!r} is not an int")
        # A reason longer than a control frame allows is cut, at a character.
        reason = (reason or "").encode()[:MAX_REASON].decode("utf-8", "ignore")
        try:
            self._proto.send_close(code, reason)
        except FramingError:
            raise ValueError(f"close code {code} may not be sent (RFC 6455 7.4)") from None

    def fail(self, code: int, reason: str = "") -> None:
        """Close at once, without waiting for the client's close frame."""
        self._proto.fail(code, reason)

    def data_to_send(self) -> Tuple[bytes, bool]:
        """The bytes to write now, and whether the transport closes after them."""
        writes = self._proto.data_to_send()
        if not writes:
            return b"", False
        eof = b"" in writes           # the library's end-of-stream sentinel
        return b"".join(writes), eof
