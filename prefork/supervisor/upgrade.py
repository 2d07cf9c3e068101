"""USR2: the master re-executes itself and hands its sockets to the new master.

The old master forks and execs the command line it was started with (the
interpreter path is looked up again, so a rebuilt virtual environment
brings a new interpreter).  Across the exec the new master inherits the
listening sockets, the pidfile's lock, the control socket, the metrics
socket and the write end of a readiness pipe; the environment variable
``PREFORK_UPGRADE`` says which fd is which.  It binds nothing that it
inherited, so not one connection is refused while two masters run.

The old master keeps serving and watches the pipe (:class:`Upgrade`).  The
new master writes ``ok`` there once its first generation is ready and its
PID is in the pidfile; the old master then hands over and stops gracefully
by itself.  ``fail STATUS MESSAGE``, an EOF, the new master's exit or
``upgrade_timeout`` mean the upgrade failed: the old master serves on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .daemon import parse_outcome
from .health import describe_exit

logger = logging.getLogger("prefork")

ENV = "PREFORK_UPGRADE"
KILL_GRACE = 5.0    # seconds a new master told to QUIT gets before KILL

# Where the operator launched prefork: --chdir moves the master, but the
# command line's relative paths (-c etc/prefork.toml) mean this directory.
launch_directory = os.getcwd()


@dataclass
class Inheritance:
    """What a new master got from the old one, as open fds."""

    listeners: List[Tuple[int, str]] = field(default_factory=list)   # (fd, bind text)
    activated: bool = False      # the listeners came from systemd: 'bind' does not apply
    pidfile: Optional[int] = None
    control: Optional[int] = None
    metrics: Optional[int] = None
    ready: Optional[int] = None
    parent: int = 0
    generation: int = 0          # the old master's last generation number

    def fds(self) -> List[int]:
        extra = [self.pidfile, self.control, self.metrics, self.ready]
        return [fd for fd, _ in self.listeners] + [fd for fd in extra if fd is not None]

    def encode(self) -> str:
        return json.dumps(self.__dict__)


def inherited() -> Optional[Inheritance]:
    """The new master's inheritance, or None when this is a first start.

    The variable is removed, so that no worker or later upgrade sees it.
    """
    text = os.environ.pop(ENV, "")
    if not text:
        return None
    try:
        data = json.loads(text)
        inheritance = Inheritance(**data)
        inheritance.listeners = [(int(fd), str(name)) for fd, name in inheritance.listeners]
        for fd in inheritance.fds():
            os.fstat(fd)
            os.set_inheritable(fd, False)
    except (ValueError, TypeError, OSError) as exc:
        raise SystemExit(f"prefork: error: bad {ENV} from the old master: {exc}")
    return inheritance


def command_line() -> List[str]:
    """The argv to exec: what started this master, the interpreter looked up anew."""
    argv = list(getattr(sys, "orig_argv", []))       # Python >= 3.10
    if not argv:
        main = sys.argv[0]
        argv = [sys.executable] + (["-m", "prefork"] + sys.argv[1:]
                                   if main.endswith("__main__.py") else sys.argv)
    program = argv[0]
    if os.sep not in program:
        program = shutil.which(program) or sys.executable
    return [program] + argv[1:]


class Upgrade:
    """The old master's view of one upgrade in progress."""

    def __init__(self, pid: int, read_fd: int, timeout: float) -> None:
        self.pid = pid
        self.read_fd = read_fd
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.killed_at: Optional[float] = None
        self._data = b""

    @classmethod
    def begin(cls, why: str, inheritance: Inheritance, timeout: float,
              signals: Sequence[int]) -> Optional["Upgrade"]:
        """Start the new master (None, logged, if that fails).

        ``signals`` are the master's own: blocked across the fork so that none
        reaches the child while it still has the master's handlers.
        """
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            upgrade = cls.start(inheritance, timeout, signals)
        except OSError as exc:
            logger.error("%s: upgrade failed: cannot fork: %s", why, exc.strerror)
            return None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        logger.info("%s: upgrading: started a new master, PID %d", why, upgrade.pid)
        return upgrade

    @classmethod
    def start(cls, inheritance: Inheritance, timeout: float,
              blocked: Sequence[int] = ()) -> "Upgrade":
        """Fork and exec the new master; OSError if the fork fails.

        ``blocked`` signals are blocked in the master; the child unblocks
        them, since a signal mask survives exec.
        """
        read_fd, write_fd = os.pipe()
        inheritance.ready, inheritance.parent = write_fd, os.getpid()
        argv = command_line()
        env = dict(os.environ, **{ENV: inheritance.encode()})
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            _exec_new_master(argv, env, inheritance.fds(), read_fd, blocked)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        return cls(pid, read_fd, timeout)

    def fileno(self) -> int:
        return self.read_fd

    def poll(self, readable: bool, now: float) -> bool:
        """True once the new master is ready.  A failure is logged; a new master
        past ``upgrade_timeout`` is told to QUIT, then KILLed."""
        outcome = self.read() if readable and self.read_fd >= 0 else None
        if outcome is not None and outcome[0] == 0:
            return True
        if outcome is not None:
            self._failed(outcome[1])
            self.close()    # its exit is still reaped; only the pipe is done
        sig = self.overdue(now)
        if sig is not None:
            logger.error("upgrade: the new master %d is not ready after %.0f s; sending %s",
                         self.pid, self.timeout, signal.Signals(sig).name)
            self._kill(sig)
        return False

    def exited(self, code: int) -> None:
        """The new master exited before it was ready."""
        if self.read_fd >= 0:
            status, message = self.read() or (code, "")
            self._failed(message or f"the new master {describe_exit(code)}")
        self.close()

    def abandon(self) -> None:
        """The old master stops: the new one must not come up after it left."""
        logger.warning("stopping: the upgrade is abandoned; sending SIGQUIT to the new "
                       "master %d", self.pid)
        self._kill(signal.SIGQUIT)
        self.close()

    def _failed(self, reason: str) -> None:
        logger.error("upgrade failed: %s; this master (PID %d) keeps serving",
                     reason, os.getpid())

    def _kill(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def read(self) -> Optional[Tuple[int, str]]:
        """(status, message) once the new master has said how it went (0 = ready)."""
        while True:
            try:
                chunk = os.read(self.read_fd, 4096)
            except BlockingIOError:
                return parse_outcome(self._data) if b"\n" in self._data else None
            if not chunk:
                return parse_outcome(self._data, who="the new master")
            self._data += chunk

    def overdue(self, now: float) -> Optional[int]:
        """The signal to send when the new master takes too long, if one is due."""
        if self.killed_at is None and now >= self.deadline:
            self.killed_at = now
            return signal.SIGQUIT
        if self.killed_at is not None and now >= self.killed_at + KILL_GRACE:
            self.killed_at = float("inf")
            return signal.SIGKILL
        return None

    def close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


def _exec_new_master(argv: List[str], env: Dict[str, str], fds: List[int],
                     read_fd: int, blocked: Sequence[int]) -> None:
    """In the forked child: never returns."""
    try:
        os.close(read_fd)
        for fd in fds:
            os.set_inheritable(fd, True)
        for fd in (0, 1, 2):
            # python-daemon may leave /dev/null on 0 and 1 close-on-exec (it
            # opened it onto the very fds it had just closed): keep them open.
            try:
                os.set_inheritable(fd, True)
            except OSError:
                pass
        for sig in blocked:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        os.chdir(launch_directory)
        os.execve(argv[0], argv, env)
    except BaseException as exc:   # the old master sees the EOF and keeps serving
        try:
            os.write(2, f"prefork: error: cannot exec {argv[0]}: {exc}\n".encode())
        finally:
            os._exit(127)


def listener_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock
