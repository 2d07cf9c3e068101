"""``GET /metrics`` served from the master's own select loop.

The master has one thread and one loop that also reaps and replaces
workers, so nothing here may block: the listening socket and every client
are non-blocking, a client gets at most :data:`CLIENT_DEADLINE` seconds
from accept to the last byte of its answer, a request head is capped at
:data:`MAX_HEAD` bytes, and at most :data:`MAX_CLIENTS` are held at once
(more wait in the kernel's backlog).  One request per connection, answered
with ``Connection: close``: a scraper asks every few seconds, keep-alive
would only hold sockets.

:func:`respond` (request head -> response bytes) has no I/O, for the tests.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .. import sockets
from ..errors import BindError, ConfigError
from ..metrics import CONTENT_TYPE

logger = logging.getLogger("prefork")

MAX_CLIENTS = 8
MAX_HEAD = 8192
CLIENT_DEADLINE = 5.0
BACKLOG = 16
PATH = "/metrics"
PLAIN = "text/plain; charset=utf-8"


def head_complete(data: bytes) -> bool:
    """True once ``data`` holds a whole request head (a bare LF ending is tolerated)."""
    return b"\r\n\r\n" in data or b"\n\n" in data


def respond(head: bytes, render: Callable[[], str]) -> bytes:
    """The whole response to one request head; ``render`` is called only for the metrics."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response(400, "Bad Request", b"bad request\n")
    method, target = parts[0], parts[1]
    try:
        path = urlsplit(target.decode("ascii")).path
    except (UnicodeDecodeError, ValueError):
        return _response(400, "Bad Request", b"bad request\n")
    if path != PATH:
        return _response(404, "Not Found", f"not found; metrics are at {PATH}\n".encode())
    if method not in (b"GET", b"HEAD"):
        return _response(405, "Method Not Allowed", b"use GET\n", extra=[("Allow", "GET, HEAD")])
    try:
        body = render().encode("utf-8")
    except Exception:     # a bug in rendering must not end the master
        logger.exception("metrics: rendering failed")
        return _response(500, "Internal Server Error", b"rendering failed\n")
    return _response(200, "OK", body, CONTENT_TYPE, head=method == b"HEAD")


def _response(code: int, reason: str, body: bytes, content_type: str = PLAIN,
              extra: Sequence[Tuple[str, str]] = (), head: bool = False) -> bytes:
    fields = [("Content-Type", content_type), *extra,
              ("Content-Length", str(len(body))), ("Connection", "close")]
    lines = [f"HTTP/1.1 {code} {reason}"] + [f"{k}: {v}" for k, v in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


class _Client:
    """One accepted connection: what it sent so far, what is left to send."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""
        self.outbox: Optional[memoryview] = None    # None while the head is still arriving


class MetricsServer:
    """Listens at ``address`` (``HOST:PORT``), or on ``sock`` if given (inherited, already bound).

    The master selects on :meth:`waiting` and hands what is ready to :meth:`handle`.
    """

    def __init__(self, address: str, render: Callable[[], str],
                 sock: Optional[socket.socket] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.render = render
        self.clock = clock
        self.sock = sock if sock is not None else _bind(address)
        self.sock.setblocking(False)
        self._clients: Dict[socket.socket, _Client] = {}

    @property
    def name(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if self.sock.family == socket.AF_INET6 else f"{host}:{port}"

    def fileno(self) -> int:
        """The listening socket's fd (what a new master would inherit)."""
        return self.sock.fileno()

    def waiting(self) -> Tuple[List[socket.socket], List[socket.socket]]:
        """(sockets to watch for reading, for writing); the listener only while there is room."""
        reading = [c.sock for c in self._clients.values() if c.outbox is None]
        writing = [c.sock for c in self._clients.values() if c.outbox is not None]
        if len(self._clients) < MAX_CLIENTS:
            reading.append(self.sock)
        return reading, writing

    def handle(self, readable: Sequence[object], writable: Sequence[object]) -> None:
        """Serve what select reported, then drop clients past their deadline."""
        if self.sock in readable:
            self._accept()
        for client in list(self._clients.values()):
            if client.sock in readable and client.outbox is None:
                self._read(client)
            elif client.sock in writable and client.outbox is not None:
                self._write(client)
        now = self.clock()
        for client in list(self._clients.values()):
            if now > client.deadline:
                self._drop(client)

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        self.sock.close()

    def close_in_child(self) -> None:
        """In a forked worker: let go of the fds without touching the master's connections."""
        for client in self._clients.values():
            client.sock.close()
        self._clients.clear()
        self.sock.close()

    # -- one client -----------------------------------------------------------

    def _accept(self) -> None:
        while len(self._clients) < MAX_CLIENTS:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # e.g. EMFILE: leave it in the backlog for now
                logger.warning("metrics: cannot accept: %s", exc.strerror)
                return
            conn.setblocking(False)
            self._clients[conn] = _Client(conn, self.clock() + CLIENT_DEADLINE)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbox += data
        if head_complete(client.inbox):
            answer = respond(client.inbox, self.render)
        elif len(client.inbox) > MAX_HEAD:
            answer = _response(431, "Request Header Fields Too Large", b"head too large\n")
        else:
            return
        client.inbox = b""
        client.outbox = memoryview(answer)
        self._write(client)    # most answers fit the socket buffer: done in this turn

    def _write(self, client: _Client) -> None:
        assert client.outbox is not None
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        del self._clients[client.sock]
        client.sock.close()


def _bind(address: str) -> socket.socket:
    """Bind ``metrics_bind``; errors name the setting (exit 2 for a bad value, 4 to bind)."""
    try:
        spec = sockets.parse(address)
    except ConfigError as exc:
        raise ConfigError(f"key 'metrics_bind': {exc}") from None
    try:
        return sockets.bind(spec, sockets.BindOptions(BACKLOG)).sock
    except BindError as exc:
        raise BindError(f"metrics_bind: {exc}") from None
