"""``GET /metrics`` served from the master's own select loop.

The master has one thread and one loop that also reaps and replaces
workers, so nothing here may block: :class:`MetricsServer` is a
:class:`~.oneshot.OneShotServer`, so the listening socket and every client
are non-blocking, a client gets at most :data:`CLIENT_DEADLINE` seconds
from accept to the last byte of its answer, a request head is capped at
:data:`MAX_HEAD` bytes, and at most :data:`MAX_CLIENTS` are held at once
(more wait in the kernel's backlog).  One request per connection, answered
with ``Connection: close``: a scraper asks every few seconds, keep-alive
would only hold sockets.  Responses are built by the HTTP package's
:func:`~prefork.servers.http.response.simple_response`, as the workers'
own error replies are.

The same socket serves ``/status`` (an HTML page, :mod:`prefork.status_page`)
and ``/status.json`` when the master hands a :class:`Site` as ``render``: a
Site is itself the metrics renderer, so whoever only knows ``/metrics``
needs no change.

:func:`respond` (request head -> response bytes) has no I/O, for the tests.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from .. import sockets
from ..errors import BindError, ConfigError
from .. import status_page
from ..metrics import CONTENT_TYPE
from ..servers.http.response import simple_response
from .oneshot import OneShotServer

logger = logging.getLogger("prefork")

MAX_CLIENTS = 8
MAX_HEAD = 8192
CLIENT_DEADLINE = 5.0
BACKLOG = 16
PATH = "/metrics"
STATUS_PATH = "/status"
STATUS_JSON_PATH = "/status.json"

Page = Tuple[str, Callable[[], str]]     # (content type, renderer)


class Site:
    """What ``metrics_bind`` serves: ``/metrics``, ``/status`` and ``/status.json``.

    Calling it renders the metrics (it stands for a plain ``render``);
    ``snapshot`` gives the status report, ``history`` the rate samples.
    """

    def __init__(self, metrics: Callable[[], str], snapshot: Callable[[], Dict[str, Any]],
                 history: status_page.History,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.snapshot = snapshot
        self.history = history
        self.clock = clock

    def __call__(self) -> str:
        return self.metrics()

    def status_html(self) -> str:
        now = self.clock()
        return status_page.render(self.snapshot(), list(self.history.samples), now,
                                  self.history.previous(now), self.history.span)

    def status_json(self) -> str:
        return status_page.to_json(self.snapshot())

    def pages(self) -> Dict[str, Page]:
        return {PATH: (CONTENT_TYPE, self.metrics),
                STATUS_PATH: (status_page.CONTENT_TYPE, self.status_html),
                STATUS_JSON_PATH: (status_page.JSON_TYPE, self.status_json)}


def head_complete(data: bytes) -> bool:
    """True once ``data`` holds a whole request head (a bare LF ending is tolerated)."""
    return b"\r\n\r\n" in data or b"\n\n" in data


def respond(head: bytes, render: Callable[[], str]) -> bytes:
    """The whole response to one request head; ``render`` (or, for a :class:`Site`, the
    page asked for) is called only for a GET or HEAD of a page it serves."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return simple_response(400, b"bad request\n")
    method, target = parts[0], parts[1]
    try:
        path = urlsplit(target.decode("ascii")).path
    except (UnicodeDecodeError, ValueError):
        return simple_response(400, b"bad request\n")
    pages = render.pages() if isinstance(render, Site) else {PATH: (CONTENT_TYPE, render)}
    if path not in pages:
        where = ", ".join(pages)
        return simple_response(404, f"not found; served here: {where}\n".encode())
    content_type, page = pages[path]
    if method not in (b"GET", b"HEAD"):
        return simple_response(405, b"use GET\n", extra=[("Allow", "GET, HEAD")])
    try:
        body = page().encode("utf-8")
    except Exception:     # a bug in rendering must not end the master
        logger.exception("metrics: rendering %s failed", path)
        return simple_response(500, b"rendering failed\n")
    return simple_response(200, body, content_type, head_only=method == b"HEAD")


class MetricsServer(OneShotServer):
    """Listens at ``address`` (``HOST:PORT``), or on ``sock`` if given (inherited, already bound).

    The master selects on :meth:`waiting` and hands what is ready to :meth:`handle`.
    """

    what = "metrics"
    max_clients = MAX_CLIENTS
    max_request = MAX_HEAD
    deadline = CLIENT_DEADLINE
    evict_oldest = False      # a scraper can wait in the backlog; see .oneshot

    def __init__(self, address: str, render: Callable[[], str],
                 sock: Optional[socket.socket] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sock if sock is not None else _bind(address), clock)
        self.render = render

    @property
    def name(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if self.sock.family == socket.AF_INET6 else f"{host}:{port}"

    def complete(self, inbox: bytearray, eof: bool) -> bool:
        return head_complete(inbox)     # a head cut short by EOF is not answered

    def answer(self, inbox: bytes) -> bytes:
        return respond(inbox, self.render)

    def too_large(self) -> bytes:
        return simple_response(431, b"head too large\n")


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
