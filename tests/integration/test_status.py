"""``prefork status`` and the control socket it talks to."""

import json
import os
import re
import signal
import socket
import stat
from pathlib import Path

import pytest

from daemonized import ECHO, daemon, status_json  # noqa: F401 (daemon is a fixture)
from harness import echo_once, pid_alive, wait_until

pytestmark = pytest.mark.integration

HEADER = ["PID", "GEN", "STATE", "ACTIVITY", "AGE", "REQUESTS", "RSS"]


def start(d, target: str = ECHO, workers: int = 2, control: bool = True) -> Path:
    sock = d.workdir / "control.sock"
    extra = ["--control-socket", str(sock)] if control else []
    result = d.start(target, "-b", "127.0.0.1:0", "-w", str(workers), *extra)
    assert result.returncode == 0, result.stderr + d.log()
    return sock


def table(d, *where: str) -> dict:
    """``prefork status`` as {pid: row}, each row a dict keyed by the header."""
    result = d.ctl("status", *where)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"master {d.pid} "), result.stdout
    assert lines[1].split() == HEADER, result.stdout
    rows = {}
    for line in lines[2:]:
        if line.startswith("listener "):    # after the table: "listener NAME  queue Q/B"
            continue
        cells = line.split()
        if cells[3] in ("busy", "idle"):    # "idle 3s" is one column
            cells[3:5] = [" ".join(cells[3:5])]
        assert len(cells) == len(HEADER), line
        rows[int(cells[0])] = dict(zip(HEADER, cells))
    return rows


