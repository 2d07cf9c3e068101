"""The asyncio worker on what the other kinds do: EPOLLEXCLUSIVE, TTIN/TTOU, upgrades, status.

(Preload, hooks, max_rss, fd://, systemd sockets and reuse_port are the
other kinds' tests parametrized over it: test_preload.py, test_hooks.py,
test_request_limits.py, test_unix_and_fd.py, test_systemd.py.)  Real
``prefork serve`` processes; the kernel's view of them is read from /proc.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Dict

import pytest

from harness import listening_inodes, run_prefork, socket_fds, wait_until
from http_helpers import CALLS_ENV, Conn, Served, get
from test_upgrade import upgrade

pytestmark = pytest.mark.integration

EPOLLEXCLUSIVE = 0x10000000     # include/uapi/linux/eventpoll.h


def epoll_watches(pid: int) -> Dict[int, int]:
    """{watched fd: event mask} over every epoll instance ``pid`` holds.

    /proc/PID/fdinfo/FD of an "anon_inode:[eventpoll]" fd lists each watched
    fd as ``tfd: <fd> events: <hex mask> ...``.
    """
    watches = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:[eventpoll]":
                continue
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue
        for m in re.finditer(r"tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)", info):
            watches[int(m.group(1))] = int(m.group(2), 16)
    return watches


def listener_mask(pid: int, inode: str) -> int:
    """The epoll event mask ``pid`` waits on the listening socket ``inode`` with (0: none)."""
    fd = socket_fds(pid)[inode]
    return epoll_watches(pid).get(fd, 0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target, args", [("wsgiapps:hello", ()),
                                          ("asgiapps:raw", ("--loop", "asyncio"))],
                         ids=["sync", "asyncio"])
def test_workers_wait_on_the_shared_listener_with_epollexclusive(prefork_server, tmp_path,
                                                                 target, args):
    proc = prefork_server("serve", target, "-b", "127.0.0.1:0", "-w", "2",
                          "--worker-connections", "1", "--keepalive", "30", *args,
                          env={CALLS_ENV: str(tmp_path / "calls.jsonl")})
    proc.wait_ready()
    (inode,) = listening_inodes(proc.pid, proc.address[1])    # the master's, inherited
    workers = proc.wait_workers(lambda pids: len(pids) == 2)
    wait_until(lambda: all(listener_mask(pid, inode) & EPOLLEXCLUSIVE for pid in workers), 10,
               "both workers waiting on the listener with EPOLLEXCLUSIVE")

    # Full (worker_connections 1, a keep-alive client each), a worker stops
    # waiting on the listener; with room again it waits with the flag again
    # (it cannot be added by a modify: the fd is registered anew).
    clients = [Conn(proc.address), Conn(proc.address)]
    try:
        for conn in clients:
            assert conn.request("GET", "/hello").status == 200
        wait_until(lambda: not any(listener_mask(pid, inode) for pid in workers), 10,
                   "full workers no longer waiting on the listener")
    finally:
        for conn in clients:
            conn.close()
    wait_until(lambda: all(listener_mask(pid, inode) & EPOLLEXCLUSIVE for pid in workers), 10,
               "workers with room waiting on the listener with EPOLLEXCLUSIVE again")
    assert get(proc.address, "/hello").status == 200


def serve_asgi(prefork_server, tmp_path: Path, target: str, *args: str) -> Served:
    calls = tmp_path / "calls.jsonl"
    proc = prefork_server("serve", target, "-b", "127.0.0.1:0", *args,
                          env={CALLS_ENV: str(calls)})
    proc.wait_ready()
    return Served(proc, calls)


def pids_of(served: Served, event: str) -> list:
    return [r["pid"] for r in served.records(event)]


@pytest.mark.timeout(30)
def test_ttin_ttou_grow_and_shrink_the_pool_and_the_retired_worker_shuts_down(
        prefork_server, tmp_path):
    served = serve_asgi(prefork_server, tmp_path, "asgiapps:raw", "-w", "1")
    proc = served.proc
    (first,) = proc.wait_workers(lambda pids: len(pids) == 1)
    proc.signal(signal.SIGTTIN)
    proc.wait_for(r"TTIN: pool size 2")
    two = proc.wait_workers(lambda pids: len(pids) == 2)
    proc.wait_for(r"worker ready \(gen 1, asyncio on \w+, ASGI, lifespan\)", count=2)
    assert sorted(pids_of(served, "startup")) == sorted(two)
    # Both serve: new connections until each has answered one.
    answered, deadline = set(), time.monotonic() + 10
    while answered != two:
        assert time.monotonic() < deadline, f"only {answered} of {two} answered"
        answered.add(int(get(served.address, "/pid").body))

    proc.signal(signal.SIGTTOU)
    proc.wait_for(r"TTOU: pool size 1")
    wait_until(lambda: len(proc.live_workers()) == 1, 10, "one worker left")
    (kept,) = proc.live_workers()
    (retired,) = two - {kept}
    # Retired gracefully: its lifespan shutdown ran, then it left by itself.
    wait_until(lambda: retired in pids_of(served, "shutdown"), 10, "the retired one's shutdown")
    proc.wait_for(rf"\[{retired}\] \[INFO\] worker exiting")
    assert kept not in pids_of(served, "shutdown")
    assert "unexpectedly" not in proc.log()
    with Conn(served.address) as conn:
        assert int(conn.request("GET", "/pid").body) == kept
    assert first in two


VERSIONED_APP = '''
import os

from wsgiapps import record

VERSION = "{version}"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            phase = message["type"].rsplit(".", 1)[1]      # startup, shutdown
            record(phase, version=VERSION)
            await send({{"type": message["type"] + ".complete"}})
            if phase == "shutdown":
                return
    body = ("%s %d" % (VERSION, os.getpid())).encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]}})
    await send({{"type": "http.response.body", "body": body}})
'''


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig, preload", [(signal.SIGHUP, True), (signal.SIGUSR2, False)],
                         ids=["hup-preload", "usr2"])
def test_an_upgrade_serves_the_new_asgi_code_with_lifespan_in_each_worker(
        prefork_server, tmp_path, sig, preload):
    app = tmp_path / "deployed_asgi.py"
    app.write_text(VERSIONED_APP.format(version="v1"))
    served = serve_asgi(prefork_server, tmp_path, "deployed_asgi:app", "-w", "2",
                        *(["--preload"] if preload else []))
    proc = served.proc
    old_master, old = proc.pid, proc.wait_workers(lambda pids: len(pids) == 2)
    proc.wait_for(r"worker ready \(gen 1, asyncio on \w+, ASGI, lifespan\)", count=2)
    if preload:
        proc.wait_for(r"preloaded deployed_asgi:app in the master")
    version, pid = get(served.address, "/").body.split()
    assert version == b"v1" and int(pid) in old
    # The lifespan ran in each worker, never in the master (preloaded or not).
    assert sorted(pids_of(served, "startup")) == sorted(old)

    app.write_text(VERSIONED_APP.format(version="v2"))
    new_master = upgrade(proc, sig)
    assert proc.proc.wait(10) == 0                  # the old master stopped by itself
    if sig == signal.SIGHUP:
        proc.wait_for(r"HUP with preload: upgrading")
    new = proc.wait_workers(lambda pids: len(pids) == 2)
    assert not new & old
    for _ in range(6):
        version, pid = get(served.address, "/").body.split()
        assert version == b"v2" and int(pid) in new
    started = {r["pid"]: r["version"] for r in served.records("startup")}
    assert started == {**{pid: "v1" for pid in old}, **{pid: "v2" for pid in new}}
    assert old_master not in started and new_master not in started
    # The old workers were retired gracefully: each ran its v1 lifespan shutdown.
    stopped = {r["pid"]: r["version"] for r in served.records("shutdown")}
    assert stopped == {pid: "v1" for pid in old}


def status(served: Served, sock: Path) -> Dict[int, dict]:
    """``prefork status --json``'s workers, by PID."""
    result = run_prefork(["status", "--json", "--control-socket", str(sock)],
                         served.proc.workdir, timeout=15)
    assert result.returncode == 0, result.stderr
    return {w["pid"]: w for w in json.loads(result.stdout)["workers"]}


