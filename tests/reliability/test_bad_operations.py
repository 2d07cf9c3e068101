"""Bad operations: operator mistakes are refused clearly and a running instance keeps serving.

Promise (issue 7): a broken config on HUP, a missing target on HUP, a port
taken at start, a pidfile of a live instance, a read-only log directory:
each gets a clear message and the documented exit status (0 clean stop,
1 runtime failure, 2 usage or config error, 3 target cannot be imported,
4 cannot bind), and an instance that is already running keeps serving.

Every case runs one instance (``-w 2``, a WSGI app) under light load: two
Python clients looping on HTTP requests, one on a keep-alive connection, one
on a new connection each.  The bad operation happens while they run, and not
one of their requests may fail; the instance's master and workers are the
same processes afterwards.  The instance keeps idle connections 30 s and the
clients wait 30 s for an answer: a loaded CI machine can stall a client
process for seconds, and a connection idle past ``keepalive`` is closed by
design, which is not what these cases test.

The same mistakes without load (and without a second instance) are in
tests/integration/test_errors.py, test_reload.py and test_daemon.py.

Read-only directories: as root, mode 0555 does not stop a write, so that
variant skips there; a regular file where the log's directory should be
(ENOTDIR) refuses the write to root too and runs everywhere.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

from conftest import seconds
from harness import PreforkProcess, pid_alive, wait_until

pytestmark = pytest.mark.integration

APP = "wsgiapps:hello"
AFTER = seconds(1.5, 10)        # load kept on after the bad operation, seconds
CASE_TIMEOUT = seconds(120, 240)
SLOW_MACHINE = 60.0           # generous waits: a loaded CI machine starts Python slowly


def write_config(path: Path, target: str = APP, **extra: str) -> None:
    lines = [f'target = "{target}"', 'bind = ["127.0.0.1:0"]', "workers = 2", "keepalive = 30.0"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")


def running(prefork_server, tmp_path: Path, target: str = APP, *args: str):
    """The instance that must keep serving: (process, its workers)."""
    config = tmp_path / "prefork.toml"
    write_config(config, target)
    server = prefork_server("serve", "-c", str(config), *args)
    server.wait_ready(timeout=SLOW_MACHINE)
    workers = server.wait_workers(lambda p: len(p) == 2, timeout=SLOW_MACHINE)
    return server, config, workers


class Load:
    """Python clients looping on GET /hello/ until stopped, counting every outcome."""

    def __init__(self, address: tuple, clients: int = 2, timeout: float = 30.0) -> None:
        self.address, self.timeout = address, timeout
        self.ok = 0
        self.failed: List[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(n % 2 == 0,), daemon=True)
                         for n in range(clients)]

    def count(self) -> int:
        with self._lock:
            return self.ok

    def _loop(self, keepalive: bool) -> None:
        conn, n = None, 0
        while not self._stop.is_set():
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection(*self.address, timeout=self.timeout)
            try:
                conn.request("GET", f"/hello/?n={n}")
                response = conn.getresponse()
                body = response.read()
                outcome = None if (response.status, body) == (200, b"hello\n") else \
                    f"status {response.status}: {body[:80]!r}"
                if not keepalive or response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{exc!r} ({'keep-alive' if keepalive else 'new connection'}, " \
                          f"at {time.strftime('%H:%M:%S')})"
                conn.close()
                conn = None
            with self._lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failed.append(outcome)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)


@contextlib.contextmanager
def light_load(address: tuple) -> Iterator[Load]:
    with Load(address) as load:
        wait_until(lambda: load.count() >= 20, SLOW_MACHINE, "the load got going")
        yield load


def keep_loading(load: Load) -> int:
    """Load on for AFTER seconds; requests answered meanwhile (must be > 0)."""
    before = load.count()
    wait_until(lambda: load.count() > before + 20, SLOW_MACHINE,
               "the load goes on after the bad operation")
    time.sleep(AFTER)
    return load.count() - before


def assert_untouched(server: PreforkProcess, workers: set, load: Load) -> None:
    assert not load.failed, f"{len(load.failed)} failed of {load.ok + len(load.failed)}: " \
                            f"{load.failed[:5]}"
    assert pid_alive(server.pid) and server.proc.poll() is None
    assert server.live_workers() == workers, (workers, server.worker_pids())
    assert not [w for w in ("crashed", "exited unexpectedly", "Traceback") if w in server.log()], \
        server.log()[-3000:]


@contextlib.contextmanager
def second_instance(tmp_path: Path, *args: str) -> Iterator[PreforkProcess]:
    """Another ``prefork serve`` with a log and working directory of its own."""
    workdir = tmp_path / f"second-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    proc = PreforkProcess(["serve", *args], workdir)
    try:
        yield proc
    finally:
        proc.cleanup()


def not_writable_dir(tmp_path: Path, way: str) -> Path:
    """A directory the log cannot be created in."""
    if way == "mode 0555":
        if os.geteuid() == 0:
            pytest.skip("as root, mode 0555 does not stop a write (CAP_DAC_OVERRIDE); "
                        "the 'file as directory' variant covers root")
        directory = tmp_path / "readonly"
        directory.mkdir()
        directory.chmod(0o555)
        return directory
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be\n")
    return blocker


WAYS = ["mode 0555", "file as directory"]


# -- HUP ---------------------------------------------------------------------------------------

@pytest.mark.timeout(CASE_TIMEOUT)
@pytest.mark.parametrize("bad, named", [
    ("workerz = 3", "'workerz'"),                  # unknown key
    ('timeout = "soon"', "'timeout'"),             # wrong type
    ("max_requests = -1", "'max_requests'"),       # bad value
    ("workers = 3", "not valid TOML"),             # a second 'workers': not TOML at all
])
def test_hup_with_broken_config_under_load(prefork_server, tmp_path, figures, bad, named):
    server, config, workers = running(prefork_server, tmp_path)
    with light_load(server.address) as load:
        config.write_text(config.read_text() + bad + "\n")
        server.signal(signal.SIGHUP)
        failed = server.wait_for(r"reload failed: .*", timeout=SLOW_MACHINE)[0].group(0)
        during = keep_loading(load)
    assert named in failed and str(config) in failed, failed
    assert "generation 1 keeps serving" in failed, failed
    assert_untouched(server, workers, load)
    figures(case=f"HUP, config with {bad!r}", exit_status="none (keeps running)",
            requests_during=load.ok, after_the_hup=during, failed=len(load.failed))


@pytest.mark.timeout(CASE_TIMEOUT)
def test_hup_with_missing_target_module_under_load(prefork_server, tmp_path, figures):
    # A module of its own in the server's cwd (on its sys.path), removed before the HUP.
    module = f"hupgone_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("from wsgiapps import hello as app\n")
    server, config, workers = running(prefork_server, tmp_path, f"{module}:app")
    with light_load(server.address) as load:
        (tmp_path / f"{module}.py").unlink()
        shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
        server.signal(signal.SIGHUP)
        failed = server.wait_for(r"reload failed: .*", timeout=SLOW_MACHINE)[0].group(0)
        during = keep_loading(load)
    assert "generation 1 keeps serving" in failed, failed
    assert f"cannot import module '{module}'" in server.log(), server.log()[-3000:]
    assert_untouched(server, workers, load)
    figures(case="HUP, target module removed", exit_status="none (keeps running)",
            requests_during=load.ok, after_the_hup=during, failed=len(load.failed))


@pytest.mark.timeout(CASE_TIMEOUT)
@pytest.mark.parametrize("key", ["error_log", "access_log"])
@pytest.mark.parametrize("way", WAYS)
def test_hup_to_a_log_path_that_cannot_be_written_under_load(prefork_server, tmp_path, figures,
                                                             key, way):
    path = not_writable_dir(tmp_path, way) / f"{key}.log"
    server, config, workers = running(prefork_server, tmp_path)
    with light_load(server.address) as load:
        config.write_text(config.read_text() + f'{key} = "{path}"\n')
        server.signal(signal.SIGHUP)
        failed = server.wait_for(r"reload failed: .*", timeout=SLOW_MACHINE)[0].group(0)
        during = keep_loading(load)
    assert f"'{key}'" in failed and str(path) in failed, failed
    assert "generation 1 keeps serving" in failed, failed
    assert_untouched(server, workers, load)
    figures(case=f"HUP, {key} in a directory that cannot be written ({way})",
            exit_status="none (keeps running)", requests_during=load.ok, after_the_hup=during,
            failed=len(load.failed))


# -- a second start beside a running instance -------------------------------------------------

@pytest.mark.timeout(CASE_TIMEOUT)
def test_port_taken_at_start_exits_4_and_the_running_instance_serves_on(prefork_server, tmp_path,
                                                                         figures):
    server, _, workers = running(prefork_server, tmp_path)
    address = "%s:%d" % server.address
    with light_load(server.address) as load:
        with second_instance(tmp_path, APP, "-b", address, "-w", "2") as second:
            status = second.wait_exit(timeout=SLOW_MACHINE)
            said = second.log()
        during = keep_loading(load)
    assert status == 4, said
    assert f"cannot bind {address}: address already in use" in said, said
    assert "starting generation" not in said       # no worker was forked
    assert_untouched(server, workers, load)
    figures(case="start on a taken port", exit_status=status, requests_during=load.ok,
            after_the_start=during, failed=len(load.failed))


@pytest.mark.timeout(CASE_TIMEOUT)
def test_pidfile_of_a_live_instance_exits_1_and_leaves_it_untouched(prefork_server, tmp_path,
                                                                    figures):
    pidfile = tmp_path / "prefork.pid"
    server, _, workers = running(prefork_server, tmp_path, APP, "--pidfile", str(pidfile))
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() == str(server.pid), 10,
               "the pidfile names the master")
    stat_before = pidfile.stat()
    with light_load(server.address) as load:
        with second_instance(tmp_path, APP, "-b", "127.0.0.1:0", "-w", "2",
                             "--pidfile", str(pidfile)) as second:
            status = second.wait_exit(timeout=SLOW_MACHINE)
            said = second.log()
        during = keep_loading(load)
    assert status == 1, said
    assert f"already running (pid {server.pid})" in said and str(pidfile) in said, said
    assert "listening at" not in said           # refused before binding anything
    assert pidfile.read_text().strip() == str(server.pid)
    assert pidfile.stat().st_ino == stat_before.st_ino   # the same file, not replaced
    assert_untouched(server, workers, load)
    figures(case="start with the pidfile of a live instance", exit_status=status,
            requests_during=load.ok, after_the_start=during, failed=len(load.failed))


@pytest.mark.timeout(CASE_TIMEOUT)
@pytest.mark.parametrize("key", ["error_log", "access_log"])
@pytest.mark.parametrize("way", WAYS)
def test_log_path_that_cannot_be_written_at_start_exits_2(prefork_server, tmp_path, figures,
                                                          key, way):
    path = not_writable_dir(tmp_path, way) / f"{key}.log"
    server, _, workers = running(prefork_server, tmp_path)
    with light_load(server.address) as load:
        with second_instance(tmp_path, APP, "-b", "127.0.0.1:0", "-w", "2",
                             f"--{key.replace('_', '-')}", str(path)) as second:
            status = second.wait_exit(timeout=SLOW_MACHINE)
            said = second.log()
        during = keep_loading(load)
    assert status == 2, said
    assert f"prefork: error: key '{key}': cannot open {path}: " in said, said
    assert "starting generation" not in said
    assert not path.exists()
    assert_untouched(server, workers, load)
    figures(case=f"start with {key} in a directory that cannot be written ({way})",
            exit_status=status, requests_during=load.ok, after_the_start=during,
            failed=len(load.failed))


# -- found by these scenarios ------------------------------------------------------------------

@pytest.mark.timeout(CASE_TIMEOUT)
def test_keepalive_request_sent_while_the_worker_is_busy_past_keepalive_is_served(
        prefork_server, tmp_path, figures):
    # Under load, a few keep-alive requests here were reset: a sync worker that
    # could not read for longer than `keepalive` (busy, or starved of CPU) then
    # closed the connection as idle with the client's next request unread in it.
    server = prefork_server("serve", "wsgiapps:router", "-b", "127.0.0.1:0", "-w", "1",
                            "-k", "sync", "--keepalive", "1")
    server.wait_ready(timeout=SLOW_MACHINE)
    address = server.address
    keepalive = http.client.HTTPConnection(*address, timeout=20)
    keepalive.request("GET", "/hello/1")
    first = keepalive.getresponse()
    assert first.status == 200 and first.read() == b"hello\n"
    with socket.create_connection(address, timeout=20) as busy:
        busy.sendall(b"GET /slow/?t=2.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_for(r"slow: start")             # the only worker is busy for 2.5 s
        keepalive.request("GET", "/hello/2")        # well within keepalive of the last answer
        second = keepalive.getresponse()            # was: ConnectionResetError
        assert second.status == 200 and second.read() == b"hello\n"
        assert busy.recv(100).startswith(b"HTTP/1.1 200 ")
    keepalive.close()
    figures(case="keep-alive request while the sync worker is busy 2.5 s (keepalive 1 s)",
            requests=2, failed=0)
