"""The control socket: one JSON request and one JSON reply per line, over a unix socket.

The master owns a :class:`ControlServer` in its loop; ``prefork status``,
``reload``, ``stop`` and ``scale`` use :func:`request`.  The socket is mode
0600, so only the master's user (and root) may steer it.  A request is read
with a short timeout: a client that connects and says nothing cannot hold
the master for long.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Callable, Dict, Optional

from .. import sockets
from ..errors import BindError, PreforkError

READ_TIMEOUT = 1.0
MAX_REQUEST = 64 * 1024


class ControlServer:
    """Listens at ``path``; :meth:`handle_one` answers one client via ``respond``."""

    def __init__(self, path: str, respond: Callable[[Dict[str, Any]], Dict[str, Any]],
                 inherited: Optional[socket.socket] = None) -> None:
        self.path = os.path.abspath(path)
        self.respond = respond
        if inherited is not None:     # an old master's socket, handed over on USR2
            self.sock = inherited
            return
        try:
            sockets.remove_stale_socket(self.path, "control socket")
        except BindError as exc:    # a running master's: not a bind of ours (exit 1)
            raise PreforkError(str(exc)) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)    # created 0600: no window where others may connect
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise PreforkError(f"cannot create control socket {self.path}: {exc.strerror}") \
                from None
        finally:
            os.umask(old)
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle_one(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            conn.settimeout(READ_TIMEOUT)
            try:
                line = _read_line(conn)
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    reply: Dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
                else:
                    reply = self.respond(message)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass   # the client left or stalled; nothing to answer

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close_in_child(self) -> None:
        self.sock.close()


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise OSError("request too large")
    return data.split(b"\n", 1)[0]


def request(path: str, message: Dict[str, Any], timeout: float = 10.0) -> Dict[str, Any]:
    """Send one request to the master at ``path`` and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(sock)
        except OSError as exc:
            raise PreforkError(f"cannot reach the master at {path}: "
                               f"{exc.strerror or exc}") from None
    try:
        return json.loads(line)
    except ValueError:
        raise PreforkError(f"the master at {path} sent no valid reply") from None
