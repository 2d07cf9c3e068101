"""One control plane: every steering command answers the same through ``--pidfile``,
``--control-socket`` or ``-c FILE``.

A master with a pidfile P answers at P.ctl: its control socket when
``control_socket`` is unset, else a symlink to that socket.  Each test runs
against both kinds of master (``beside``, ``explicit``) and through each of
the three ways of naming it.
"""

import json
import os
import re
import signal
from pathlib import Path

import pytest

from daemonized import ECHO, Daemon, daemon, status_json  # noqa: F401 (daemon is a fixture)
from harness import echo_once, pid_alive, wait_until

pytestmark = pytest.mark.integration

WAYS = ["pidfile", "control", "config"]
MASTERS = ["beside", "explicit"]


class Steered:
    """A daemonized master with 2 workers, and how the commands under test name it."""

    def __init__(self, d: Daemon, master: str, way: str) -> None:
        self.d = d
        explicit = d.workdir / "control.sock"
        extra = ["--control-socket", str(explicit)] if master == "explicit" else []
        result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "2", *extra)
        assert result.returncode == 0, result.stderr + d.log()
        self.beside = Path(f"{d.pidfile}.ctl")
        self.sock = explicit if master == "explicit" else self.beside
        config = d.workdir / "steer.toml"
        lines = [f'pidfile = "{d.pidfile}"'] + \
            ([f'control_socket = "{explicit}"'] if master == "explicit" else [])
        config.write_text("\n".join(lines) + "\n")
        self.where = {"pidfile": ("--pidfile", str(d.pidfile)),
                      "control": ("--control-socket", str(self.sock)),
                      "config": ("-c", str(config))}[way]
        d.wait_workers(lambda p: len(p) == 2)

    def ctl(self, *args: str) -> str:
        result = self.d.ctl(*args, *self.where)
        assert result.returncode == 0, result.stderr + self.d.log()[-2000:]
        return result.stdout

    def status(self) -> dict:
        return status_json(self.d, *self.where)


@pytest.fixture(params=[(m, w) for m in MASTERS for w in WAYS],
                ids=[f"{m}-{w}" for m in MASTERS for w in WAYS])
def steered(daemon, request) -> Steered:
    master, way = request.param
    return Steered(daemon(), master, way)


@pytest.mark.timeout(30)
def test_status_in_every_format_has_the_full_scoreboard(steered):
    d = steered.d
    assert steered.beside.exists()
    for i in range(3):
        assert echo_once(d.address(), b"%d\n" % i) == b"%d\n" % i
    wait_until(lambda: sum(w["requests"] for w in steered.status()["workers"]) == 3, 5,
               "3 requests counted")
    report = steered.status()
    assert report["pid"] == d.pid and report["generation"] == 1 and "note" not in report
    assert report["workers_wanted"] == 2 and report["phase"] == "running"
    assert {w["pid"] for w in report["workers"]} == d.workers()
    assert all(w["generation"] == 1 and w["busy"] is False for w in report["workers"])

    table = steered.ctl("status")
    assert re.match(rf"master {d.pid} .*generation 1  running  workers 2/2", table), table
    rows = [line.split() for line in table.splitlines()[2:] if not line.startswith("listener")]
    assert len(rows) == 2 and sum(int(r[6]) for r in rows) == 3, table   # REQUESTS
    assert all(r[1] == "1" and r[3] == "idle" for r in rows), table

    prometheus = steered.ctl("status", "--format", "prometheus")
    assert f'prefork_master_info{{pid="{d.pid}"' in prometheus
    assert re.search(r"^prefork_generation 1$", prometheus, re.M), prometheus
    counted = re.findall(r"^prefork_worker_requests_total\{.*\} (\d+)$", prometheus, re.M)
    assert sorted(counted) and sum(map(int, counted)) == 3, prometheus


@pytest.mark.timeout(30)
def test_scale_absolute_and_relative(steered):
    d = steered.d
    for arg, size in (("3", 3), ("+1", 4), ("-1", 3)):
        assert f"scaling master {d.pid} to {size} workers" in steered.ctl("scale", arg)
        d.wait_for(rf"scale: pool size {size}")
        d.wait_workers(lambda p, n=size: len(p) == n)
        assert steered.status()["workers_wanted"] == size


@pytest.mark.timeout(30)
def test_reload_starts_generation_2(steered):
    d = steered.d
    old = d.workers()
    assert f"master {d.pid} is starting a new generation" in steered.ctl("reload")
    d.wait_for(r"reload complete: generation 2 serving with 2 workers")
    d.wait_workers(lambda p: len(p) == 2 and not p & old)
    report = steered.status()
    assert report["generation"] == 2 and {w["generation"] for w in report["workers"]} == {2}


@pytest.mark.timeout(30)
def test_stop_removes_the_pidfile_and_the_socket(steered):
    d = steered.d
    master = d.pid
    assert f"stopped master {master}" in steered.ctl("stop")
    assert not pid_alive(master)
    assert not d.pidfile.exists()
    assert not os.path.lexists(steered.beside) and not steered.sock.exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("master", MASTERS)
def test_after_usr2_the_pidfile_reaches_the_new_master(daemon, master):
    steered = Steered(daemon(), master, "pidfile")
    d = steered.d
    old = d.pid
    os.kill(old, signal.SIGUSR2)
    d.wait_for(r"upgrade: the new master \d+ is serving")
    wait_until(lambda: not pid_alive(old), 30, "the old master to exit")
    new = d.pid
    assert new != old
    assert steered.beside.exists() and steered.sock.exists()   # the old one left them
    report = steered.status()
    assert report["pid"] == new and report["generation"] == 2 and "note" not in report
    assert f"scaling master {new} to 3 workers" in steered.ctl("scale", "3")
    d.wait_workers(lambda p: len(p) == 3)
    assert f"stopped master {new}" in steered.ctl("stop")
    assert not os.path.lexists(steered.beside) and not steered.sock.exists()


@pytest.mark.timeout(30)
def test_an_explicit_control_socket_answers_for_the_pidfile_too(daemon):
    steered = Steered(daemon(), "explicit", "pidfile")
    assert os.readlink(steered.beside) == str(steered.sock)
    via_pidfile = json.loads(steered.ctl("status", "--json"))
    direct = status_json(steered.d, "--control-socket", str(steered.sock))
    assert via_pidfile["pid"] == direct["pid"] and via_pidfile["workers"] and \
        {w["pid"] for w in via_pidfile["workers"]} == {w["pid"] for w in direct["workers"]}


@pytest.mark.timeout(30)
def test_a_file_in_the_way_costs_the_socket_not_the_start(daemon):
    d = daemon()
    in_the_way = Path(f"{d.pidfile}.ctl")
    in_the_way.write_text("not a socket\n")
    result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "2")
    assert result.returncode == 0, result.stderr + d.log()
    assert "exists and is not a socket: steer this master by signals" in d.log()
    assert in_the_way.read_text() == "not a socket\n"
    d.wait_workers(lambda p: len(p) == 2)
    report = status_json(d, "--pidfile", str(d.pidfile))
    assert report["pid"] == d.pid and "from /proc" in report["note"]
    master = d.pid
    assert d.ctl("stop", "--pidfile", str(d.pidfile)).returncode == 0
    assert not pid_alive(master) and in_the_way.exists()
