"""Run the real ``prefork`` command and clean up every process it started.

``prefork_server(...)`` starts ``python -m prefork serve ...`` with its log in
a temp file; tests wait on log lines (never on sleeps) and talk to it over
127.0.0.1.  Teardown KILLs the master and every worker PID it ever saw, by
PID, after checking the PID still belongs to a prefork process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"
DEFAULT_DEADLINE = 15.0


def child_env() -> dict:
    """The test apps and this checkout importable; no systemd socket leaking in."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("NOTIFY_SOCKET", None)
    return env


class PreforkProcess:
    """One ``prefork serve`` master started for a test."""

    def __init__(self, args: List[str], workdir: Path, env: Optional[dict] = None) -> None:
        self.log_path = workdir / "prefork.log"
        self.workdir = workdir
        full_env = child_env()
        if env:
            full_env.update(env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "prefork", *args],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(workdir), env=full_env)
        self.pid = self.proc.pid
        self.seen_pids: Set[int] = set()

    @classmethod
    def attach(cls, proc: subprocess.Popen, log_path: Path) -> "PreforkProcess":
        """The same log reading and cleanup for a master started some other way."""
        self = cls.__new__(cls)
        self.proc, self.pid, self.log_path = proc, proc.pid, log_path
        self.workdir, self.seen_pids = log_path.parent, set()
        self._log = open(log_path, "rb")
        return self

    # -- reading the log --------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:   # --error-log FILE not created yet, or moved away
            return ""

    def follow(self, path: Path) -> None:
        """Read the log from ``path`` from now on (the server was given --error-log)."""
        self.log_path = Path(path)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = DEFAULT_DEADLINE) -> List[re.Match]:
        """Wait until ``pattern`` (a regex) matches ``count`` times in the log."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = list(regex.finditer(self.log()))
            if len(matches) >= count:
                self._note_pids()
                return matches
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}x {pattern!r} in the log within {timeout} s:\n"
                                     + self.log()[-4000:])
            if self.pid == self.proc.pid and self.proc.poll() is not None:
                # One last read: the line may have been written just before exit.
                if len(list(regex.finditer(self.log()))) >= count:
                    continue
                raise AssertionError(f"prefork exited ({self.proc.returncode}) before "
                                     f"{pattern!r}:\n" + self.log()[-4000:])
            time.sleep(0.02)

    def wait_ready(self, count: int = 1, timeout: float = DEFAULT_DEADLINE) -> None:
        self.wait_for(r"ready: serving with|reload complete", count, timeout)

    def addresses(self) -> List[tuple]:
        found = []
        # TCP addresses only: not udp://, unix: or fd:// ones.
        for m in self.wait_for(r"listening at (?![a-z-]+:/)(\[?[^\s\]]+\]?):(\d+)"):
            host = m.group(1).strip("[]")
            found.append((host, int(m.group(2))))
        return found

    @property
    def address(self) -> tuple:
        return self.addresses()[0]

    def tls_addresses(self) -> List[tuple]:
        """The tls:// addresses (which addresses() leaves out), as (host, port)."""
        return [(m.group(1).strip("[]"), int(m.group(2)))
                for m in self.wait_for(r"listening at tls://(\[?[^\s\]]+\]?):(\d+)")]

    def _note_pids(self) -> None:
        for m in re.finditer(r"\[(\d+)\] \[\w+\] worker ready", self.log()):
            self.seen_pids.add(int(m.group(1)))
        self.seen_pids.update(self.worker_pids())

    # -- the process tree -------------------------------------------------

    def worker_pids(self) -> Set[int]:
        """The master's current children (its workers), from /proc."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return {int(p) for p in path.read_text().split()}
        except (OSError, ValueError):
            return set()

    def wait_workers(self, predicate, timeout: float = DEFAULT_DEADLINE) -> Set[int]:
        """Poll the worker set until ``predicate(pids)`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if predicate(pids):
                self.seen_pids.update(pids)
                return pids
            if time.monotonic() > deadline:
                raise AssertionError(f"worker set {sorted(pids)} never matched:\n"
                                     + self.log()[-3000:])
            time.sleep(0.02)

    def live_workers(self) -> Set[int]:
        """Workers that are running (a reaped-late zombie does not count)."""
        return {p for p in self.worker_pids() if pid_alive(p)}

    def signal(self, sig: int) -> None:
        self.seen_pids.update(self.worker_pids())
        os.kill(self.pid, sig)

    def follow_master(self, pid: int) -> None:
        """After an upgrade: ``pid`` is the master now (signals, workers, cleanup)."""
        self.seen_pids.update(self.worker_pids())
        self.seen_pids.add(pid)
        self.pid = pid

    def wait_exit(self, timeout: float = DEFAULT_DEADLINE) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"prefork did not exit within {timeout} s:\n"
                                 + self.log()[-3000:]) from None

    def cleanup(self) -> None:
        self.seen_pids.update(self.worker_pids())
        # Masters started by an upgrade the test did not follow (it failed first),
        # and their workers: reparented to init, they are found through the log.
        for m in re.finditer(r"started a new master, PID (\d+)", self.log()):
            upgraded = int(m.group(1))
            self.seen_pids.add(upgraded)
            self.pid = upgraded
            self.seen_pids.update(self.worker_pids())
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for pid in self.seen_pids:
            if _is_prefork(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()


def _is_prefork(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"prefork" in cmdline


def pid_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def processes_matching(text: str) -> List[int]:
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            if text in cmdline(int(entry.name)) and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def run_prefork(args: List[str], cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a short-lived ``prefork`` command (check, or a serve that must fail)."""
    return subprocess.run([sys.executable, "-m", "prefork", *args], cwd=str(cwd), env=child_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def refuses(address: tuple) -> bool:
    """True if nothing listens at ``address`` any more."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(address)
        except ConnectionRefusedError:
            return True
    return False


def free_port() -> int:
    """A port that was free a moment ago (only for tests that must name one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_once(address: tuple, line: bytes = b"hello\n", timeout: float = 5.0) -> bytes:
    """One connection, one line to the upper-casing echo, the reply."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(line)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def socket_fds(pid: int) -> Dict[str, int]:
    """{socket inode: fd number} of the sockets ``pid`` holds, from /proc/PID/fd."""
    held = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            held[target[8:-1]] = int(fd.name)
    return held


def listening_inodes(pid: int, port: int) -> set:
    """Inodes of the TCP sockets in LISTEN state on ``port`` that ``pid`` holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes & set(socket_fds(pid))
