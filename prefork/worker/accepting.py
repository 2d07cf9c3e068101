"""Accepting connections, the same in every worker loop (selector and asyncio).

Which ``accept()`` errors are a lost race or a client gone (keep going),
which mean the process is out of file descriptors (pause accepting for a
moment, rather than spin on a listener that stays readable), how many
connections a graceful stop drains, and how a shared listener is waited on
with EPOLLEXCLUSIVE.
"""

from __future__ import annotations

import errno
import logging
import select
import selectors
import socket
from typing import Any, Callable, Tuple

from ..sockets import accept_queue_length

logger = logging.getLogger("prefork")

FD_PAUSE = 0.5       # seconds to stop accepting after running out of file descriptors
DRAIN_UNKNOWN = 64   # connections to drain where the OS does not report its queue
# accept() errors that mean "this connection is gone" or "try later", not a bug.
TRANSIENT_ACCEPT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}
OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)

Accept = Callable[[], Tuple[socket.socket, Any]]


def accept_batch(accept: Accept, batch: int, has_room: Callable[[], bool],
                 serve: Callable[[socket.socket, Any], None]) -> bool:
    """Accept up to ``batch`` connections while ``has_room()``, handing each to ``serve``.

    False: out of file descriptors (logged); the caller stops listening for
    FD_PAUSE seconds.  Any other error than the transient ones is a bug and
    propagates.
    """
    while batch > 0 and has_room():
        try:
            conn, address = accept()
        except BlockingIOError:
            return True   # another worker won the race, or the queue is empty
        except OSError as exc:
            if exc.errno in TRANSIENT_ACCEPT:
                continue
            if exc.errno in OUT_OF_FDS:
                logger.error("accept failed: %s; pausing accepts for a moment", exc.strerror)
                return False
            raise
        batch -= 1
        try:
            serve(conn, address)
        except OSError:
            conn.close()   # the client left between accept and here
    return True


def drain_size(sock: socket.socket) -> int:
    """How many connections a graceful stop accepts: those queued when it began."""
    queued = accept_queue_length(sock)
    return DRAIN_UNKNOWN if queued is None else queued


def wake_one(selector: Any, sock: Any) -> bool:
    """Wait on a shared listener with EPOLLEXCLUSIVE (Linux >= 4.5), if possible.

    Every worker waits on the same socket; without the flag, each connection
    wakes all of them and all but one find nothing to accept (the thundering
    herd).  With it the kernel wakes one worker that is waiting in epoll, so a
    busy worker is passed over.  The selectors module has no word for the
    flag, so the fd is registered again on its epoll object directly; the
    flag cannot be added with a modify.  ``selector``: a selectors.EpollSelector
    (asyncio's default loop has one; uvloop does not, and gets no flag).
    """
    epoll = getattr(selector, "_selector", None)
    if not EPOLLEXCLUSIVE or not isinstance(selector, selectors.BaseSelector) \
            or not isinstance(epoll, select.epoll):
        return False
    fd = sock.fileno()
    epoll.unregister(fd)
    epoll.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)
    return True
