"""One HTTP/1.1 connection's rules, sans-IO: fed events, it answers what to do next.

:class:`HttpProtocol` never touches a socket, a selector, a thread or the
clock.  An adapter (the selector worker's :mod:`.connection`; an asyncio
one can drive the same object) feeds it what happened and performs what it
answers.  Keep-alive, pipelining, 100-continue, the deadlines and every close
rule live here and nowhere else: the parser only reports what a request
asked for, and the application side only frames its response (and says
whether that response leaves the connection usable).

Inputs (each returns an action code, below, but stop() and hurry()):

  received(data, now)          bytes from the client
  eof()                        the client closed its side
  next([now])                  the adapter wants more of the request body
  respond(data, done, keep_alive[, file])
                               the application produced output, after REQUEST
                               or PRODUCE (or early, after REQUEST_HEAD);
                               ``file``: a ``(fd, offset, count)`` range to
                               sendfile; ``keep_alive``: the response's
                               framing allows another request after it
  abort()                      the application failed after output left
  sent(count, now)             ``count`` bytes of ``out`` left (0: would block)
  sent_file(count, now, ended) the same for ``file``; ``ended``: it shrank
  writable()                   the socket takes more after a WAIT in WRITE
  finish(now)                  the adapter released a FINISHED response
  tick(now)                    the deadlines (about twice a second)
  expire()                     after LATE_READ: enforce the deadline, unless
                               what the socket held moved the connection on
  stop()                       graceful stop; True: the response under way
                               should say Connection: close if its head is
                               still to be written
  hurry(deadline)              the worker is orphaned: close an idle
                               connection by then
  close()                      the adapter closed the socket itself (an error)

Actions (small ints, so the hot path allocates nothing):

  WAIT           nothing until the next event: be registered for ``wants``
  REQUEST_HEAD   ``request`` is parsed and a body follows: call next()
  BODY_DATA      ``data`` is a piece of the body: call next()
  SEND_CONTINUE  send ``100 Continue`` (nothing of the body has come): next()
  REQUEST        the request is complete (bodyless, or its body delivered):
                 run the application.  After REQUEST_HEAD it is the end of
                 the body (an adapter whose app already runs: more_body=False)
  SEND           send ``out``, then sent()
  SENDFILE       send ``file``, then sent_file()
  PRODUCE        all output so far has left: run the application for more
  FINISHED       the response is out: log it, release the app, then finish()
  REJECT         refused with ``status``: log it; then SEND (``out`` holds it)
  LATE_READ      a read deadline passed: read what the socket holds, expire()
  LINGER         shut down the write side; read and drop until EOF or deadline
  CLOSE          close the socket
  RESET          close with SO_LINGER 0: drop what the kernel holds to send

The selector adapter (WSGI) buffers the body (REQUEST_HEAD, BODY_DATA...)
and runs the app at REQUEST.  An ASGI adapter would start the app at
REQUEST_HEAD and call next() from the app's ``receive``, so ``100 Continue``
goes out on the first receive, and only if the client has not started
sending; it may respond() before the body is complete, after which the
connection is lingered closed.  Bytes received while a response is under way
are kept for the next request (pipelining); an adapter that reads all the
time (asyncio) pauses reading while ``wants`` lacks WANT_READ and no body
is arriving (``in_body``), as the selector adapter simply does not read then.

States, and what the connection waits for in each (``wants``):

  HEAD     a request head (idle keep-alive, or a head arriving): readable
  BODY     the rest of a request body: readable
  APP      the application (a job) is producing output: nothing
  WRITE    the socket to take more of the response: writable
  CLOSING  the client to finish after our write side was shut: readable
  CLOSED   nothing, ever again

Deadlines (``deadline``; one at a time, by state): header_timeout from the
first byte of a head (then 408); client_timeout of no progress on a body
(408) or on a response (reset); keepalive for an idle connection (close);
LINGER_TIME for a lingering close.  A read deadline is enforced only after a
last read (LATE_READ): a sync worker busy longer than keepalive must serve
the request that waited in the socket, not reset it.
"""

from __future__ import annotations

from typing import Final, Optional, Tuple

from .parser import Limits, ProtocolError, Request, RequestParser
from .response import error_response

# States.  Constants are Final, one per line, so that compiled code inlines them.
HEAD: Final = 'head'
BODY: Final = 'body'
APP: Final = 'app'
WRITE: Final = 'write'
CLOSING: Final = 'closing'
CLOSED: Final = 'closed'

# What to wait for: the values of selectors.EVENT_READ and EVENT_WRITE.
WANT_READ: Final = 1
WANT_WRITE: Final = 2
WANTS: Final = {HEAD: WANT_READ, BODY: WANT_READ, CLOSING: WANT_READ, WRITE: WANT_WRITE,
                APP: 0, CLOSED: 0}

