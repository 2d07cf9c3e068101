"""Load while reloading, and a graceful stop under load, on the asyncio worker (issue 13).

The ASGI counterpart of test_reload_load.py, with its load helpers: wrk
holds 64 keep-alive connections on an ASGI hello app (tests/apps/asgi_echo.py)
served by ``-k asyncio -w 2`` while the master is HUPed, upgraded with USR2
(the test follows the new master), or recycles its workers every 50
requests: not one socket error, not one non-2xx, no request left
unanswered, nothing in the log that a clean run never writes.  TERM under
load: requests of a slow endpoint that the app had already started are
answered.  WebSockets on a worker that a HUP retires: closed with 1012 (or
1001) and a clean close handshake, never a reset, and (issue 13) only once
``graceful_timeout`` has passed.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time

import pytest

from harness import pid_alive, wait_until
from http_helpers import CALLS_ENV, Served
from test_reload_load import (EVERY, STEP, TIMEOUT, TROUBLE, answers, assert_clean,
                              send_requests, under_load, upgrades_under_load)
from load import finish_wrk, start_wrk

pytestmark = pytest.mark.integration


def serve(prefork_server, tmp_path, *args: str, app: str = "asgi_echo:hello",
          keepalive: float = 30.0) -> Served:
    """Two asyncio workers serving an ASGI app (keep-alive 30 s: see test_reload_load.serve)."""
    calls = tmp_path / "calls.jsonl"
    proc = prefork_server("serve", app, "-b", "127.0.0.1:0", "-w", "2", "-k", "asyncio",
                          "--keepalive", str(keepalive), *args, env={CALLS_ENV: str(calls)})
    proc.wait_ready()
    proc.wait_for(r"worker ready \(gen 1, asyncio on \w+, ASGI", count=2)
    return Served(proc, calls)


# -- load while reloading -------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
def test_asgi_hup_under_wrk_loses_nothing(prefork_server, tmp_path, figures):
    server = serve(prefork_server, tmp_path).proc
    first = server.wait_workers(lambda pids: len(pids) == 2)

    def hup(n: int) -> None:
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload complete", count=n, timeout=STEP)

    run = under_load(server, hup)
    figures(scenario=f"HUP every {EVERY:g} s under wrk -c64", kind="asyncio",
            signals=run.steps, **run.counts())
    assert_clean(run, server)
    assert server.wait_for(rf"reload complete: generation {run.steps + 1} serving with 2 workers")
    assert not (server.live_workers() & first)


@pytest.mark.timeout(TIMEOUT + 30)
def test_asgi_usr2_upgrades_under_wrk_lose_nothing(prefork_server, tmp_path, figures):
    server = serve(prefork_server, tmp_path).proc
    upgrades_under_load(server, figures, "asyncio")


@pytest.mark.timeout(TIMEOUT)
def test_asgi_max_requests_recycling_under_wrk_loses_nothing(prefork_server, tmp_path, figures):
    server = serve(prefork_server, tmp_path, "--max-requests", "50",
                   "--max-requests-jitter", "0").proc
    run = under_load(server)
    recycles = len(re.findall(r"reached max_requests", server.log()))
    figures(scenario="max_requests=50 under wrk -c64", kind="asyncio", recycles=recycles,
            **run.counts())
    assert_clean(run, server)
    assert recycles >= 10, recycles


# -- graceful stop under load -------------------------------------------------------


@pytest.mark.timeout(60)
def test_asgi_term_under_wrk_finishes_requests_in_flight(prefork_server, tmp_path, figures):
    """32 requests to /slow (1.5 s), all started in the app, then TERM: every one is answered
    (200 "slow done"), the workers exit within graceful_timeout, and wrk saw no non-2xx."""
    grace = 10.0
    served = serve(prefork_server, tmp_path, "--graceful-timeout", str(grace), keepalive=1)
    server = served.proc
    wrk = start_wrk(served.address, 60, path="/hello/")
    try:
        time.sleep(1.0)     # load for a while: pacing, not synchronisation
        slow = send_requests(served.address, 32, "/slow/")     # 1.5 s each
        wait_until(lambda: len(served.records("slow")) >= 32, 10,
                   "the app to start the 32 slow requests")
        stopped = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(grace + 5) == 0
        took = time.monotonic() - stopped
        assert wrk.poll() is None, "wrk ended before the stop"
        wrk.send_signal(signal.SIGINT)
        result = finish_wrk(wrk, timeout=30)
        outcomes = answers(slow)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    figures(scenario="TERM under wrk -c64, 32 slow (1.5 s) requests in flight",
            kind="asyncio", stop_seconds=round(took, 2), answered=outcomes.count("ok"),
            **{"wrk_" + k: v for k, v in result.counts().items()})
    assert outcomes == ["ok"] * len(slow), [o for o in outcomes if o != "ok"][:5]
    assert result.non_2xx == 0 and result.requests > 1000, result
    assert 1.0 < took < grace     # the slow requests were waited for, not the whole grace
    trouble = [line for line in server.log().splitlines() if TROUBLE.search(line)]
    assert trouble == [], trouble[:10]
    assert not server.live_workers()


# -- WebSockets on a worker retired by HUP ---------------------------------------------

GRACE = 4.0     # graceful_timeout of the WebSocket scenarios


def open_websocket(server, stack: contextlib.ExitStack):
    """A WebSocket to /echo (closed with ``stack``) and the PID of the worker serving it."""
    sync_client = pytest.importorskip("websockets.sync.client")
    host, port = server.address
    ws = stack.enter_context(sync_client.connect(f"ws://{host}:{port}/echo", open_timeout=5))
    ws.send("pid")
    return ws, int(ws.recv(timeout=5))


def ws_server(prefork_server, tmp_path) -> Served:
    pytest.importorskip("starlette")       # asgi_ws_apps has a Starlette route
    return serve(prefork_server, tmp_path, "--graceful-timeout", str(GRACE),
                 app="asgi_ws_apps:app")


@pytest.mark.timeout(60)
def test_asgi_hup_closes_websockets_of_retired_workers_with_1012_cleanly(
        prefork_server, tmp_path):
    """Every open WebSocket of the old generation gets a 1012 (or 1001) close frame and
    the closing handshake completes (the client's close frame is sent back and the
    TCP connection ends after it): never a reset, never 1006 or 1011."""
    served = ws_server(prefork_server, tmp_path)
    server = served.proc
    stack = contextlib.ExitStack()
    with stack:
        sockets = [open_websocket(served, stack) for _ in range(8)]
        codes = close_codes_after_hup(server, sockets)
    assert codes == [(codes[0][0], True)] * len(sockets) and codes[0][0] in (1012, 1001), codes
    old = {pid for _ws, pid in sockets}
    wait_until(lambda: not (server.live_workers() & old), GRACE + 10, "old workers to exit")
    # The new generation serves WebSockets.
    with contextlib.ExitStack() as stack:
        ws, pid = open_websocket(served, stack)
        assert pid not in old
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"
    assert "raw app saw disconnect 1012" in server.log() or \
        "raw app saw disconnect 1001" in server.log()


def close_codes_after_hup(server, sockets):
    """HUP, then each WebSocket's (close code received, close frame sent back)."""
    from websockets.exceptions import ConnectionClosed
    old = {pid for _ws, pid in sockets}
    assert old <= server.worker_pids()
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete", timeout=STEP)
    codes = []
    for ws, _pid in sockets:
        with pytest.raises(ConnectionClosed) as info:
            while True:                 # whatever is still echoed, until the close
                ws.send("ping")
                ws.recv(timeout=GRACE + 10)
        closed = info.value
        codes.append((closed.rcvd.code if closed.rcvd else None, closed.sent is not None))
    return codes


@pytest.mark.timeout(60)
def test_asgi_websockets_of_retired_workers_keep_working_until_graceful_timeout(
        prefork_server, tmp_path):
    from websockets.exceptions import ConnectionClosed
    served = ws_server(prefork_server, tmp_path)
    server = served.proc
    with contextlib.ExitStack() as stack:
        ws, pid = open_websocket(served, stack)
        hupped = time.monotonic()
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload complete", timeout=STEP)
        # The old worker is retired, the WebSocket still echoes until GRACE - 1 s.
        while time.monotonic() < hupped + GRACE - 1.0:
            try:
                ws.send("during the grace")
                assert ws.recv(timeout=5) == "during the grace"
            except ConnectionClosed as exc:
                raise AssertionError(f"closed ({exc.rcvd and exc.rcvd.code}) "
                                     f"{time.monotonic() - hupped:.1f} s after the HUP, "
                                     f"graceful_timeout {GRACE} s") from None
            time.sleep(0.2)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.send("ping")
                ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code in (1012, 1001)
        assert info.value.sent is not None
        assert time.monotonic() - hupped >= GRACE - 1.0
    wait_until(lambda: not pid_alive(pid), 10, "the old worker to exit")
