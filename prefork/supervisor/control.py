"""The control socket: one JSON request and one JSON reply per line, over a unix socket.

The master owns a :class:`ControlServer` in its loop; ``prefork status``,
``reload``, ``stop`` and ``scale`` use :func:`request`.  The socket is mode
0600, so only the master's user (and root) may steer it.

The master reads it without ever blocking, as it serves ``/metrics``: it is
a :class:`~.oneshot.OneShotServer`, so every client is non-blocking and is
closed :data:`CLIENT_DEADLINE` seconds after it was accepted, answered or
not; a request is capped at :data:`MAX_REQUEST` bytes.  A client that
connects and says nothing, or sends one byte at a time, holds neither
supervision nor any other client.

At most :data:`MAX_CLIENTS` are held at once.  When that many sit silent,
a newcomer is still accepted and read at once (``evict_oldest``):
``prefork status`` writes its request right after connecting, so it is
answered in the turn it is accepted, however many stuck clients there are;
only a newcomer that must be held too closes the one held longest.
Waiting in the backlog instead would make it wait for a silent client's
deadline, and a backlog of silent clients could fill the kernel's queue so
that ``connect`` itself fails (a unix socket's at once, with EAGAIN:
:func:`request` then tries again until its timeout).  The accept loop takes
what is waiting each turn (up to :data:`MAX_CLIENTS`), so the backlog
(:data:`BACKLOG`) only has to absorb one turn's arrivals.  A client
whose request came late in a flood of newcomers can still be the one
closed: :func:`request` asks a read-only command again (twice more).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any, Callable, Dict, Optional

from .. import sockets
from ..errors import BindError, PreforkError
from .oneshot import OneShotServer

logger = logging.getLogger("prefork")

MAX_REQUEST = 64 * 1024
MAX_CLIENTS = 32
CLIENT_DEADLINE = 2.0     # seconds from accept to the reply's last byte: all a local client needs
BACKLOG = 64
MAX_REPLY = 4 * 1024 * 1024   # what the client reads: a status of 1024 workers is far below
BESIDE = ".ctl"    # the control socket beside a pidfile P is P.ctl


def beside(pidfile: str) -> str:
    """Where a master with ``pidfile`` answers: its control socket, or (when
    ``control_socket`` names another path) a symlink to that socket."""
    return pidfile + BESIDE


class Unreachable(PreforkError):
    """Nothing listens at the path: no such socket, or its master is gone."""


class ControlServer(OneShotServer):
    """Listens at ``path``; each request line is answered with ``respond(request)``."""

    what = "control socket"
    max_clients = MAX_CLIENTS
    max_request = MAX_REQUEST
    deadline = CLIENT_DEADLINE
    evict_oldest = True    # see the module docstring

    def __init__(self, path: str, respond: Callable[[Dict[str, Any]], Dict[str, Any]],
                 inherited: Optional[socket.socket] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = os.path.abspath(path)
        self.respond = respond
        # An old master's socket, handed over on USR2, is already bound and listening.
        super().__init__(inherited if inherited is not None else _bind(self.path), clock)

    def complete(self, inbox: bytearray, eof: bool) -> bool:
        # A line; or, from a client that half-closed, whatever it sent.
        return b"\n" in inbox or (eof and bool(inbox))

    def answer(self, inbox: bytes) -> bytes:
        line = inbox.split(b"\n", 1)[0]
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            reply: Dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
        else:
            try:
                reply = self.respond(message)
            except Exception as exc:    # a bug in one answer must not end the master
                logger.exception("control socket: answering %r failed", message.get("cmd"))
                reply = {"ok": False, "error": f"the master failed to answer: {exc}"}
        return json.dumps(reply).encode() + b"\n"

    def too_large(self) -> bytes:
        return json.dumps({"ok": False, "error": f"request over {MAX_REQUEST} bytes"}) \
            .encode() + b"\n"

    def close(self) -> None:
        """At the owner's exit: the socket file goes too."""
        super().close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _bind(path: str) -> socket.socket:
    try:
        sockets.remove_stale_socket(path, "control socket")
    except BindError as exc:    # a running master's: not a bind of ours (exit 1)
        raise PreforkError(str(exc)) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)    # created 0600: no window where others may connect
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise PreforkError(f"cannot create control socket {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock


def _connect(sock: socket.socket, path: str, deadline: float) -> None:
    """Connect, waiting while the master's backlog is full: a unix socket's connect
    with a timeout fails at once with EAGAIN then, where TCP would wait."""
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _read_line(conn: socket.socket) -> bytes:
    """The client's side: blocking, under the socket's timeout."""
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REPLY:
            raise OSError("reply too large")
    return data.split(b"\n", 1)[0]


# Asking these twice changes nothing: a status request the master dropped to
# make room for others (see the module docstring) is asked again.
READ_ONLY = frozenset({"status"})
ATTEMPTS = 3


def request(path: str, message: Dict[str, Any], timeout: float = 10.0) -> Dict[str, Any]:
    """Send one request to the master at ``path`` and return its reply."""
    attempts = ATTEMPTS if message.get("cmd") in READ_ONLY else 1
    for attempt in range(1, attempts + 1):
        try:
            return _request_once(path, message, timeout)
        except _Dropped as exc:
            if attempt == attempts:
                raise PreforkError(str(exc)) from None
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


class _Dropped(PreforkError):
    """The master closed the connection before it replied."""


def _request_once(path: str, message: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            _connect(sock, path, time.monotonic() + timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise Unreachable(f"cannot reach the master at {path}: {exc.strerror}") from None
        except OSError as exc:
            raise PreforkError(f"cannot reach the master at {path}: "
                               f"{exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(sock)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _Dropped(f"cannot reach the master at {path}: {exc.strerror}") from None
        except OSError as exc:
            raise PreforkError(f"cannot reach the master at {path}: "
                               f"{exc.strerror or exc}") from None
        if not line:
            raise _Dropped(f"the master at {path} closed the connection without a reply")
    try:
        return json.loads(line)
    except ValueError:
        raise PreforkError(f"the master at {path} sent no valid reply") from None