# Actions.
WAIT: Final = 0
REQUEST_HEAD: Final = 1
BODY_DATA: Final = 2
SEND_CONTINUE: Final = 3
REQUEST: Final = 4
SEND: Final = 5
SENDFILE: Final = 6
PRODUCE: Final = 7
FINISHED: Final = 8
REJECT: Final = 9
LATE_READ: Final = 10
LINGER: Final = 11
CLOSE: Final = 12
RESET: Final = 13
ACTIONS: Final = ("WAIT", "REQUEST_HEAD", "BODY_DATA", "SEND_CONTINUE", "REQUEST", "SEND",
                  "SENDFILE", "PRODUCE", "FINISHED", "REJECT", "LATE_READ", "LINGER", "CLOSE",
                  "RESET")

LINGER_TIME: Final = 2.0   # seconds to keep reading after our close, so our last reply is not reset

FileRange = Tuple[int, int, int]     # (fd, offset, count)


class HttpProtocol:
    """The state of one connection; see the module docstring."""

    __slots__ = ("parser", "header_timeout", "client_timeout", "keepalive", "state", "request",
                 "data", "out", "file", "status", "keep_alive", "stopping", "started",
                 "deadline", "in_body", "peer_closed", "_done", "_response_keep_alive",
                 "_rejecting", "_expect_continue", "_late", "_now")

    def __init__(self, limits: Limits, header_timeout: float, client_timeout: float,
                 keepalive: float, now: float) -> None:
        self.parser = RequestParser(limits)
        self.header_timeout = header_timeout
        self.client_timeout = client_timeout
        self.keepalive = keepalive
        self.state = HEAD
        self.request: Optional[Request] = None
        self.data = b""                    # BODY_DATA's bytes
        self.out: "bytes | memoryview" = b""   # what SEND sends
        self.file: Optional[FileRange] = None  # what SENDFILE sends
        self.status = 0                    # REJECT's status
        self.keep_alive = True             # may this request's response promise keep-alive?
        self.stopping = False
        self.started = 0.0                 # when the current request's head began
        self.deadline = now + header_timeout
        self.in_body = False               # a request body is still arriving
        self.peer_closed = False           # EOF seen while a response was under way
        self._done = False                 # the app will produce no more output
        self._response_keep_alive = False
        self._rejecting = False
        self._expect_continue = False
        self._late: Optional[float] = None    # the deadline a LATE_READ was asked for
        self._now = now

    @property
    def wants(self) -> int:
        """WANT_READ, WANT_WRITE or 0: what the socket is waited on for, in this state."""
        return WANTS[self.state]

    # -- reading requests ----------------------------------------------------

    def received(self, data: bytes, now: float) -> int:
        state = self.state
        parser = self.parser
        if state == HEAD:
            if not parser.buffered:
                self.started = now
                self.deadline = now + self.header_timeout
            parser.feed(data)
            self._now = now
            return self._next_request()
        if state == CLOSING or state == CLOSED:
            return WAIT          # dropped: we answered and said we close
        parser.feed(data)
        if self.in_body:
            self._now = now
            return self.next()
        return WAIT              # a pipelined request: it waits for this response to end

    def eof(self) -> int:
        if (self.state == APP or self.state == WRITE) and not self.in_body \
                and not self._rejecting:
            # A client may half-close after its request: it still gets its
            # response (and the requests it pipelined before the EOF).
            self.peer_closed = True
            return WAIT
        return self._close()

    def next(self, now: Optional[float] = None) -> int:
        """The next event of the request body (BODY_DATA, SEND_CONTINUE, REQUEST),
        or WAIT for more bytes, or REJECT."""
        if not self.in_body:
            return WAIT
        if now is not None:
            self._now = now
        parser = self.parser
        if self._expect_continue:
            self._expect_continue = False
            # RFC 9110 10.1.1: the client waits for it before sending the body;
            # one that sent some already does not.
            if not parser.buffered and self.state == BODY:
                return SEND_CONTINUE
        if self.data and not parser.in_body:
            done = True            # the last BODY_DATA ended the body
        else:
            try:
                data, done = parser.read_body()
            except ProtocolError as exc:
                return self._reject(exc.status)
            if data:
                self.data = data
                return BODY_DATA   # the next call finds the end, or waits for more
        if not done:
            if self.state == BODY:
                self.deadline = self._now + self.client_timeout
            return WAIT
        self.in_body = False
        self.data = b""
        if self.state == BODY:
            self.state = APP
        return REQUEST

    def _next_request(self) -> int:
        parser = self.parser
        try:
            request = parser.next_head()
        except ProtocolError as exc:
            return self._reject(exc.status)
        if request is None:
            return WAIT
        self.request = request
        # The request may ask for the close (Connection: close, HTTP/1.0);
        # a stopping server says close whatever it asked.
        self.keep_alive = request.keep_alive and not self.stopping
        if parser.in_body:
            self.state = BODY
            self.in_body = True
            self._expect_continue = request.expect_continue
            return REQUEST_HEAD
        self.state = APP
        return REQUEST

    def _reject(self, status: int) -> int:
        """Answer a request the server refuses (4xx/5xx), then close."""
        self.in_body = False
        if self.state != HEAD and self.state != BODY:
            # A response is under way (an app that answered before the body
            # ended): no second one can follow it.
            return self._close()
        self.status = status
        self.out = error_response(status)
        self.file = None
        self._done = True
        self._response_keep_alive = False
        self._rejecting = True
        return REJECT

    # -- writing responses ---------------------------------------------------

    def respond(self, data: bytes, done: bool, keep_alive: bool,
                file: Optional[FileRange] = None) -> int:
        if self.state == BODY:
            self.state = APP     # answered before its body ended: no body deadline now
        self.out = data
        self.file = file
        self._done = done
        self._response_keep_alive = keep_alive
        if data:
            return SEND
        return self._more()

    def abort(self) -> int:
        """The app failed after part of its response left: only a close can tell the client."""
        return self._close()

    def sent(self, count: int, now: float) -> int:
        out = self.out
        if count == len(out):
            self.out = b""
            if self._done and self.file is None:
                return FINISHED        # the usual response: all of it in one send
            return self._more()
        self.out = memoryview(out)[count:]
        return self._blocked(now)

    def sent_file(self, count: int, now: float, ended: bool = False) -> int:
        assert self.file is not None
        fd, offset, left = self.file
        if count == left or ended:
            self.file = None
            return self._more()
        self.file = (fd, offset + count, left - count)
        return self._blocked(now)

    def writable(self) -> int:
        return self._more()

    def _more(self) -> int:
        if self.out:
            return SEND
        if self.file is not None:
            return SENDFILE
        if self._done:
            return FINISHED
        self.state = APP
        return PRODUCE

    def _blocked(self, now: float) -> int:
        self.state = WRITE
        self.deadline = now + self.client_timeout
        return WAIT

    def finish(self, now: float) -> int:
        """The response is out: the next request, or the close the response asked for."""
        self._now = now
        parser = self.parser
        if not self._response_keep_alive or self.in_body:
            # The connection ends here.  Unless the client asked for that and
            # sent nothing more, it may still be sending (a pipelined request,
            # the rest of a body): shut our side and read until it closes, or
            # what it sends would make the kernel reset the connection before
            # our last bytes reach it.
            request = self.request
            if (self._rejecting or self.in_body or request is None or request.keep_alive
                    or parser.buffered):
                return self._linger(now)
            return self._close()     # the client asked for the close and sent nothing more
        # Stopping, but this response went out promising keep-alive (its head
        # left before the stop): the client may send again, so the connection
        # stays for one more request, which will say Connection: close.
        self.state = HEAD
        self.started = 0.0
        self.deadline = now + self.keepalive
        if parser.buffered:
            self.started = now
            self.deadline = now + self.header_timeout
            return self._next_request()
        if self.peer_closed:
            return self._close()
        return WAIT

    # -- closing -------------------------------------------------------------

    def _linger(self, now: float) -> int:
        self.state = CLOSING
        self.in_body = False
        self.deadline = now + LINGER_TIME
        return LINGER

    def _close(self) -> int:
        self.state = CLOSED
        self.in_body = False
        return CLOSE

    def close(self) -> None:
        """The adapter closed the connection (a socket error, or an action done)."""
        self.state = CLOSED
        self.in_body = False

    # -- deadlines and stopping ----------------------------------------------

    def tick(self, now: float) -> int:
        if now < self.deadline:
            return WAIT
        state = self.state
        if state == HEAD or state == BODY:
            self._late = self.deadline
            return LATE_READ
        if state == WRITE:
            self.state = CLOSED
            return RESET      # a stalled reader
        if state == CLOSING:
            return self._close()
        return WAIT           # APP: the app's time is request_timeout's business

    def expire(self) -> int:
        """After LATE_READ's read: enforce the deadline, unless the connection moved on
        (a request was served or dispatched, or a head or body progressed)."""
        state = self.state
        if (state != HEAD and state != BODY) or self.deadline != self._late:
            return WAIT
        if state == BODY or self.parser.buffered:
            return self._reject(408)
        return self._close()       # idle keep-alive

    def stop(self) -> bool:
        """Graceful stop: a connection ends after a response that says Connection: close.

        An idle keep-alive connection is not closed at once: its client may
        have sent the next request already, and closing under it would turn
        that request into an error.  Its next request is answered with
        Connection: close; if none comes, it closes at its keep-alive
        deadline.  True: a response is under way, and should say
        Connection: close if its head has not been written yet.
        """
        self.stopping = True
        self.keep_alive = False
        return (self.state == APP or self.state == WRITE) and not self._rejecting

    def hurry(self, deadline: float) -> None:
        """The worker is orphaned: if idle (or done and lingering), close by ``deadline``."""
        if self.state == CLOSING or (self.state == HEAD and not self.parser.buffered):
            self.deadline = min(self.deadline, deadline)