def ask(sock: Path, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(data)
        return json.loads(s.makefile("rb").readline())


@pytest.mark.timeout(30)
def test_status_table_has_one_row_per_worker_and_counts_requests(daemon):
    d = daemon()
    sock = start(d)
    where = ("--control-socket", str(sock))
    workers = d.wait_workers(lambda p: len(p) == 2)
    rows = table(d, *where)
    assert set(rows) == workers
    for row in rows.values():
        assert row["GEN"] == "1" and row["STATE"] == "ready", row
        assert re.fullmatch(r"idle \d+s", row["ACTIVITY"]), row
        assert re.fullmatch(r"\d+s", row["AGE"]), row
        assert re.fullmatch(r"\d+\.\dM", row["RSS"]) and row["RSS"] != "0.0M", row
    assert sum(int(r["REQUESTS"]) for r in rows.values()) == 0
    listed = d.ctl("status", *where).stdout.splitlines()[-1]
    assert re.fullmatch(rf"listener 127\.0\.0\.1:{d.address()[1]}  queue 0/[1-9]\d*", listed)

    for i in range(5):
        assert echo_once(d.address(), b"%d\n" % i) == b"%d\n" % i
    wait_until(lambda: sum(int(r["REQUESTS"]) for r in table(d, *where).values()) == 5, 5,
               "5 requests counted")


@pytest.mark.timeout(30)
def test_status_json(daemon):
    d = daemon()
    sock = start(d)
    workers = d.wait_workers(lambda p: len(p) == 2)
    echo_once(d.address())
    report = status_json(d, "--control-socket", str(sock))
    assert report["pid"] == d.pid and report["generation"] == 1
    assert report["workers_wanted"] == 2 and report["phase"] == "running"
    assert {w["pid"] for w in report["workers"]} == workers
    for w in report["workers"]:
        assert w["generation"] == 1 and w["state"] == "ready"
        assert w["busy"] is False
        assert isinstance(w["for"], float) and w["for"] >= 0
        assert isinstance(w["age"], float) and 0 <= w["age"] < 30
        assert isinstance(w["requests"], int) and w["rss"] > 1024 * 1024
    assert sum(w["requests"] for w in report["workers"]) == 1
    [listener] = report["listeners"]
    assert listener["name"] == "127.0.0.1:%d" % d.address()[1]
    assert listener["queue"] == 0 and listener["backlog"] > 0, listener


@pytest.mark.timeout(30)
def test_status_shows_the_worker_with_a_request_in_flight_as_busy(daemon):
    d = daemon()
    sock = start(d, "testapps:SlowHandler", 2)
    d.wait_workers(lambda p: len(p) == 2)
    with socket.create_connection(d.address(), timeout=30) as conn:
        conn.sendall(b"30\n")
        (m,) = d.wait_for(r"slow: (\d+) sleeping")
        slow = int(m.group(1))
        report = status_json(d, "--control-socket", str(sock))
        busy = {w["pid"]: w["busy"] for w in report["workers"]}
        assert busy[slow] is True and list(busy.values()).count(True) == 1, report
        rows = table(d, "--control-socket", str(sock))
        assert rows[slow]["ACTIVITY"].startswith("busy "), rows
        assert all(r["ACTIVITY"].startswith("idle ") for p, r in rows.items() if p != slow)


@pytest.mark.timeout(30)
def test_status_of_a_master_without_a_socket_beside_its_pidfile_reads_proc(daemon):
    d = daemon()
    start(d, control=False)
    os.unlink(f"{d.pidfile}.ctl")    # as an older prefork: nothing answers at P.ctl
    workers = d.wait_workers(lambda p: len(p) == 2)
    where = ("--pidfile", str(d.pidfile))
    rows = table(d, *where)
    assert set(rows) == workers
    for row in rows.values():
        # /proc knows the generation (process title) and memory, not activity.
        assert row["GEN"] == "1" and row["ACTIVITY"] == "-" and row["REQUESTS"] == "-", row
    report = status_json(d, *where)
    assert report["pid"] == d.pid and "from /proc" in report["note"]
    assert {w["pid"] for w in report["workers"]} == workers
    for w in report["workers"]:
        # The same types as through the control socket, so one parser does both.
        assert w["generation"] == 1 and w["requests"] is None and w["rss"] > 0, w


@pytest.mark.timeout(30)
def test_control_socket_is_0600_and_survives_garbage(daemon):
    d = daemon()
    sock = start(d, ECHO, 1)
    mode = sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)

    for garbage in (b"garbage\n", b"[1, 2]\n", b"\xff\xfe\n", b'{"cmd": "bogus"}\n',
                    b'{"cmd": "scale", "workers": "many"}\n'):
        reply = ask(sock, garbage)
        assert reply["ok"] is False and reply["error"], (garbage, reply)
    # A client that connects, says nothing and leaves is no crash either.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(sock))

    reply = ask(sock, b'{"cmd": "status"}\n')
    assert reply["ok"] is True and reply["pid"] == d.pid
    assert echo_once(d.address()) == b"HELLO\n"


@pytest.mark.timeout(30)
def test_second_master_on_a_live_control_socket_is_refused(daemon):
    first = daemon()
    sock = start(first, ECHO, 1)
    second = daemon("second")
    result = second.start(ECHO, "-b", "127.0.0.1:0", "-w", "1", "--control-socket", str(sock))
    assert result.returncode == 1
    said = result.stderr + second.log()
    assert f"control socket {sock} is in use" in said, said
    assert status_json(first, "--control-socket", str(sock))["pid"] == first.pid


@pytest.mark.timeout(30)
def test_control_socket_path_naming_a_regular_file_is_refused(daemon, tmp_path):
    # A typo in control_socket must not cost the operator a file.
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me\n")
    d = daemon()
    result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "1", "--control-socket", str(precious))
    assert precious.is_file() and precious.read_text() == "keep me\n"
    assert result.returncode == 1
    assert f"control socket {precious} exists and is not a socket" in result.stderr, result


@pytest.mark.timeout(30)
def test_stale_control_socket_from_a_killed_master_is_replaced(daemon):
    first = daemon()
    sock = start(first, ECHO, 1)
    killed = first.pid
    workers = first.workers()
    for pid in [killed, *workers]:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in [killed, *workers]), 5, "all dead")
    assert sock.exists()          # left behind, nobody listening

    second = daemon("second")
    start(second, ECHO, 1)
    assert second.pid != killed
    report = status_json(second, "--control-socket", str(sock))
    assert report["pid"] == second.pid
