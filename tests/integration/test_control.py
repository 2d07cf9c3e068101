"""Steering a daemonized master: ``prefork reload | stop | scale``.

Each command reaches the master through its control socket (JSON lines),
named directly or found beside its pidfile (P.ctl); a master without a
socket there (an older prefork: here, one whose P.ctl was removed) is
steered through its pidfile with signals.  Both are exercised against real
masters; test_control_plane.py checks that every way gives the same answers.
"""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemonized import ECHO, daemon, status_json  # noqa: F401 (daemon is a fixture)
from harness import child_env, echo_once, pid_alive, refuses, wait_until

pytestmark = pytest.mark.integration

SLOW = "testapps:SlowHandler"


def start(d, target: str = ECHO, workers: int = 2, *extra: str) -> Path:
    """Start ``d`` with a control socket next to its pidfile; returns the socket path."""
    sock = d.workdir / "control.sock"
    result = d.start(target, "-b", "127.0.0.1:0", "-w", str(workers),
                     "--control-socket", str(sock), *extra)
    assert result.returncode == 0, result.stderr + d.log()
    return sock


def via(d, how: str, sock: Path) -> tuple:
    return ("--pidfile", str(d.pidfile)) if how == "pidfile" else ("--control-socket", str(sock))


def as_an_older_master(d) -> None:
    """No socket beside the pidfile, as before prefork opened one: commands fall back
    to signals."""
    os.unlink(f"{d.pidfile}.ctl")


def slow_request(d, seconds: float) -> socket.socket:
    """A request to SlowHandler that is in flight when this returns (it logs first)."""
    before = len(re.findall(r"slow: \d+ sleeping", d.log()))
    conn = socket.create_connection(d.address(), timeout=seconds + 30)
    conn.sendall(f"{seconds}\n".encode())
    d.wait_for(r"slow: \d+ sleeping", count=before + 1)
    return conn


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["pidfile", "control"])
def test_reload_starts_a_new_generation(daemon, how):
    d = daemon()
    sock = start(d)
    old = d.wait_workers(lambda p: len(p) == 2)
    result = d.ctl("reload", *via(d, how, sock))
    assert result.returncode == 0, result.stderr
    assert f"master {d.pid} is starting a new generation" in result.stdout
    d.wait_for(r"reload complete: generation 2 serving with 2 workers")
    new = d.wait_workers(lambda p: len(p) == 2 and not p & old)
    assert echo_once(d.address(), b"gen2\n") == b"GEN2\n"
    assert new.isdisjoint(old)


@pytest.mark.timeout(30)
def test_reload_with_broken_config_via_control_socket_names_the_key(daemon, tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text('workers = 2\n')
    d = daemon()
    sock = start(d, ECHO, 2, "-c", str(config))
    old = d.wait_workers(lambda p: len(p) == 2)

    config.write_text('workers = "two"\n')
    result = d.ctl("reload", "--control-socket", str(sock))
    assert result.returncode != 0
    assert "'workers'" in result.stderr and str(config) in result.stderr, result.stderr
    d.wait_for(r"reload failed: .*'workers'.*generation 1 keeps serving")
    assert echo_once(d.address(), b"old\n") == b"OLD\n"
    assert d.workers() == old
    assert "reloading: starting generation" not in d.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["pidfile", "control"])
def test_stop_returns_0_once_the_master_is_gone(daemon, how):
    d = daemon()
    sock = start(d, SLOW, 1)
    master, address = d.pid, d.address()
    workers = d.workers()
    conn = slow_request(d, 1.0)   # a graceful stop waits for it
    with conn:
        result = d.ctl("stop", *via(d, how, sock))
        assert result.returncode == 0, result.stderr
        assert f"stopped master {master}" in result.stdout
        assert not pid_alive(master)   # gone when the command returned, not later
        assert conn.recv(100).startswith(b"done ")
    assert "graceful stop" in d.log()
    assert not d.pidfile.exists() and not sock.exists()
    assert refuses(address)
    wait_until(lambda: not any(pid_alive(w) for w in workers), 5, "workers gone")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["pidfile", "control"])
def test_stop_fast_does_not_wait_for_requests(daemon, how):
    d = daemon()
    sock = start(d, SLOW, 1)
    master = d.pid
    conn = slow_request(d, 30)
    with conn:
        began = time.monotonic()
        result = d.ctl("stop", "--fast", *via(d, how, sock))
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - began < 5
        assert not pid_alive(master)
        assert not conn.recv(100).startswith(b"done")
    assert "fast stop" in d.log()
    assert not d.pidfile.exists()


