"""One HTTP connection in the selector worker: the system calls around :class:`HttpProtocol`.

Every rule (keep-alive, pipelining, 100-continue, deadlines, how the
connection ends) is the protocol's (:mod:`.protocol`); this adapter only
does what the protocol's actions say: recv, send, sendfile, shutdown,
close, the selector registration, running the WSGI exchange's jobs with
``loop.run_job``, and the access log.  It chooses to buffer each request's
body whole (a spooled temporary file, ``body_buffer_size`` in memory)
before the app runs, and keeps responses waiting in the selector for a
slow reader, so no client holds a worker by being slow.

The loop calls :meth:`~HttpConnection.tick` about twice a second for the
deadlines, :meth:`~HttpConnection.stop` on a graceful stop and
:meth:`~HttpConnection.hurry` when the worker is orphaned.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import tempfile
from time import monotonic
from typing import Any, Callable, Dict, Final, Optional

from ...addresses import client
from ..edge.forwarded import client_and_scheme
from ..edge.tls import close_notify
from .environ import client_fields, connection_base, request_environ
from .exchange import Exchange
from .parser import Request
from .protocol import (BODY_DATA, CLOSE, FINISHED, LATE_READ, LINGER, PRODUCE, REJECT, REQUEST,
                       REQUEST_HEAD, RESET, SEND, SEND_CONTINUE, SENDFILE, WAIT, WANT_READ,
                       WANT_WRITE, WANTS, HttpProtocol)
from .response import CONTINUE

RECV_SIZE: Final = 64 * 1024   # below malloc's mmap threshold: no mmap/munmap per recv
_RESET: Final = struct.pack("ii", 1, 0)   # struct linger {l_onoff 1, l_linger 0}: close sends RST
# "Not now" from a non-blocking socket; a TLS one (edge/arrival.py) says it its own way.
_AGAIN: Final = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
FILE_BLOCK: Final = 256 * 1024   # a file range read and sent per step where sendfile cannot be used


class EmptyInput:
    """``wsgi.input`` of a request without a body: stateless, so one serves all."""

    __slots__ = ()

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list:
        return []

    def __iter__(self) -> "EmptyInput":
        return self

    def __next__(self) -> bytes:
        raise StopIteration


EMPTY_INPUT: Final = EmptyInput()


class HttpConnection:
    """Drive one client socket through requests; see the module docstring."""

    __slots__ = ("sock", "address", "client", "server", "loop", "proto", "closed", "body",
                 "exchange", "trusted", "tls", "_events", "_driving", "_next", "_in_job",
                 "_base", "_app", "_run_job", "_multithread", "_high_water", "_allow", "_forwarded",
                 "__weakref__")

    def __init__(self, sock: socket.socket, address: Any, server: Any, loop: Any) -> None:
        self.sock = sock
        self.address = address
        self.client = address        # the current request's: forwarded by a trusted proxy
        self.server = server
        self.trusted = server.trusts(address)
        self.tls = server.tls_environ(sock)
        self.loop = loop
        # What every request of this connection reads: looked up once, not per request.
        self._base: Dict[str, Any] = connection_base(server.environ_base, address, self.tls)
        self._app: Callable = server.app
        self._high_water: int = server.high_water
        self._allow: Any = server.forwarded_allow
        self._forwarded: str = server.forwarded_kind
        self._run_job: Callable = loop.run_job
        self._multithread: bool = loop.multithread
        self.proto = HttpProtocol(server.limits, server.header_timeout, server.client_timeout,
                                  server.keepalive, monotonic())
        self.closed = False
        self.body: Any = None
        self.exchange: Optional[Exchange] = None
        self._events = 0
        self._driving = False
        self._next: Optional[int] = None
        self._in_job = False     # a job holds the exchange: only it may close the iterable
        loop.park(self)
        # The request usually arrived with the connection (TCP_DEFER_ACCEPT
        # waits for it): read it now, and register only if it has not.
        self._on_readable()
        if not self.closed and not self._events:
            self._want(self.proto.wants)

    # What the protocol knows, as the access log and request_timeout's log line read it.
    @property
    def state(self) -> str:
        return self.proto.state

    @property
    def started(self) -> float:
        return self.proto.started

    @property
    def request(self) -> Optional[Request]:
        return self.proto.request

    # -- loop callbacks ------------------------------------------------------

    def _on_ready(self) -> None:
        if self._events == WANT_WRITE:      # the protocol's WRITE state
            self._drive(self.proto.writable())
        else:
            self._on_readable()

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except _AGAIN:
            return
        except OSError:
            self.close()
            return
        if data:
            self._drive(self.proto.received(data, monotonic()))
        else:
            self._drive(self.proto.eof())

    def tick(self, now: float) -> None:
        action = self.proto.tick(now)
        if action == WAIT:
            return
        if action == LATE_READ:
            # Take what the client sent meanwhile before the deadline is
            # enforced: it may have passed while this worker could not read.
            self._on_readable()
            if self.closed:
                return
            action = self.proto.expire()
        self._drive(action)

    def stop(self) -> None:
        """Graceful stop: see :meth:`HttpProtocol.stop`."""
        if self.proto.stop():
            exchange = self.exchange
            if exchange is not None and not exchange.head_done:
                exchange.keep_alive = False     # the head, still to come, says close

    def hurry(self, deadline: float) -> None:
        """The worker is orphaned: if idle (or done and lingering), close by ``deadline``."""
        self.proto.hurry(deadline)

    # -- the protocol's actions ----------------------------------------------

    def _drive(self, action: int) -> None:
        """Perform ``action`` and the ones that follow, until the protocol waits.

        A sync worker runs a job inline, and the job's end (:meth:`_after_job`)
        only leaves its action for the loop below to take up, so pipelined
        requests and long responses iterate instead of recursing.
        """
        if self._driving:
            self._next = action
            return
        self._driving = True
        proto = self.proto
        now = 0.0
        try:
            while True:
                if action == SEND:
                    try:
                        sent = self.sock.send(proto.out)
                    except _AGAIN:
                        sent = 0
                    except OSError:
                        self.close()
                        return
                    now = monotonic()
                    action = proto.sent(sent, now)
                elif action == REQUEST:
                    self._run()
                    follow, self._next, now = self._next, None, 0.0
                    if follow is None:       # a thread runs the job: its end drives on
                        return
                    action = follow
                elif action == FINISHED:
                    exchange = self.exchange
                    if exchange is not None:
                        if self.server.access_log is not None:
                            self._log()
                        exchange.release()
                        self._drop_body()
                        self.exchange = None
                    action = proto.finish(now or monotonic())
                elif action == WAIT:
                    events = WANTS[proto.state]
                    if events != self._events:
                        self._want(events)
                    return
                elif action == REQUEST_HEAD:
                    self.body = tempfile.SpooledTemporaryFile(
                        max_size=self.server.body_buffer_size)
                    action = proto.next()
                elif action == BODY_DATA:
                    self.body.write(proto.data)
                    action = proto.next()
                elif action == PRODUCE:
                    self._pump()
                    follow, self._next, now = self._next, None, 0.0
                    if follow is None:
                        return
                    action = follow
                elif action == SENDFILE:
                    action = self._sendfile()
                elif action == SEND_CONTINUE:
                    try:
                        self.sock.send(CONTINUE)   # a few bytes into an empty buffer: it fits
                    except OSError:
                        pass
                    action = proto.next()
                elif action == REJECT:
                    self.server.log_rejection(self, proto.status)
                    action = SEND
                elif action == LINGER:
                    close_notify(self.sock)
                    try:
                        self.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        self.close()
                        return
                    self._want(WANT_READ)
                    return
                elif action == RESET:
                    self._reset()
                    return
                else:
                    assert action == CLOSE, action
                    close_notify(self.sock)
                    self.close()
                    return
        finally:
            self._driving = False

    def _run(self) -> None:
        """Run the app for the request the protocol has complete."""
        body = self.body
        if body is None:
            body, length = EMPTY_INPUT, 0
        else:
            length = body.tell()
            body.seek(0)
        proto = self.proto
        request = proto.request
        assert request is not None      # REQUEST: the protocol holds a whole head
        environ = request_environ(self._base, request, body, length)
        client = self.address
        if self.trusted:
            client, scheme = client_and_scheme(client, request.headers, self._allow,
                                               self._forwarded)
            if client is not self.address:
                client_fields(environ, client)
            if scheme is not None:
                environ["wsgi.url_scheme"] = scheme
                environ["HTTPS"] = "on" if scheme == "https" else "off"
        self.client = client
        self.exchange = exchange = Exchange(self._app, environ, request, self._high_water,
                                            proto.keep_alive)
        if self._multithread:
            self._want(0)   # not readable while the app runs: input waits in the kernel
        self._in_job = True
        self._run_job(exchange.run, self._after_job, what=self._describe)

    def _pump(self) -> None:
        """Run the app for more of its response."""
        if self._multithread:
            self._want(0)
        self._in_job = True
        exchange = self.exchange
        assert exchange is not None
        self._run_job(exchange.pump, self._after_job, counts=False, what=self._describe)

    def _after_job(self) -> None:
        self._in_job = False
        exchange = self.exchange
        assert exchange is not None     # a job is the exchange's, and ran for it
        if self.closed:
            exchange.release()
            return
        if exchange.aborted:
            self._log()
            action = self.proto.abort()
        else:
            action = self.proto.respond(exchange.take_output(), exchange.done,
                                        exchange.keep_alive, exchange.file)
        if self._driving:       # a sync job, inside _drive: its loop goes on from here
            self._next = action
        else:
            self._drive(action)

    def _sendfile(self) -> int:
        assert self.proto.file is not None
        fd, offset, count = self.proto.file
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                # The kernel would send the file's bytes past TLS: read and send them.
                sent = self.sock.send(os.pread(fd, min(count, FILE_BLOCK), offset))
            else:
                sent = os.sendfile(self.sock.fileno(), fd, offset, count)
        except _AGAIN:
            sent = 0
        except OSError:
            self.close()
            return CLOSE
        ended = sent == 0 and count > 0 and os.fstat(fd).st_size <= offset
        return self.proto.sent_file(sent, monotonic(), ended)

    # -- closing -------------------------------------------------------------

    def _reset(self) -> None:
        """Close with a reset (SO_LINGER 0): the kernel drops what it still holds to send.

        A plain close would leave it queued in an orphaned socket: up to a
        whole send buffer (4 MiB) that a client keeping its end open and
        reading a few bytes a second pins for hours, so cutting slow readers
        at client_timeout would free nothing.
        """
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proto.close()
        if self._events:
            self.loop.selector.unregister(self.sock)
        self.loop.forget(self)
        self.sock.close()
        if self.exchange is not None and not self._in_job:
            self.exchange.release()
        if not self._in_job:        # else the app may still be reading it
            self._drop_body()

    def _drop_body(self) -> None:
        """Close the request body's spool (it may have gone to a temporary file)."""
        body = self.body
        if body is not None:
            self.body = None
            body.close()

    def _want(self, events: int) -> None:
        if events == self._events or self.closed:
            return
        selector = self.loop.selector
        if not self._events:
            selector.register(self.sock, events, self._on_ready)
        elif not events:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, events, self._on_ready)
        self._events = events

    def _log(self) -> None:
        self.server.log_access(self, self.proto.request, self.exchange)

    def _describe(self) -> str:
        """The request a job runs, for request_timeout's log line."""
        r = self.proto.request
        if r is None:
            return f"a request from {client(self.address)}"
        return f'"{r.method} {r.target} {r.version}" from {client(self.address)}'
