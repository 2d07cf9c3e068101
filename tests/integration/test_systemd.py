"""systemd integration: the notify protocol (NOTIFY_SOCKET) and socket activation (LISTEN_FDS).

The test plays the service manager: it owns the notify datagram socket, or
lets ``systemd-socket-activate`` hand prefork a listening socket.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from daemonized import ECHO, children, kill_if_prefork
from harness import child_env, echo_once, free_port, refuses, wait_until
from http_helpers import get

pytestmark = pytest.mark.integration


class Notifications:
    """The service manager's end of NOTIFY_SOCKET: one datagram per state change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: List[str] = []

    def next(self, timeout: float = 15.0) -> str:
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(4096).decode()
        except socket.timeout:
            raise AssertionError(f"no notification within {timeout} s after {self.got}") \
                from None
        self.got.append(message)
        return message

    def close(self) -> None:
        self.sock.close()


def fields(message: str) -> dict:
    return dict(line.split("=", 1) for line in message.splitlines())


@pytest.mark.timeout(30)
def test_notify_ready_reloading_ready_stopping_in_order(prefork_server, tmp_path):
    manager = Notifications(tmp_path / "notify.sock")
    try:
        server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "2",
                                env={"NOTIFY_SOCKET": str(manager.path)})
        ready = fields(manager.next())
        # READY only once the workers are up: the log says so first.
        assert "ready: serving with 2 workers" in server.log()
        assert ready["READY"] == "1"
        assert re.search(r"2 workers.*generation 1", ready["STATUS"]), ready

        server.signal(signal.SIGHUP)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading = fields(manager.next())
        assert reloading["RELOADING"] == "1", reloading
        # systemd compares it with its own CLOCK_MONOTONIC: same clock, now-ish.
        assert abs(int(reloading["MONOTONIC_USEC"]) - before) < 5_000_000, reloading
        ready = fields(manager.next())
        assert ready["READY"] == "1" and "generation 2" in ready["STATUS"], ready
        assert "reload complete: generation 2" in server.log()

        server.signal(signal.SIGTERM)
        assert fields(manager.next()) == {"STOPPING": "1"}
        assert server.wait_exit() == 0
    finally:
        manager.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("notify", ["unset", "nobody-listening"])
def test_without_a_service_manager_nothing_breaks(prefork_server, tmp_path, notify):
    env = {} if notify == "unset" else {"NOTIFY_SOCKET": str(tmp_path / "absent.sock")}
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "1", env=env)
    server.wait_ready()
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete: generation 2")
    assert echo_once(server.address) == b"HELLO\n"
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert "Traceback" not in server.log()


@pytest.mark.timeout(30)
def test_listen_fds_meant_for_another_process_are_ignored(prefork_server):
    # LISTEN_PID names someone else: fd 3 is not ours to take, 'bind' applies.
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "1",
                            env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    server.wait_ready()
    assert "from systemd" not in server.log()
    assert echo_once(server.address) == b"HELLO\n"


def listening_ports(pid: int) -> List[int]:
    """TCP ports ``pid`` holds listening sockets on, from /proc (inode match)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    ports = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:    # 0A: LISTEN
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def socket_activated(tmp_path):
    """Start prefork under systemd-socket-activate; KILL it (and its workers) by PID after."""
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    started = []

    def start(port: int, *args: str):
        log = open(tmp_path / "activate.log", "wb")
        # Without --accept it execs prefork in place on the first connection:
        # same PID, LISTEN_PID matches, the listening socket is fd 3.
        proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", "PYTHONPATH",
             sys.executable,
             "-m", "prefork", "serve", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=tmp_path, env=child_env())
        started.append((proc, log))
        return proc, tmp_path / "activate.log"

    yield start
    for proc, log in started:
        workers = children(proc.pid)
        if proc.poll() is None:
            kill_if_prefork(proc.pid)
            proc.wait(5)
        for pid in workers:
            kill_if_prefork(pid)
        log.close()


def hello(address: tuple, timeout: float = 10.0) -> bool:
    """asgi_echo:hello answered one request at ``address``."""
    response = get(address, "/", timeout=timeout)
    return (response.status, response.body) == (200, b"Hello, world!\n")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["handler", "asgi"])
def test_socket_activation_serves_on_the_inherited_socket(socket_activated, kind):
    port, unused = free_port(), free_port()
    target = ECHO if kind == "handler" else "asgi_echo:hello"
    proc, log_path = socket_activated(port, target, "-w", "2", "-b", f"127.0.0.1:{unused}")
    wait_until(lambda: f"Listening on 127.0.0.1:{port}" in log_path.read_text(), 10,
               "systemd-socket-activate listening")
    # This first connection is what makes it start prefork; the kernel queues it.
    if kind == "handler":
        assert echo_once(("127.0.0.1", port), b"activated\n", timeout=15) == b"ACTIVATED\n"
    else:
        assert hello(("127.0.0.1", port), timeout=15)
    log = log_path.read_text()
    assert "using 1 listening socket(s) from systemd (LISTEN_FDS)" in log, log
    assert f"listening at 127.0.0.1:{port}" in log
    wait_until(lambda: "ready: serving with 2 workers" in log_path.read_text(), 10, "ready")

    # The master is the activator's process (exec), and it bound nothing itself.
    assert listening_ports(proc.pid) == [port]
    assert refuses(("127.0.0.1", unused))

    # A reload keeps serving from systemd's socket.
    old = children(proc.pid)
    os.kill(proc.pid, signal.SIGHUP)
    wait_until(lambda: "reload complete: generation 2" in log_path.read_text(), 10, "reload")
    wait_until(lambda: not children(proc.pid) & old, 10, "old workers gone")
    if kind == "handler":
        assert echo_once(("127.0.0.1", port), b"again\n") == b"AGAIN\n"
    else:
        assert all(hello(("127.0.0.1", port)) for _ in range(10))
        assert "asyncio on" in log_path.read_text()
    assert listening_ports(proc.pid) == [port]
