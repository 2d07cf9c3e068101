"""The /proc reader, against this process and a child of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from prefork import procfs


def test_this_process() -> None:
    pid = os.getpid()
    assert procfs.state(pid) in ("R", "S")
    assert procfs.rss_bytes(pid) > 1 << 20
    assert abs(procfs.start_time(pid) - time.time()) < 24 * 3600
    assert "python" in (procfs.command_line(pid) or "")


def test_a_child_its_parent_and_a_zombie() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in procfs.children(os.getpid())
        assert procfs.start_ticks(child.pid) >= procfs.start_ticks(os.getpid())
        assert procfs.uptime() > procfs.start_ticks(child.pid) / procfs.TICKS - 1
        child.kill()
        deadline = time.monotonic() + 10
        while procfs.state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.state(child.pid) == "Z"
    finally:
        child.kill()
        child.wait(10)
    assert procfs.state(child.pid) is None
    assert procfs.rss_bytes(child.pid) == 0 and procfs.start_time(child.pid) == 0.0
    assert procfs.command_line(child.pid) is None and procfs.children(child.pid) == []


def test_a_name_with_parentheses_and_spaces() -> None:
    """The command name may hold ') ' itself: the fields are read after the last ')'."""
    child = subprocess.Popen([sys.executable, "-c",
                              "import ctypes, time; ctypes.CDLL(None).prctl(15, b'a) b (c', 0, 0, 0);"
                              "print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        assert procfs.state(child.pid) in ("R", "S")
        assert procfs.start_ticks(child.pid) is not None
    finally:
        child.kill()
        child.wait(10)


def test_pending_signal() -> None:
    blocked = subprocess.Popen([sys.executable, "-c",
                                "import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, "
                                "[signal.SIGUSR1]); print(flush=True); time.sleep(30)"],
                               stdout=subprocess.PIPE)
    try:
        blocked.stdout.readline()
        assert procfs.signal_pending(blocked.pid, signal.SIGUSR1) is False
        os.kill(blocked.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not procfs.signal_pending(blocked.pid, signal.SIGUSR1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.signal_pending(blocked.pid, signal.SIGUSR1) is True
    finally:
        blocked.kill()
        blocked.wait(10)
