"""``prefork top`` in a real terminal: tmux runs it, capture-pane reads the screen.

Each test has its own tmux server (``-L``), killed in a finally, and the
``top`` process is killed by PID if it is somehow still there.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemonized import ECHO, daemon  # noqa: F401 (daemon is a fixture)
from harness import child_env, echo_once, pid_alive

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("tmux") is None,
                                 reason="tmux is not installed (Debian: apt-get install tmux)")]

ROW = re.compile(r"^(\d+)\s+(\d+|-)\s+(\S+)\s+(\d+|-)\s+([\d.]+|-)\s+(\d+|-)\s+(\S+)\s+"
                 r"((?:busy|idle) \S+|-)\s+(.*)$")


class Terminal:
    """A 160x40 tmux session running one command on a private tmux server."""

    def __init__(self, workdir: Path, command: str) -> None:
        self.server = f"prefork-top-{os.getpid()}-{time.monotonic_ns()}"
        self.rc_file = workdir / "top.rc"
        wrapped = f"{command}; echo $? > {shlex.quote(str(self.rc_file))}"
        self.tmux("new-session", "-d", "-s", "top", "-x", "160", "-y", "40", wrapped)
        self.pid = int(self.tmux("list-panes", "-t", "top", "-F", "#{pane_pid}").strip())
        self.socket = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())

    def tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.server, *args], env=child_env(),
                                cwd=str(self.rc_file.parent), capture_output=True, text=True,
                                timeout=10, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def alive(self) -> bool:
        result = subprocess.run(["tmux", "-L", self.server, "has-session", "-t", "top"],
                                capture_output=True, timeout=10)
        return result.returncode == 0

    def wait(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}; the screen:\n{text}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.alive() or not self.rc_file.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"top still running after {timeout} s:\n{self.screen()}")
            time.sleep(0.1)
        return int(self.rc_file.read_text().strip())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True,
                       timeout=10)
        if self.socket.name == self.server:     # tmux leaves it behind
            self.socket.unlink(missing_ok=True)
        for pid in [self.pid, *_descendants(self.pid)]:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _descendants(pid: int) -> list:
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
    return kids + [d for k in kids for d in _descendants(k)]


def rows(text: str) -> dict:
    """The worker lines on the screen, {pid: (generation, state, requests, req/s, ...)}."""
    found = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            found[int(m.group(1))] = m.groups()[1:]
    return found


def top_command(sock: Path, *extra: str) -> str:
    return " ".join(shlex.quote(a) for a in
                    [sys.executable, "-m", "prefork", "top", "--control-socket", str(sock),
                     *extra])


def start(d, *args: str) -> Path:
    sock = d.workdir / "control.sock"
    result = d.start(*args, "-b", "127.0.0.1:0", "--control-socket", str(sock))
    assert result.returncode == 0, result.stderr + d.log()
    return sock


@pytest.mark.timeout(60)
def test_top_shows_the_pool_counts_requests_sorts_and_quits(daemon):
    d = daemon()
    sock = start(d, ECHO, "-w", "2")
    workers = d.wait_workers(lambda p: len(p) == 2)
    term = Terminal(d.workdir, top_command(sock, "--interval", "0.5"))
    try:
        text = term.wait(lambda t: set(rows(t)) == workers, 15, "both workers listed")
        lines = text.splitlines()
        assert lines[0] == (f"master {d.pid}  generation 1  running  workers 2/2  busy 0  "
                            f"reloads 0"), text
        assert re.fullmatch(rf"listen 127\.0\.0\.1:{d.address()[1]} queue 0/\d+", lines[1])
        assert lines[2].startswith("sort pid ascending"), text
        assert lines[4].split()[:3] == ["PID*", "GEN", "STATE"], text
        for generation, state, requests, *_ in rows(text).values():
            assert (generation, state, requests) == ("1", "ready", "0"), text

        for i in range(6):
            assert echo_once(d.address(), b"%d\n" % i) == b"%d\n" % i
        term.wait(lambda t: sum(int(r[2]) for r in rows(t).values()) == 6, 10,
                  "6 requests counted")

        term.keys("s")
        text = term.wait(lambda t: "sort req/s descending" in t, 5, "sorted by req/s")
        assert "REQ/S*" in text and "PID*" not in text
        term.keys("r")
        term.wait(lambda t: "sort req/s ascending" in t, 5, "reversed")

        term.keys("q")
        assert term.wait_exit(10) == 0
        assert pid_alive(d.pid)      # top only looks
    finally:
        term.close()


@pytest.mark.timeout(60)
def test_top_shows_the_request_in_flight_and_exits_1_when_the_master_goes(daemon):
    d = daemon()
    sock = start(d, "testapps:SlowHandler", "-w", "2", "--request-timeout", "60")
    d.wait_workers(lambda p: len(p) == 2)
    term = Terminal(d.workdir, top_command(sock))
    try:
        with socket.create_connection(d.address(), timeout=30) as conn:
            conn.sendall(b"30\n")
            (m,) = d.wait_for(r"slow: (\d+) sleeping")
            slow = int(m.group(1))
            text = term.wait(lambda t: rows(t).get(slow, ("",) * 8)[6].startswith("busy "),
                             10, f"worker {slow} busy")
            assert "busy 1" in text.splitlines()[0], text
            assert rows(text)[slow][7] != "-", text     # the request, from the scoreboard
            stopped = d.ctl("stop", "--fast", "--control-socket", str(sock))
            assert stopped.returncode == 0, stopped.stderr
        term.wait(lambda t: "MASTER GONE" in t, 10, "the master shown gone")
        assert term.wait_exit(15) == 1
    finally:
        term.close()
