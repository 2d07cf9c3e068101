"""One request per connection, answered from the master's own select loop.

The master has one thread and one loop that also reaps and replaces
workers, so a server it runs must never block: the listening socket and
every client are non-blocking, each client gets :attr:`OneShotServer.deadline`
seconds from accept to the last byte of its answer, what it sends is capped
at :attr:`OneShotServer.max_request` bytes, and at most
:attr:`OneShotServer.max_clients` are held at once.  The master selects on
:meth:`OneShotServer.waiting` and hands what is ready to
:meth:`OneShotServer.handle`.

A subclass says when a request is complete (:meth:`OneShotServer.complete`)
and what the answer is (:meth:`OneShotServer.answer`,
:meth:`OneShotServer.too_large`).  The metrics endpoint and the control
socket are the two.

When every place is taken, one of two policies applies
(:attr:`OneShotServer.evict_oldest`):

- false: the listener is not watched until a client leaves or reaches its
  deadline; newcomers wait in the kernel's backlog (the metrics endpoint:
  a scraper that waits a few seconds loses nothing);
- true: a newcomer is accepted at once and read at once.  A real client
  writes its request right after connecting, so it is usually answered in
  that same turn and never held.  Only if it must be held too is the
  client held longest (the closest to its deadline) closed to make room,
  one still sending its request before one being answered.  So clients
  that keep silent are closed early, and only while newcomers keep coming
  (the control socket: ``prefork status`` must answer however many stuck
  clients sit on it).  Its limit: more clients than the cap that reconnect
  as soon as they are closed turn the held ones over quickly, and a real
  client slow to write its request after connecting may be closed first.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("prefork")

# Read at most this much per recv: one turn of the loop takes a bounded bite, and
# an inbox never exceeds max_request by more.  Not trimmed to what is left below
# max_request: a request a little too large is then read whole, so closing after
# the refusal finds nothing unread, which over TCP would reset the connection
# and lose the answer.
READ_SIZE = 16384


class _Client:
    """One accepted connection: what it sent so far, what is left to send."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        # bytearray: a client sending one byte at a time costs O(1) per byte, not O(n).
        self.inbox = bytearray()
        self.outbox: Optional[memoryview] = None    # None while the request is arriving


class OneShotServer:
    """Serve ``sock`` (listening; made non-blocking here), one request per connection."""

    what = "server"            # names this server in log lines
    max_clients = 8
    max_request = 8192
    deadline = 5.0             # seconds from accept to the last byte of the answer
    evict_oldest = False       # when full: wait in the backlog (False) or close the oldest

    def __init__(self, sock: socket.socket, clock: Callable[[], float] = time.monotonic) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.clock = clock
        self._clients: Dict[socket.socket, _Client] = {}   # in accept order: oldest first

    # -- what a subclass says -------------------------------------------------

    def complete(self, inbox: bytearray, eof: bool) -> bool:
        """Whether ``inbox`` holds a whole request; ``eof``: the client sends no more."""
        raise NotImplementedError

    def answer(self, inbox: bytes) -> bytes:
        """The whole answer to the complete request at the start of ``inbox``."""
        raise NotImplementedError

    def too_large(self) -> bytes:
        """The answer to a request over :attr:`max_request` (empty: just close)."""
        return b""

    # -- what the master calls ------------------------------------------------

    def fileno(self) -> int:
        """The listening socket's fd (what a new master would inherit)."""
        return self.sock.fileno()

    def waiting(self) -> Tuple[List[socket.socket], List[socket.socket]]:
        """(sockets to watch for reading, for writing); the listener only while there is
        room, or always when newcomers may close the oldest."""
        reading = [c.sock for c in self._clients.values() if c.outbox is None]
        writing = [c.sock for c in self._clients.values() if c.outbox is not None]
        if self.evict_oldest or len(self._clients) < self.max_clients:
            reading.append(self.sock)
        return reading, writing

    def handle(self, readable: Sequence[object], writable: Sequence[object]) -> None:
        """Serve what select reported, drop clients past their deadline, then accept."""
        # Held clients first: one whose request has just arrived is answered before
        # a newcomer could close it to make room.
        for client in list(self._clients.values()):
            if client.outbox is None and client.sock in readable:
                self._read(client)
            elif client.outbox is not None and client.sock in writable:
                self._write(client)
        now = self.clock()
        for client in list(self._clients.values()):
            if now > client.deadline:
                self._drop(client)
        if self.sock in readable:
            self._accept()

    def next_deadline(self) -> Optional[float]:
        """When the client held longest must be closed, if any is held: the master's
        wait ends then, so a silent client is closed on time, not up to a tick late."""
        return min((c.deadline for c in self._clients.values()), default=None)

    def held(self) -> int:
        """How many clients are held now."""
        return len(self._clients)

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        self.sock.close()

    def close_in_child(self) -> None:
        """In a forked child: let go of the fds.  Closing our copies touches neither the
        parent's connections nor (for a unix socket) the file at its path."""
        for client in self._clients.values():
            client.sock.close()
        self._clients.clear()
        self.sock.close()

    # -- one client -----------------------------------------------------------

    def _accept(self) -> None:
        # Bounded: a flood of connections cannot keep one turn of the loop here.
        for _ in range(self.max_clients):
            if len(self._clients) >= self.max_clients and not self.evict_oldest:
                return        # the rest wait in the backlog
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # e.g. EMFILE: leave it in the backlog for now
                logger.warning("%s: cannot accept: %s", self.what, exc.strerror or exc)
                return
            conn.setblocking(False)
            client = _Client(conn, self.clock() + self.deadline)
            self._clients[conn] = client
            # A client usually wrote its request right after connecting: answered
            # in this turn, it is never held (nor evicted by a later newcomer).
            self._read(client)
            if len(self._clients) > self.max_clients:
                self._drop(self._oldest())    # only for a newcomer that is held

    def _oldest(self) -> _Client:
        """The client to close for a newcomer: the longest held, one still sending first."""
        for client in self._clients.values():
            if client.outbox is None:
                return client
        return next(iter(self._clients.values()))

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if data:
            client.inbox += data
        inbox = client.inbox
        if len(inbox) > self.max_request:
            answer = self.too_large()
        elif self.complete(inbox, eof=not data):
            answer = self.answer(bytes(inbox))
        elif not data:      # gone (or half-closed) before a whole request
            self._drop(client)
            return
        else:
            return
        client.inbox = bytearray()
        if not answer:
            self._drop(client)
            return
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
