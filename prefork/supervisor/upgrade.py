"""USR2: the master re-executes itself and hands its sockets to the new master.

The old master forks and execs the command line it was started with (the
interpreter path is looked up again, so a rebuilt virtual environment
brings a new interpreter).  Across the exec the new master inherits the
listening sockets, the pidfile's lock, the control socket, the metrics
socket and the write end of a readiness pipe; the environment variable
``PREFORK_UPGRADE`` says which fd is which (and ``PREFORK_UPGRADE_HISTORY``
carries the request-rate samples of ``/status``).  It binds nothing that it
inherited, so not one connection is refused while two masters run.

The old master keeps serving and watches the pipe (:class:`Upgrade`).  The
new master writes ``ok`` there once its first generation is ready and its
PID is in the pidfile; the old master then hands over and stops gracefully
by itself.  ``fail STATUS MESSAGE``, an EOF, the new master's exit or
``upgrade_timeout`` mean the upgrade failed: the old master serves on.
This module does the fork, the exec and the reading; what follows from
them (the timeout, QUIT and KILL, the hand-over) is decided in
:mod:`.successor`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .daemon import parse_outcome

ENV = "PREFORK_UPGRADE"
# /status's history goes apart from ENV: a new master of an older version (a
# rollback) refuses fields it does not know in ENV, but ignores this one.
HISTORY_ENV = "PREFORK_UPGRADE_HISTORY"


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
    history: List[List[float]] = field(default_factory=list)   # /status's samples

    def fds(self) -> List[int]:
        extra = [self.pidfile, self.control, self.metrics, self.ready]
        return [fd for fd, _ in self.listeners] + [fd for fd in extra if fd is not None]

    def encode(self) -> Dict[str, str]:
        """The environment variables that carry it."""
        fields = dict(self.__dict__)
        history = fields.pop("history")
        return {ENV: json.dumps(fields), HISTORY_ENV: json.dumps(history)}


def inherited() -> Optional[Inheritance]:
    """The new master's inheritance, or None when this is a first start.

    The variable is removed, so that no worker or later upgrade sees it.
    """
    text = os.environ.pop(ENV, "")
    history = _history(os.environ.pop(HISTORY_ENV, ""))
    if not text:
        return None
    try:
        data = json.loads(text)
        # What a newer master bequeathed beyond these fields is left: a USR2
        # back to this version must still work.
        data.pop("history", None)
        inheritance = Inheritance(**{key: value for key, value in data.items()
                                     if key in Inheritance.__dataclass_fields__}, history=history)
        inheritance.listeners = [(int(fd), str(name)) for fd, name in inheritance.listeners]
        for fd in inheritance.fds():
            os.fstat(fd)
            os.set_inheritable(fd, False)
    except (ValueError, TypeError, OSError) as exc:
        raise SystemExit(f"prefork: error: bad {ENV} from the old master: {exc}")
    return inheritance


def _history(text: str) -> List[List[float]]:
    """The bequeathed /status samples; none if they are not what this version
    writes (a chart is not worth refusing an upgrade for)."""
    try:
        samples = json.loads(text) if text else []
    except ValueError:
        return []
    if isinstance(samples, list) and all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(v, (int, float)) for v in s)
            for s in samples):
        return samples
    return []


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
    """The old master's handle on the new master it started: its PID and its pipe."""

    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid = pid
        self.read_fd = read_fd     # -1 once the new master has said how it went
        self._data = b""

    @classmethod
    def start(cls, inheritance: Inheritance, directory: str,
              blocked: Sequence[int] = ()) -> "Upgrade":
        """Fork and exec the new master in ``directory``; OSError if the fork fails.

        ``directory`` is where the operator launched prefork: --chdir moved
        this master, but the command line's relative paths (-c
        etc/prefork.toml) mean that directory.  ``blocked`` are the master's
        own signals: blocked across the fork, so that none reaches the child
        while it still has the master's handlers, and unblocked in the child,
        since a signal mask survives exec.
        """
        read_fd, write_fd = os.pipe()
        inheritance.ready, inheritance.parent = write_fd, os.getpid()
        argv = command_line()
        env = dict(os.environ, **inheritance.encode())
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            _exec_new_master(argv, env, inheritance.fds(), read_fd, blocked, directory)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        return cls(pid, read_fd)

    def fileno(self) -> int:
        return self.read_fd

    def read(self) -> Optional[Tuple[int, str]]:
        """(status, message) once the new master has said how it went (0 = ready),
        or its pipe closed; None while it has not.  The pipe is closed then."""
        outcome = None
        while self.read_fd >= 0 and outcome is None:
            try:
                chunk = os.read(self.read_fd, 4096)
            except BlockingIOError:
                if b"\n" not in self._data:
                    return None
                outcome = parse_outcome(self._data)
            else:
                self._data += chunk
                if not chunk:
                    outcome = parse_outcome(self._data, who="the new master")
        self.close()
        return outcome

    def close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


def _exec_new_master(argv: List[str], env: Dict[str, str], fds: List[int],
                     read_fd: int, blocked: Sequence[int], directory: str) -> None:
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
        os.chdir(directory)
        os.execve(argv[0], argv, env)
    except BaseException as exc:   # the old master sees the EOF and keeps serving
        try:
            os.write(2, f"prefork: error: cannot exec {argv[0]}: {exc}\n".encode())
        finally:
            os._exit(127)
