"""The pidfile: the master's PID, locked with flock for as long as the master lives.

The lock, not the file's existence, says whether an instance runs: a file
left by a crash has no lock holder and is simply taken over; a locked one
makes a second start fail with the PID of the first.  The lock belongs to
the open file description, so it survives the fork into a daemon and is
released by the kernel when the last holder dies, however it dies.
"""

from __future__ import annotations

import fcntl
import os
from typing import Optional

from ..errors import PreforkError


class AlreadyRunning(PreforkError):
    """Another master holds the pidfile."""


class PidFile:
    """``acquire()`` before binding; ``write(pid)`` once the PID is final; ``remove()`` on stop."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.fd: Optional[int] = None
        self.owned = False     # ours to unlink: we made it, or our PID is in it

    @classmethod
    def adopt(cls, path: str, fd: int) -> "PidFile":
        """Take over an old master's locked file (USR2): the lock belongs to the
        open file description, which the new master inherited.  Not ours to
        unlink until :meth:`write` puts our PID in it."""
        pidfile = cls(path)
        pidfile.fd = fd
        return pidfile

    def acquire(self) -> None:
        """Lock the file, creating it if needed; AlreadyRunning if it is held."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise PreforkError(f"cannot open pidfile {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read(fd)
                os.close(fd)
                holder = f" (pid {pid})" if pid else ""
                raise AlreadyRunning(f"prefork is already running{holder}: pidfile "
                                     f"{self.path} is locked") from None
            # The holder may have removed the file between our open and lock:
            # then we locked an orphan inode and must start over.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd, self.owned = fd, True
                return
            os.close(fd)

    def write(self, pid: int) -> None:
        assert self.fd is not None, "acquire() first"
        data = f"{pid}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)   # one small write: readers see all of it or nothing
        os.fsync(self.fd)
        self.owned = True

    def remove(self) -> None:
        """Unlink the file (while still holding the lock) and release it."""
        if self.fd is None:
            return
        if self.owned:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None

    def release(self) -> None:
        """Close without removing (a process that is not the master)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def take(path: str, inherited_fd: Optional[int] = None) -> Optional[PidFile]:
    """The master's pidfile for ``path`` ('' = none), locked.

    ``inherited_fd`` is an old master's locked pidfile (USR2): adopted when it
    is the same file, else closed so the old lock is not kept by mistake.
    """
    if inherited_fd is not None:
        try:
            same = bool(path) and os.path.samestat(os.fstat(inherited_fd), os.stat(path))
        except OSError:
            same = False
        if same:
            return PidFile.adopt(path, inherited_fd)
        os.close(inherited_fd)
    if not path:
        return None
    pidfile = PidFile(path)
    pidfile.acquire()
    return pidfile


def read_pid(path: str) -> int:
    """The PID of the master behind ``path``; PreforkError if none is running."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PreforkError(f"cannot read pidfile {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read(fd)
            if pid:
                return pid
            raise PreforkError(f"pidfile {path} holds no PID") from None
        raise PreforkError(f"prefork is not running: pidfile {path} is not locked (stale)")
    finally:
        os.close(fd)


def _read(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (ValueError, OSError):
        return 0
