"""USR2 upgrades and HUP with --preload: a new master takes over with nothing lost.

The old master re-executes itself; the new one inherits the listening
sockets, the pidfile lock and the control socket, and once its workers are
ready the old master stops by itself.  When the new master cannot come up,
the old one keeps serving, pidfile and control socket untouched.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from daemonized import ECHO, daemon  # noqa: F401  (the fixture)
from harness import (PreforkProcess, child_env, echo_once, free_port, pid_alive, run_prefork,
                     wait_until)
from http_helpers import get
from load_clients import Load

pytestmark = pytest.mark.integration

HANDED_OVER = r"upgrade: the new master (\d+) is serving"
FAILED = r"upgrade failed: (.*); this master"


def start_router(prefork_server, tmp_path: Path, *args: str):
    server = prefork_server("serve", "wsgiapps:router", "-b", "127.0.0.1:0", "-w", "2",
                            "--pidfile", str(tmp_path / "prefork.pid"),
                            "--control-socket", str(tmp_path / "ctl.sock"), *args)
    server.wait_ready()
    return server


def upgrade(server, sig: int = signal.SIGUSR2, timeout: float = 30) -> int:
    """Send ``sig``, wait for the hand-over and the old master's exit; the new master PID."""
    old = server.pid
    done = len(re.findall(HANDED_OVER, server.log()))
    server.signal(sig)
    new = int(server.wait_for(HANDED_OVER, count=done + 1, timeout=timeout)[-1].group(1))
    server.follow_master(new)
    wait_until(lambda: not pid_alive(old), 30, f"old master {old} to exit")
    return new


def chart_samples(metrics: tuple) -> tuple:
    """(samples, peak req/s) of the chart on /status."""
    page = get(metrics, "/status").body.decode()
    samples = re.search(r'data-samples="(\d+)"', page)
    peak = re.search(r"peak ([\d.]+) req/s", page)
    return (int(samples.group(1)) if samples else 0, float(peak.group(1)) if peak else 0.0)


def status(tmp_path: Path) -> dict:
    result = run_prefork(["status", "--json", "--control-socket", str(tmp_path / "ctl.sock")],
                         tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.timeout(90)
def test_usr2_under_load_loses_nothing_and_hands_over_everything(prefork_server, tmp_path):
    server = start_router(prefork_server, tmp_path)
    old_master, old_workers = server.pid, server.wait_workers(lambda p: len(p) == 2)
    with Load(server.address, clients=8) as load:
        wait_until(lambda: load.count() > 200, 20, "load to get going")
        new_master = upgrade(server)
        before = load.count()
        wait_until(lambda: load.count() > before + 200, 20, "load on the new master")
    assert load.failed == [], load.failed[:5]
    assert server.proc.wait(10) == 0          # the old master stopped cleanly by itself
    assert not any(pid_alive(p) for p in old_workers)
    assert int((tmp_path / "prefork.pid").read_text()) == new_master != old_master
    assert status(tmp_path)["pid"] == new_master
    assert status(tmp_path)["generation"] == 2      # numbering goes on across upgrades
    assert get(server.address, "/hello/").status == 200


@pytest.mark.timeout(90)
def test_a_second_upgrade_and_a_stop_through_the_pidfile(prefork_server, tmp_path):
    metrics = ("127.0.0.1", free_port())
    server = start_router(prefork_server, tmp_path, "--metrics-bind", "%s:%d" % metrics)
    # /status's request-rate chart, once it has a rate to draw: the new master keeps it.
    for _ in range(20):
        assert get(server.address, "/hello/").status == 200
    wait_until(lambda: chart_samples(metrics)[1] > 0, 20, "a request rate in the chart")
    charted = chart_samples(metrics)[0]
    first = upgrade(server)
    samples, peak = chart_samples(metrics)
    assert samples >= charted and peak > 0, (samples, charted, peak)
    second = upgrade(server)
    assert first != second and int((tmp_path / "prefork.pid").read_text()) == second
    # The metrics socket was handed over too (binding it again would have failed).
    assert b"prefork_" in get(metrics, "/metrics").body
    result = run_prefork(["stop", "--pidfile", str(tmp_path / "prefork.pid")], tmp_path)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: not pid_alive(second), 30, "the upgraded master to stop")
    assert not (tmp_path / "prefork.pid").exists()
    assert not (tmp_path / "ctl.sock").exists()