@pytest.mark.timeout(30)
def test_scale_via_control_socket(daemon):
    d = daemon()
    sock = start(d)
    d.wait_workers(lambda p: len(p) == 2)
    for arg, size in (("3", 3), ("+1", 4), ("-1", 3)):
        result = d.ctl("scale", arg, "--control-socket", str(sock))
        assert result.returncode == 0, result.stderr
        assert f"scaling master {d.pid} to {size} workers" in result.stdout
        d.wait_for(rf"scale: pool size {size}")
        d.wait_workers(lambda p, n=size: len(p) == n)
        assert status_json(d, "--control-socket", str(sock))["workers_wanted"] == size


@pytest.mark.timeout(30)
def test_scale_via_pidfile_sends_ttin_and_ttou(daemon):
    d = daemon()
    start(d)
    as_an_older_master(d)
    d.wait_workers(lambda p: len(p) == 2)
    pidfile = ("--pidfile", str(d.pidfile))
    result = d.ctl("scale", "+1", *pidfile)
    assert result.returncode == 0 and "1 x SIGTTIN" in result.stdout, result
    d.wait_for(r"TTIN: pool size 3")
    d.wait_workers(lambda p: len(p) == 3)
    result = d.ctl("scale", "-1", *pidfile)
    assert result.returncode == 0 and "1 x SIGTTOU" in result.stdout, result
    d.wait_for(r"TTOU: pool size 2")
    d.wait_workers(lambda p: len(p) == 2)
    # An absolute size cannot be said with signals.
    result = d.ctl("scale", *pidfile, "3")
    assert result.returncode == 2 and "needs the control socket" in result.stderr


def run_first_on(cpu: int) -> None:
    """In the child: share ``cpu`` with the master, but never be preempted by it."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))


@pytest.mark.timeout(30)
def test_scale_plus_n_via_pidfile_takes_every_step(daemon):
    d = daemon()
    sock = start(d, ECHO, 1)
    as_an_older_master(d)
    # The race, made certain: the master cannot run between the command's
    # signals when it shares one CPU with a real-time `prefork scale`.  On a
    # loaded host the same happens by chance (about half the time here).
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(d.pid, {cpu})
    try:
        scale = subprocess.run(
            [sys.executable, "-m", "prefork", "scale", "+2", "--pidfile", str(d.pidfile)],
            cwd=d.workdir, env=child_env(), capture_output=True, text=True, timeout=20,
            preexec_fn=lambda: run_first_on(cpu))
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot run a SCHED_FIFO child here: {exc}")
    assert scale.returncode == 0, scale.stderr
    d.wait_for(r"TTIN: pool size 2")
    wait_until(lambda: status_json(d, "--control-socket", str(sock))["workers_wanted"] == 3,
               2, "pool size 3 after scale +2")


@pytest.mark.timeout(30)
def test_config_file_is_enough_to_find_the_master(daemon, tmp_path):
    d = daemon()
    sock = tmp_path / "control.sock"
    full = tmp_path / "prefork.toml"
    full.write_text(f'pidfile = "{d.pidfile}"\ncontrol_socket = "{sock}"\nworkers = 2\n')
    result = d.start(ECHO, "-b", "127.0.0.1:0", "-c", str(full))
    assert result.returncode == 0, result.stderr + d.log()
    assert sock.exists()

    # With a control socket named, status has request counts (not from /proc).
    status = d.ctl("status", "-c", str(full))
    assert status.returncode == 0, status.stderr
    assert re.search(rf"^master {d.pid} .*generation 1", status.stdout, re.M)
    assert "REQUESTS" in status.stdout and "from /proc" not in status.stdout

    # A config naming only the pidfile finds the socket through it (P.ctl links to it).
    only_pidfile = tmp_path / "pidfile-only.toml"
    only_pidfile.write_text(f'pidfile = "{d.pidfile}"\n')
    result = d.ctl("reload", "-c", str(only_pidfile))
    assert result.returncode == 0, result.stderr
    d.wait_for(r"reload complete: generation 2")

    master = d.pid
    result = d.ctl("stop", "-c", str(full))
    assert result.returncode == 0 and not pid_alive(master), result.stderr
