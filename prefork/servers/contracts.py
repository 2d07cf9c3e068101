"""The contracts between a worker's serve loop and the servers it drives.

Imports run one way: the worker's loop (:mod:`prefork.worker.loop`) imports
the servers, never the reverse.  What a server, a connection or a handler's
socket needs from the loop is named here, as :class:`typing.Protocol`
classes, and the loop satisfies them by shape.  A new loop (the asyncio
worker) implements the same contracts; a new server implements
:class:`StreamServer` or :class:`PacketServer`.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
from typing import Any, Callable, Optional, Protocol, Tuple

Job = Callable[[], None]
Describe = Callable[[], str]   # names the request a job runs, for request_timeout's log line


class RequestTimer(Protocol):
    """request_timeout's clock as a handler's socket sees it: waiting for the client
    does not count as running."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Parked(Protocol):
    """A connection that waits in the loop's selector between its events (HTTP)."""

    def tick(self, now: float) -> None:
        """Enforce deadlines; called about twice a second."""

    def stop(self) -> None:
        """Graceful stop: finish the current request, then close."""

    def hurry(self, deadline: float) -> None:
        """The master is gone: if idle, close by ``deadline``."""


class Loop(Protocol):
    """What servers and their connections may ask of the worker's loop."""

    selector: selectors.BaseSelector
    multithread: bool                    # jobs run on a pool of threads
    inflight: Optional[Any]              # show_requests' tracker, or None when off

    def run_job(self, job: Job, on_done: Optional[Job] = None, counts: bool = True,
                what: Optional[Describe] = None) -> None:
        """Run ``job`` (inline or on a thread); ``on_done`` follows in the loop's thread.
        ``counts``: it serves one request; ``what``: names it for request_timeout."""

    def park(self, connection: Parked) -> None: ...

    def forget(self, connection: Parked) -> None: ...


class AsyncLoop(Protocol):
    """What servers on the asyncio worker (ASGI) may ask of its loop.

    Connections are ``asyncio.Protocol`` objects parked here for their
    deadlines and the graceful stop; a request is a task, counted between
    :meth:`request_started` and :meth:`request_finished` (scoreboard,
    max_requests, and a graceful stop waits for it).
    """

    loop: asyncio.AbstractEventLoop

    def park(self, connection: Parked) -> None: ...

    def forget(self, connection: Parked) -> None: ...

    def request_started(self, request: Any = None) -> None:
        """``request`` (with a ``shown_as()``) is what top and status show it running."""

    def request_finished(self, request: Any = None) -> None: ...


class StreamServer(Protocol):
    """One listener's server on a stream socket: the loop accepts, the server serves."""

    socket: socket.socket
    accept_batch: int         # connections to accept per wake-up; 0: the dispatcher's

    def accepted(self, conn: socket.socket, address: Any, loop: Any) -> None:
        """``loop``: a :class:`Loop`, or an :class:`AsyncLoop` for an asyncio server."""

    def close_idle(self, min_wait: float) -> None:
        """Graceful stop: end connections idle for at least ``min_wait`` seconds."""

    def server_close(self) -> None: ...


class PacketServer(Protocol):
    """One listener's server on a datagram socket: readable means a request is waiting."""

    socket: socket.socket
    datagram: bool            # True: the loop reads requests instead of accepting

    def get_request(self) -> Tuple[Any, Any]: ...

    def received(self, request: Any, address: Any, loop: Loop) -> None: ...

    def close_idle(self, min_wait: float) -> None: ...

    def server_close(self) -> None: ...