@pytest.mark.timeout(60)
def test_a_new_master_with_a_broken_config_leaves_the_old_one_serving(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text("workers = 2\n")
    server = start_app(prefork_server, tmp_path, "wsgiapps:router", "-c", str(config),
                               "--control-socket", str(tmp_path / "ctl.sock"), workers=())
    config.write_text("workers = 'many'\n")
    server.signal(signal.SIGUSR2)
    reason = server.wait_for(FAILED)[0].group(1)
    assert "workers" in reason and str(config) in reason
    assert pid_alive(server.pid)
    assert int((tmp_path / "prefork.pid").read_text()) == server.pid
    assert status(tmp_path)["pid"] == server.pid    # its control socket is still there
    assert get(server.address, "/hello/").status == 200
    config.write_text("workers = 3\n")               # fixed: the next upgrade works
    upgrade(server)
    assert len(status(tmp_path)["workers"]) == 3


@pytest.mark.timeout(60)
def test_a_new_master_whose_workers_cannot_boot_is_given_up(prefork_server, tmp_path):
    server, app = deploy_v1(prefork_server, tmp_path)
    app.write_text("raise RuntimeError('half-deployed')\n")
    server.signal(signal.SIGUSR2)
    reason = server.wait_for(FAILED)[0].group(1)
    assert "deployed" in reason and "half-deployed" in reason
    assert get(server.address, "/").body == b"v1\n"


@pytest.mark.timeout(60)
def test_a_new_master_that_hangs_is_killed_after_upgrade_timeout(prefork_server, tmp_path):
    server, app = deploy_v1(prefork_server, tmp_path,
                               "--upgrade-timeout", "2")
    app.write_text("import time\ntime.sleep(600)\n")
    server.signal(signal.SIGUSR2)
    server.wait_for(r"not ready after 2 s; sending SIGQUIT")
    server.wait_for(FAILED)
    assert get(server.address, "/").body == b"v1\n"
    assert int((tmp_path / "prefork.pid").read_text()) == server.pid


@pytest.mark.timeout(90)
def test_hup_with_preload_loads_the_new_code_under_load(prefork_server, tmp_path):
    server, app = deploy_v1(prefork_server, tmp_path)
    versions = {b"v1\n", b"v2\n"}
    with Load(server.address, clients=8, path="/", check=versions.__contains__) as load:
        wait_until(lambda: load.count() > 200, 20, "load to get going")
        app.write_text(VERSION_APP.format(version="v2"))
        upgrade(server, signal.SIGHUP)
        wait_until(lambda: load.bodies[-1] == b"v2\n", 20, "the new code to answer")
    assert load.failed == [], load.failed[:5]
    assert server.wait_for(r"HUP with preload: upgrading")
    assert get(server.address, "/").body == b"v2\n"


@pytest.mark.timeout(60)
def test_usr2_during_an_upgrade_is_ignored_and_a_stop_abandons_it(prefork_server, tmp_path):
    server, app = deploy_v1(prefork_server, tmp_path)
    app.write_text("import time\ntime.sleep(600)\n")
    server.signal(signal.SIGUSR2)
    new = int(server.wait_for(r"USR2: upgrading: started a new master, PID (\d+)")[0].group(1))
    server.seen_pids.add(new)
    server.signal(signal.SIGUSR2)
    server.wait_for(r"USR2: cannot upgrade now \(new master \d+ is starting\)")
    assert get(server.address, "/").body == b"v1\n"
    # Stopping now abandons the upgrade: no new master may come up after the old left.
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    server.wait_for(r"the upgrade is abandoned")
    wait_until(lambda: not pid_alive(new), 10, "the abandoned new master to exit")


@pytest.mark.timeout(60)
def test_systemd_is_told_the_new_main_pid(prefork_server, tmp_path):
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify.sock"))
    manager.settimeout(30)
    try:
        server = prefork_server("serve", "wsgiapps:router", "-b", "127.0.0.1:0", "-w", "1",
                                env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        assert manager.recv(4096).startswith(b"READY=1")
        new = upgrade(server)
        messages = []
        deadline = time.monotonic() + 10
        while not any(m.startswith(b"MAINPID=") for m in messages):
            assert time.monotonic() < deadline, messages
            messages.append(manager.recv(4096))
        fields = dict(line.split("=", 1) for line in messages[-1].decode().splitlines())
        assert fields["MAINPID"] == str(new) and fields["READY"] == "1"
        # The old master's graceful stop is not the service's: no STOPPING=1 from it.
        server.signal(signal.SIGTERM)
        stopping = manager.recv(4096)
        assert stopping.startswith(b"STOPPING=1")
        assert not any(m.startswith(b"STOPPING") for m in messages)
    finally:
        manager.close()


VERSION_APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"{version}\\n"]
'''


def deploy_v1(prefork_server, tmp_path: Path, *args: str):
    """A preloaded app in tmp_path/deployed.py answering v1; (server, its source file)."""
    app = tmp_path / "deployed.py"
    app.write_text(VERSION_APP.format(version="v1"))
    return start_app(prefork_server, tmp_path, "deployed:app", "--preload", *args), app


def start_app(prefork_server, tmp_path: Path, target: str, *args: str,
                      workers=("-w", "2")):
    server = prefork_server("serve", target, "-b", "127.0.0.1:0", *workers,
                            "--pidfile", str(tmp_path / "prefork.pid"), *args)
    server.wait_ready()
    return server


@pytest.mark.timeout(60)
def test_a_daemon_upgrades_and_stays_steerable_through_its_pidfile(daemon):
    d = daemon()
    assert d.start(ECHO, "-b", "127.0.0.1:0", "-w", "2").returncode == 0
    old = d.pid
    os.kill(old, signal.SIGUSR2)
    d.wait_for(HANDED_OVER)
    wait_until(lambda: not pid_alive(old), 30, "the old daemon master to exit")
    new = d.pid
    assert new != old and pid_alive(new)
    d.note()
    assert echo_once(d.address()) == b"HELLO\n"
    assert d.ctl("stop", "--pidfile", str(d.pidfile)).returncode == 0
    wait_until(lambda: not pid_alive(new), 30, "the upgraded daemon to stop")
    assert not d.pidfile.exists()


@pytest.mark.timeout(60)
def test_the_interpreter_is_looked_up_again(tmp_path):
    """A venv rebuilt in place (its bin/python pointing elsewhere) runs the new master."""
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    env = child_env()
    # Outside its venv's directory the interpreter does not find the venv's packages.
    paths = sysconfig.get_paths()
    env["PYTHONPATH"] += os.pathsep + os.pathsep.join({paths["purelib"], paths["platlib"]})
    log = open(tmp_path / "prefork.log", "wb")
    proc = subprocess.Popen([str(python), "-m", "prefork", "serve", "wsgiapps:router", "-b",
                             "127.0.0.1:0", "-w", "1"], stdout=log, stderr=subprocess.STDOUT,
                            cwd=str(tmp_path), env=env)
    server = PreforkProcess.attach(proc, tmp_path / "prefork.log")
    try:
        server.wait_ready()
        python.unlink()      # "the new interpreter": the same one, marked by its environment
        python.write_text(f"#!/bin/sh\nPREFORK_TEST_NEW_PYTHON=yes exec {sys.executable} \"$@\"\n")
        python.chmod(0o755)
        new = upgrade(server)
        environ = Path(f"/proc/{new}/environ").read_bytes().split(b"\0")
        assert b"PREFORK_TEST_NEW_PYTHON=yes" in environ
        assert get(server.address, "/hello/").status == 200
    finally:
        server.cleanup()
        log.close()
