"""``prefork serve --daemon``: readiness, the pidfile, start-up errors, logs, identity.

The launching command must return 0 only once the daemon serves, so every
test connects right after it returns, without waiting.
"""

import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from daemonized import ECHO, daemon, is_locked  # noqa: F401 (daemon is a fixture)
from harness import cmdline, echo_once, pid_alive, processes_matching, refuses, wait_until

pytestmark = pytest.mark.integration

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")


def http_get(address: tuple, path: str = "/") -> bytes:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, response.status
        return response.read()
    finally:
        conn.close()


def uid_of(pid: int) -> int:
    """The real UID of ``pid`` (first field of the Uid: line)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", text, re.M).group(1))


@pytest.mark.timeout(30)
def test_daemon_serves_when_command_returns_and_holds_a_locked_pidfile(daemon):
    d = daemon()
    result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "2")
    assert result.returncode == 0, result.stderr + d.log()
    # No waiting: returning 0 is the promise that it serves now.
    assert echo_once(d.address(), b"up\n") == b"UP\n"

    master = d.pid
    assert cmdline(master).startswith("prefork: master ["), cmdline(master)
    assert is_locked(d.pidfile)
    workers = d.wait_workers(lambda p: len(p) == 2)
    assert all(cmdline(w).startswith("prefork: worker [") for w in workers)

    stopped = d.ctl("stop", "--pidfile", str(d.pidfile))
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(master)
    assert not d.pidfile.exists()
    assert refuses(d.address())


@pytest.mark.timeout(30)
def test_second_start_with_same_pidfile_is_refused_and_first_keeps_serving(daemon):
    first = daemon()
    assert first.start(ECHO, "-b", "127.0.0.1:0", "-w", "1").returncode == 0, first.log()
    master = first.pid

    second = daemon("second")
    second.pidfile = first.pidfile
    result = second.start(ECHO, "-b", "127.0.0.1:0", "-w", "1")
    assert result.returncode == 1
    # On the terminal, though fd 2 of that command is already the error log.
    assert f"already running (pid {master})" in result.stderr, result.stderr
    assert first.pid == master and is_locked(first.pidfile)
    assert echo_once(first.address(), b"still\n") == b"STILL\n"
    assert "listening at" not in second.log()   # refused before binding


@pytest.mark.timeout(30)
def test_stale_pidfile_is_replaced(daemon):
    with subprocess.Popen(["true"]) as proc:     # a PID that just died, and no lock
        gone = proc.pid
    d = daemon()
    d.pidfile.write_text(f"{gone}\n")
    for command in ("status", "stop"):
        said = d.ctl(command, "--pidfile", str(d.pidfile))
        assert said.returncode == 1 and "not running" in said.stderr, said.stderr
    result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "1")
    assert result.returncode == 0, result.stderr + d.log()
    assert d.pid != gone and cmdline(d.pid).startswith("prefork: master [")
    assert is_locked(d.pidfile)
    assert echo_once(d.address()) == b"HELLO\n"


@pytest.mark.timeout(30)
def test_daemon_with_unimportable_target_returns_3_and_leaves_nothing(daemon):
    module = f"no_such_module_{uuid.uuid4().hex[:12]}"
    d = daemon()
    result = d.start(f"{module}:App", "-b", "127.0.0.1:0", "-w", "2")
    assert result.returncode == 3, result.stderr + d.log()
    # The worker's ImportError itself, not only "a worker exited with 3".
    assert f"prefork: error: cannot import module '{module}'" in result.stderr, result.stderr
    # The launcher may return while the master is still closing down.
    wait_until(lambda: not processes_matching(f"[{module}:App]"), 5, "no process left")
    wait_until(lambda: not d.pidfile.exists(), 5, "pidfile removed")


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.timeout(30)
def test_daemon_with_port_in_use_returns_4_naming_the_address(daemon, busy_port):
    d = daemon()
    result = d.start(ECHO, "-b", f"127.0.0.1:{busy_port}", "-w", "1")
    assert result.returncode == 4
    expected = f"prefork: error: cannot bind 127.0.0.1:{busy_port}: address already in use"
    assert expected in result.stderr, result.stderr
    assert not d.pidfile.exists()   # a start that failed leaves nothing to confuse `status`


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target", ["wsgiapps:hello", "asgiapps:hello"])   # sync, asyncio
def test_usr1_reopens_moved_error_and_access_logs(daemon, tmp_path, target):
    access = tmp_path / "access.log"
    d = daemon()
    result = d.start(target, "-b", "127.0.0.1:0", "-w", "2", "--access-log", str(access))
    assert result.returncode == 0, result.stderr + d.log()
    assert http_get(d.address(), "/before") == b"hello\n"
    wait_until(lambda: "/before" in access.read_text(), 5, "first access log line")
    workers = d.wait_workers(lambda p: len(p) == 2)

    # What logrotate does before it sends USR1.
    old_error = d.error_log.rename(tmp_path / "error.log.1")
    old_access = access.rename(tmp_path / "access.log.1")
    os.kill(d.pid, signal.SIGUSR1)
    matches = d.wait_for(r"\[(\d+)\] \[INFO\] reopened log files", count=2)
    assert {int(m.group(1)) for m in matches} == workers
    # The master writes to the new file too: make it say something.
    assert d.ctl("scale", "+1", "--pidfile", str(d.pidfile)).returncode == 0
    d.wait_for(rf"\[{d.pid}\] \[INFO\] scale: pool size 3")   # via P.ctl

    for i in range(4):   # whichever worker answers, its line goes to the new file
        http_get(d.address(), f"/after{i}")
    wait_until(lambda: access.exists() and access.read_text().count("/after") == 4, 5,
               "access lines in the new file")
    assert "/after" not in old_access.read_text()
    assert "reopened" not in old_error.read_text() and "pool size 3" not in old_error.read_text()


@as_root
@pytest.mark.timeout(30)
def test_user_nobody_runs_workers_unprivileged_master_stays_root(daemon):
    nobody = pwd.getpwnam("nobody")
    d = daemon()
    result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "2", "--user", "nobody")
    assert result.returncode == 0, result.stderr + d.log()
    assert echo_once(d.address(), b"who\n") == b"WHO\n"
    workers = d.wait_workers(lambda p: len(p) == 2)
    assert {uid_of(w) for w in workers} == {nobody.pw_uid}
    assert uid_of(d.pid) == 0
    assert d.error_log.stat().st_uid == nobody.pw_uid   # so workers may reopen it


@as_root
@pytest.mark.timeout(30)
def test_usr1_with_user_lets_workers_reopen_the_error_log(daemon):
    # A root-owned 0755 log directory, as /var/log/APP usually is: the workers
    # can write files handed to them, not create new ones.
    logs = Path(tempfile.mkdtemp(prefix="prefork-logs-", dir="/tmp"))
    try:
        logs.chmod(0o755)
        d = daemon()
        d.error_log = logs / "error.log"
        result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "1", "--user", "nobody")
        assert result.returncode == 0, result.stderr + d.log()
        rotated = d.error_log.rename(logs / "error.log.1")

        def both() -> str:
            # A worker that cannot reopen says so in the old file, the only one it has.
            return rotated.read_text() + d.log()

        os.kill(d.pid, signal.SIGUSR1)
        wait_until(lambda: re.search(r"reopened log files|cannot reopen", both()), 10,
                   "the worker's answer to USR1")
        assert "cannot reopen" not in both(), both()
        assert "reopened log files" in d.log()
    finally:
        shutil.rmtree(logs)


@pytest.mark.timeout(30)
def test_chdir_makes_a_module_there_importable(daemon, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    module = f"chdirapp_{uuid.uuid4().hex[:8]}"
    (site / f"{module}.py").write_text(
        "import os, socketserver\n"
        "class CwdHandler(socketserver.StreamRequestHandler):\n"
        "    def handle(self):\n"
        "        self.rfile.readline()   # unread input would turn close() into a RST\n"
        "        self.wfile.write(os.getcwd().encode() + b'\\n')\n")
    d = daemon()
    result = d.start(f"{module}:CwdHandler", "-b", "127.0.0.1:0", "-w", "1",
                     "--chdir", "site")      # relative to where the command runs
    assert result.returncode == 0, result.stderr + d.log()
    assert echo_once(d.address(), b"\n") == f"{site}\n".encode()


@pytest.mark.timeout(30)
def test_umask_applies_to_the_logs_prefork_creates(daemon, tmp_path):
    access = tmp_path / "access.log"
    d = daemon()
    result = d.start("wsgiapps:hello", "-b", "127.0.0.1:0", "-w", "1",
                     "--access-log", str(access), "--umask", "077")
    assert result.returncode == 0, result.stderr + d.log()
    assert http_get(d.address()) == b"hello\n"
    assert stat.S_IMODE(access.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.error_log.stat().st_mode) == 0o600
