"""WebSockets through a real ``prefork serve`` asyncio worker, with the ``websockets`` client.

The HTTP adapter hands the upgrade to prefork/servers/asgi/websocket.py;
here the whole path runs in real processes over loopback: echo (text and
binary), a denial, a Starlette WebSocket route, on asyncio's loop and on
uvloop (when installed); a graceful stop (TERM) closes an open WebSocket
with 1012 (a second before graceful_timeout ends) and a clean close
handshake, and so does a reload (HUP), after which new WebSockets reach the
new worker.
"""

from __future__ import annotations

import signal

import pytest

from harness import PreforkProcess

pytest.importorskip("starlette")
sync_client = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

pytestmark = pytest.mark.integration


def start(workdir, *args: str) -> PreforkProcess:
    """One worker serving asgi_ws_apps:app (tests/apps)."""
    proc = PreforkProcess(["serve", "asgi_ws_apps:app", "-b", "127.0.0.1:0", "-w", "1", *args],
                          workdir)
    proc.wait_ready()
    return proc


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def served(request, tmp_path_factory):
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    proc = start(tmp_path_factory.mktemp("asgi_ws"), "--loop", request.param, "--access-log", "-")
    try:
        yield proc
    finally:
        proc.cleanup()


def uri(proc: PreforkProcess, path: str) -> str:
    host, port = proc.address
    return f"ws://{host}:{port}{path}"


@pytest.mark.timeout(30)
def test_echo_text_binary_and_lifespan_state(served):
    with sync_client.connect(uri(served, "/echo"), open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\xff" * 1000)
        assert ws.recv(timeout=5) == b"\x00\xff" * 1000
        ws.send("state")
        assert ws.recv(timeout=5) == "booted"
        ws.send(["frag", "mented"])
        assert ws.recv(timeout=5) == "fragmented"
    assert served.wait_for(r"raw app saw disconnect 1000")
    # One access log line per WebSocket, when it ends: its status is the 101.
    assert served.wait_for(r'"GET /echo HTTP/1.1" 101 \d+')


@pytest.mark.timeout(30)
def test_close_before_accept_is_403(served):
    with pytest.raises(InvalidStatus) as info:
        sync_client.connect(uri(served, "/deny"), open_timeout=5)
    assert info.value.response.status_code == 403


@pytest.mark.timeout(30)
def test_starlette_websocket_route(served):
    with sync_client.connect(uri(served, "/star/shout"), open_timeout=5) as ws:
        ws.send("quiet please")
        assert ws.recv(timeout=5) == "QUIET PLEASE"
        ws.close(4001, "bye")
    assert served.wait_for(r"starlette app saw disconnect 4001")


@pytest.mark.timeout(60)
def test_term_closes_open_websockets_with_1012(tmp_path):
    proc = start(tmp_path, "--graceful-timeout", "3")   # closed 1 s before its end
    try:
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5) as ws:
            ws.send("pid")
            assert int(ws.recv(timeout=5)) in proc.worker_pids()
            proc.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            # Both close frames went: the server's 1012 and the client's answer.
            assert info.value.rcvd.code == 1012 and info.value.sent is not None
        assert proc.wait_exit(20) == 0
        assert "raw app saw disconnect 1012" in proc.log()
    finally:
        proc.cleanup()


@pytest.mark.timeout(60)
def test_reload_closes_old_websockets_with_1012_and_new_ones_reach_the_new_worker(tmp_path):
    proc = start(tmp_path, "--graceful-timeout", "3")   # closed 1 s before its end
    try:
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5) as ws:
            ws.send("pid")
            old = int(ws.recv(timeout=5))
            proc.signal(signal.SIGHUP)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=20)
            assert info.value.rcvd.code == 1012
        proc.wait_for(r"reload complete", timeout=30)
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5) as ws:
            ws.send("pid")
            assert int(ws.recv(timeout=5)) != old
    finally:
        proc.cleanup()
