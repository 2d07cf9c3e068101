"""Masters started with ``--daemon``, and the steering commands run against them.

A daemonized master is not a child of the test (it detached, its parent is
init), so Popen cannot wait for it or kill it.  :class:`Daemon` remembers
every master PID its pidfile named and the workers seen under it, with
their start times, and the ``daemon`` fixture KILLs them by PID at teardown
if ``/proc/PID/cmdline`` still says prefork and the start time still matches.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

import pytest

from harness import DEFAULT_DEADLINE, _is_prefork, pid_alive, run_prefork

ECHO = "prefork.examples.echo:UpperEchoHandler"


class Daemon:
    """One pidfile + error log in ``workdir``; ``start()`` may be called more than once."""

    def __init__(self, workdir: Path, name: str = "prefork") -> None:
        self.workdir = workdir
        self.pidfile = workdir / f"{name}.pid"
        self.error_log = workdir / f"{name}.log"
        self.masters: Set[int] = set()
        self.seen: Set[int] = set()
        self._address: Optional[tuple] = None   # the log may be rotated away later
        self._born: Dict[int, int] = {}     # pid -> start time, so a reused PID is spared

    def start(self, *args: str) -> subprocess.CompletedProcess:
        """``prefork serve ARGS --daemon --pidfile P --error-log F``; returns when it does."""
        result = run_prefork(["serve", *args, "--daemon", "--pidfile", str(self.pidfile),
                              "--error-log", str(self.error_log)], self.workdir)
        self.note()
        return result

    def note(self) -> None:
        """Remember the master behind the pidfile (if any) and its workers, for cleanup."""
        try:
            self.remember(int(self.pidfile.read_text().strip()), master=True)
        except (OSError, ValueError):
            pass
        for master in list(self.masters):
            for pid in children(master):
                self.remember(pid)

    def remember(self, pid: int, master: bool = False) -> None:
        if pid not in self._born:
            born = start_time(pid)
            if born is None:
                return
            self._born[pid] = born
        (self.masters if master else self.seen).add(pid)

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        """A steering command (``stop``, ``status``...) run from the same directory."""
        result = run_prefork(list(args), self.workdir)
        self.note()
        return result

    def log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def address(self) -> tuple:
        """Where the master listens, from its log (written before the command returned)."""
        if self._address is None:
            m = re.search(r"listening at ([\d.]+):(\d+)", self.log())
            assert m, self.log()
            self._address = (m.group(1), int(m.group(2)))
        return self._address

    def wait_for(self, pattern: str, count: int = 1,
                 timeout: float = DEFAULT_DEADLINE) -> List[re.Match]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = list(regex.finditer(self.log()))
            if len(matches) >= count:
                self.note()
                return matches
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}x {pattern!r} in {self.error_log} "
                                     f"within {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.02)

    def workers(self) -> Set[int]:
        """The master's live workers (zombies not yet reaped do not count)."""
        pids = {p for p in children(self.pid) if pid_alive(p)}
        for pid in pids:
            self.remember(pid)
        return pids

    def wait_workers(self, predicate, timeout: float = DEFAULT_DEADLINE) -> Set[int]:
        deadline = time.monotonic() + timeout
        while True:
            pids = self.workers()
            if predicate(pids):
                return pids
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {sorted(pids)} never matched:\n"
                                     + self.log()[-3000:])
            time.sleep(0.02)

    def cleanup(self) -> None:
        self.note()
        for pid in sorted(self.masters) + sorted(self.seen):
            if start_time(pid) == self._born.get(pid):
                kill_if_prefork(pid)


def start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat: with the PID, it names one process for good."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> Set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


def kill_if_prefork(pid: int) -> None:
    if _is_prefork(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def is_locked(path: Path) -> bool:
    """True if some process holds a flock on ``path`` (what the master must do)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def status_json(d: Daemon, *where: str) -> dict:
    result = d.ctl("status", "--json", *where)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator:
    """Factory: ``d = daemon(); d.start(ECHO, "-b", "127.0.0.1:0")``; all killed at teardown."""
    made: List[Daemon] = []

    def make(name: str = "prefork") -> Daemon:
        d = Daemon(tmp_path, name)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()
