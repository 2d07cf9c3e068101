"""Unix stream sockets, fd://N and reuse_port: the rest of the stream family.

A unix socket file is made with the configured mode and owner, a stale one
(nobody listening) is replaced, a live one is refused with exit 4, and the
file is removed on stop but not on a USR2 upgrade, whose new master goes on
serving at the same path.
"""

import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import (PreforkProcess, child_env, listening_inodes, pid_alive, run_prefork,
                     wait_until)
from http_helpers import get, read_response

pytestmark = pytest.mark.integration

ECHO_TARGET = "prefork.examples.echo:UpperEchoHandler"
# fd:// and reuse_port on a handler class (thread worker) and on an ASGI app (asyncio worker).
TARGETS = {"handler": ECHO_TARGET, "asgi": "asgi_echo:hello"}


def unix_echo(path: Path, line: bytes = b"hello\n") -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(line)
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(65536), b""))


def unix_get(path: Path, target: str = "/hello/"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".encode())
        return read_response(s.makefile("rb"))


@pytest.mark.timeout(30)
def test_a_handler_class_over_a_unix_socket_with_mode_and_owner(prefork_server, tmp_path):
    path = tmp_path / "echo.sock"
    nobody = pwd.getpwnam("nobody")
    server = prefork_server("serve", ECHO_TARGET, "-b", f"unix:{path}", "-w", "2",
                            "--unix-socket-mode", "660",
                            "--unix-socket-owner", f"{nobody.pw_uid}:{nobody.pw_gid}")
    server.wait_ready()
    assert server.wait_for(rf"listening at unix:{re.escape(str(path))}")
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert all(unix_echo(path, b"x%d\n" % i) == b"X%d\n" % i for i in range(20))
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists()                   # removed on stop


@pytest.mark.timeout(30)
def test_a_wsgi_app_over_a_unix_socket(prefork_server, tmp_path):
    path = tmp_path / "app.sock"
    server = prefork_server("serve", "wsgiapps:router", "-b", f"unix:{path}", "-w", "2")
    server.wait_ready()
    response = unix_get(path, "/echo?x=1")
    assert response.status == 200
    seen = response.json()
    assert seen["path"] == "/echo" and seen["query"] == "x=1"
    assert seen["server"] == [str(path), ""] and seen["remote_addr"] == ""
    assert unix_get(path).body == b"hello\n"


@pytest.mark.timeout(30)
def test_a_stale_socket_file_is_replaced(prefork_server, tmp_path):
    path = tmp_path / "echo.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))
    crashed.close()                            # a crash leaves the file behind
    server = prefork_server("serve", ECHO_TARGET, "-b", f"unix:{path}", "-w", "1")
    server.wait_ready()
    assert unix_echo(path) == b"HELLO\n"


@pytest.mark.timeout(30)
def test_a_live_socket_file_is_refused_and_left_alone(prefork_server, tmp_path):
    path = tmp_path / "echo.sock"
    first = prefork_server("serve", ECHO_TARGET, "-b", f"unix:{path}", "-w", "1")
    first.wait_ready()
    result = run_prefork(["serve", ECHO_TARGET, "-b", f"unix:{path}", "-w", "1"], tmp_path)
    assert result.returncode == 4
    assert f"cannot bind unix:{path}" in result.stderr and "in use" in result.stderr
    assert unix_echo(path) == b"HELLO\n"       # the running one is untouched


@pytest.mark.timeout(60)
def test_reload_and_upgrade_keep_tcp_and_unix_serving(prefork_server, tmp_path):
    path = tmp_path / "echo.sock"
    server = prefork_server("serve", ECHO_TARGET, "-b", f"unix:{path}", "-b", "127.0.0.1:0",
                            "-w", "2")
    server.wait_ready()
    tcp = [a for a in server.addresses() if a[0] == "127.0.0.1"][0]
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete")
    assert unix_echo(path) == b"HELLO\n" and tcp_echo(tcp) == b"HELLO\n"
    old = server.pid
    server.signal(signal.SIGUSR2)
    new = int(server.wait_for(r"upgrade: the new master (\d+) is serving")[0].group(1))
    server.follow_master(new)
    wait_until(lambda: not pid_alive(old), 30, "the old master to exit")
    assert path.exists()                       # not removed by the old master's stop
    assert unix_echo(path) == b"HELLO\n" and tcp_echo(tcp) == b"HELLO\n"
    os.kill(new, signal.SIGTERM)
    wait_until(lambda: not pid_alive(new), 30, "the new master to stop")
    assert not path.exists()                   # the new master owned it, and removed it


def tcp_echo(address) -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"hello\n")
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(65536), b""))


def answers(kind: str, address) -> bool:
    """The target of ``kind`` answered one request at ``address`` (a unix path or TCP)."""
    if kind == "handler":
        got = unix_echo(address) if isinstance(address, Path) else tcp_echo(address)
        return got == b"HELLO\n"
    response = unix_get(address) if isinstance(address, Path) else get(address, "/hello/")
    return (response.status, response.body) == (200, b"Hello, world!\n")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(TARGETS))
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
def test_fd_serves_a_socket_opened_by_the_parent(tmp_path, family, kind):
    sock = socket.socket(family, socket.SOCK_STREAM)
    address = ("127.0.0.1", 0) if family == socket.AF_INET else str(tmp_path / "given.sock")
    sock.bind(address)
    sock.listen(16)
    fd = sock.fileno()
    log = open(tmp_path / "prefork.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "prefork", "serve", TARGETS[kind],
                             "-b", f"fd://{fd}", "-w", "2"], pass_fds=[fd], stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(tmp_path), env=child_env())
    server = PreforkProcess.attach(proc, tmp_path / "prefork.log")
    try:
        server.wait_ready()
        assert server.wait_for(rf"listening at .*fd://{fd}|listening at ")
        if kind == "asgi":
            server.wait_for(r"worker ready \(gen 1, asyncio on", count=2)
        given = sock.getsockname() if family == socket.AF_INET else Path(address)
        assert all(answers(kind, given) for _ in range(10))
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        if family == socket.AF_UNIX:
            assert Path(address).exists()      # a file it did not make is not its to remove
    finally:
        server.cleanup()
        log.close()
        sock.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_reuse_port_gives_each_worker_its_own_socket(prefork_server, tmp_path, kind):
    server = prefork_server("serve", TARGETS[kind], "-b", "127.0.0.1:0", "-w", "2",
                            "--reuse-port")
    server.wait_ready()
    address = server.address
    workers = server.wait_workers(lambda pids: len(pids) == 2)
    listening = {pid: listening_inodes(pid, address[1]) for pid in workers}
    assert all(len(inodes) == 1 for inodes in listening.values()), listening
    assert len(set().union(*listening.values())) == 2      # two sockets, one each
    assert not listening_inodes(server.pid, address[1])     # the master's does not listen
    assert all(answers(kind, address) for _ in range(20))