@pytest.mark.timeout(30)
def test_the_scoreboard_counts_asgi_requests_and_shows_the_one_in_flight(prefork_server,
                                                                        tmp_path):
    sock = tmp_path / "control.sock"
    served = serve_asgi(prefork_server, tmp_path, "asgiapps:raw", "-w", "2",
                        "--control-socket", str(sock))
    workers = served.proc.wait_workers(lambda pids: len(pids) == 2)
    with Conn(served.address) as conn:
        (pid,) = {int(conn.request("GET", "/pid").body) for _ in range(5)}
    wait_until(lambda: {p: w["requests"] for p, w in status(served, sock).items()}
               == {p: 5 if p == pid else 0 for p in workers}, 5, "5 requests counted")
    with Conn(served.address, timeout=20) as slow:
        slow.send(b"GET /slow?s=2 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_until(lambda: [w["busy"] for w in status(served, sock).values()].count(True) == 1,
                   5, "one worker busy")
        (busy,) = [w for w in status(served, sock).values() if w["busy"]]
        assert busy["connections"] == 1 and busy["state"] == "ready"
        # The request in progress, with no request_timeout set (show_requests' default).
        assert busy["doing"].startswith('"GET /slow?s=2 HTTP/1.1" from 127.0.0.1:')
        assert busy["doing_for"] >= 0
        assert slow.response().body == b"slow done"
    wait_until(lambda: not any(w["busy"] for w in status(served, sock).values())
               and sum(w["requests"] for w in status(served, sock).values()) == 6, 5,
               "the slow request counted, nobody busy")
