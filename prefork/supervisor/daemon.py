"""Detaching into the background, with a readiness pipe back to the launching command.

The launching process forks; the child enters python-daemon's
``DaemonContext`` (which detaches it from the terminal and session) and
becomes the master.  The launcher waits on a pipe: the master writes
``ok`` once its workers are ready, or ``fail STATUS MESSAGE`` when start-up
fails; an EOF with neither means the daemon died.  So the command an
operator (or an init script) ran returns 0 only when the server serves.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import daemon

from .. import log
from ..errors import EXIT_FAILURE, EXIT_OK


class Readiness:
    """The daemon's end of the pipe; both methods are safe to call more than once."""

    def __init__(self, fd: Optional[int]) -> None:
        self.fd = fd

    def ok(self) -> None:
        self._send("ok\n")

    def fail(self, status: int, message: str) -> None:
        self._send(f"fail {status} {message}\n")

    def close_in_child(self) -> None:
        """A worker must not hold the launcher's pipe open."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _send(self, text: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, text.encode("utf-8", "replace"))
        except OSError:
            pass   # the launcher is gone (killed); the daemon carries on
        os.close(self.fd)
        self.fd = None


NOT_DAEMON = Readiness(None)


def detach(preserve: List[int], stderr_is_log: bool) -> Readiness:
    """Fork and detach.  Returns in the daemon; the launcher exits with the outcome."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        os.close(write_end)
        status, message = _wait(read_end)
        if message:
            log.console(f"prefork: error: {message}")
        os._exit(status)
    os.close(read_end)
    context = daemon.DaemonContext(
        files_preserve=preserve + [write_end],
        working_directory=os.getcwd(),   # relative paths keep meaning what they meant
        umask=_current_umask(),          # --umask was applied already; keep it
        detach_process=True,
        signal_map={},                   # the master installs its own handlers
        stderr=sys.stderr if stderr_is_log else None,
    )
    context.open()
    return Readiness(write_end)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _wait(fd: int) -> tuple:
    data = b""
    while b"\n" not in data:     # one line, not EOF: workers may hold the pipe too
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return parse_outcome(data)


def parse_outcome(data: bytes, who: str = "the daemon") -> tuple:
    """(status, message) from what a :class:`Readiness` wrote: (0, "") for ok."""
    text = data.decode("utf-8", "replace").strip()
    if text == "ok":
        return EXIT_OK, ""
    if text.startswith("fail "):
        _, status, message = (text.split(" ", 2) + [""])[:3]
        return int(status) if status.isdigit() else EXIT_FAILURE, message
    return EXIT_FAILURE, f"{who} exited before its workers were ready (see the error log)"
