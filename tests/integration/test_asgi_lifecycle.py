"""The asyncio worker under supervision: lifespan, graceful stop, reload, recycling, timeouts.

Real ``prefork serve`` processes on loopback; every wait is on a log line or
a response, with a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from harness import child_env, run_prefork
from http_helpers import CALLS_ENV, Conn, Served
from load_clients import hups_under_keepalive_load

pytestmark = pytest.mark.integration

LIFESPAN_ENV = "PREFORK_TEST_LIFESPAN"
LIFESPAN_FILE_ENV = "PREFORK_TEST_LIFESPAN_FILE"


def serve(prefork_server, tmp_path, app: str, *args: str, env=None, ready=True) -> Served:
    calls = tmp_path / "calls.jsonl"
    proc = prefork_server("serve", f"asgiapps:{app}", "-b", "127.0.0.1:0", *args,
                          env={CALLS_ENV: str(calls), **(env or {})})
    if ready:
        proc.wait_ready()
    return Served(proc, calls)


# -- lifespan ------------------------------------------------------------------------


def serve_and_fail(tmp_path, *args: str, env=None) -> subprocess.CompletedProcess:
    """A ``prefork serve`` expected to exit by itself (a boot failure)."""
    return subprocess.run([sys.executable, "-m", "prefork", "serve", *args], cwd=str(tmp_path),
                          env={**child_env(), **(env or {})}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=25)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode, lifespan", [("fail", "auto"), ("fail", "on"), ("raise", "on")])
def test_a_lifespan_startup_failure_is_a_boot_failure(tmp_path, mode, lifespan):
    done = serve_and_fail(tmp_path, "asgiapps:raw", "-b", "127.0.0.1:0", "-w", "2",
                          "--lifespan", lifespan, env={LIFESPAN_ENV: mode})
    assert done.returncode == 3, done.stderr[-3000:]
    expected = ("ASGI lifespan startup failed: no database" if mode == "fail"
                else "ASGI lifespan startup: the app raised RuntimeError('startup exploded')")
    assert expected in done.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("app, env", [("no_lifespan", {}), ("raw", {LIFESPAN_ENV: "raise"})])
def test_lifespan_auto_serves_apps_without_it(prefork_server, tmp_path, app, env):
    served = serve(prefork_server, tmp_path, app, "-w", "1", env=env)
    served.proc.wait_for(r"does not support the ASGI lifespan protocol")
    served.proc.wait_for(r"worker ready \(gen 1, asyncio on \w+, ASGI\)")
    with Conn(served.address) as conn:
        assert conn.request("GET", "/hello").status in (200, 404)
    served.proc.signal(signal.SIGTERM)
    assert served.proc.wait_exit(15) == 0


def loops():
    """Both event loops where uvloop is installed (it is optional)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", loops())
def test_lifespan_shutdown_runs_on_term_after_the_slow_request(prefork_server, tmp_path, loop):
    served = serve(prefork_server, tmp_path, "raw", "-w", "1", "--graceful-timeout", "10",
                   "--loop", loop)
    served.proc.wait_for(rf"asyncio on {loop}, ASGI, lifespan")
    assert len(served.records("startup")) == 1
    with Conn(served.address, timeout=15) as conn:
        conn.send(b"GET /slow?s=2 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)                      # the request is in the app
        served.proc.signal(signal.SIGTERM)
        r = conn.response()
        assert (r.status, r.body) == (200, b"slow done")
        assert r.header("Connection") == "close"
    assert served.proc.wait_exit(15) == 0
    assert len(served.records("shutdown")) == 1
    assert "graceful_timeout passed" not in served.log()


@pytest.mark.timeout(90)
def test_a_reload_whose_lifespan_fails_keeps_the_old_generation(prefork_server, tmp_path):
    switch = tmp_path / "lifespan-mode"
    served = serve(prefork_server, tmp_path, "raw", "-w", "2",
                   env={LIFESPAN_FILE_ENV: str(switch)})
    old = served.proc.wait_workers(lambda pids: len(pids) == 2)
    switch.write_text("fail")
    served.proc.signal(signal.SIGHUP)
    served.proc.wait_for(r"reload failed", timeout=60)
    assert "ASGI lifespan startup failed: no database" in served.log()
    with Conn(served.address) as conn:
        assert int(conn.request("GET", "/pid").body) in old
    switch.write_text("")
    served.proc.signal(signal.SIGHUP)
    served.proc.wait_for(r"reload complete", timeout=60)
    served.proc.wait_workers(lambda pids: len(pids) == 2 and not (pids & old))


# -- load and supervision --------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", loops())
def test_hups_under_keepalive_load_lose_nothing(prefork_server, tmp_path, loop):
    served = serve(prefork_server, tmp_path, "raw", "-w", "2", "--loop", loop)
    first = served.proc.wait_workers(lambda pids: len(pids) == 2)
    stats = hups_under_keepalive_load(served, "/hello", 8, 3)
    assert stats["failed"] == [], stats["failed"][:5]
    assert stats["ok"] > 100
    assert not (served.proc.worker_pids() & first)
    # Every retired worker ran its lifespan shutdown.
    served.proc.wait_for(r"worker exiting", count=6, timeout=30)
    assert len(served.records("shutdown")) >= 6


@pytest.mark.timeout(60)
def test_max_requests_recycles_the_worker(prefork_server, tmp_path):
    served = serve(prefork_server, tmp_path, "raw", "-w", "1", "--max-requests", "20")
    first = served.proc.wait_workers(lambda pids: len(pids) == 1)
    with Conn(served.address) as conn:
        for _ in range(25):
            assert conn.request("GET", "/hello").status == 200
    served.proc.wait_for(r"reached max_requests")
    served.proc.wait_workers(lambda pids: len(pids) == 1 and not (pids & first))
    served.proc.wait_for(r"worker exiting")
    assert served.records("shutdown")


@pytest.mark.timeout(60)
def test_a_blocked_loop_stops_the_heartbeat(prefork_server, tmp_path):
    served = serve(prefork_server, tmp_path, "raw", "-w", "1", "--timeout", "2")
    stuck = served.proc.wait_workers(lambda pids: len(pids) == 1).pop()
    with Conn(served.address, timeout=30) as conn:
        conn.send(b"GET /block?s=30 HTTP/1.1\r\nHost: t\r\n\r\n")
        served.proc.wait_for(rf"worker {stuck} \(gen 1\) timed out \(no heartbeat", timeout=15)
        served.proc.wait_for(r'File ".*asgiapps\.py", line \d+ in raw', timeout=10)
    served.proc.wait_workers(lambda pids: len(pids) == 1 and stuck not in pids)
    served.proc.wait_for(r"worker ready", count=2)


@pytest.mark.timeout(60)
def test_request_timeout_cancels_the_request_not_the_worker(prefork_server, tmp_path):
    served = serve(prefork_server, tmp_path, "raw", "-w", "1", "--request-timeout", "1")
    with Conn(served.address, timeout=15) as conn:
        pid = int(conn.request("GET", "/pid").body)
        began = time.monotonic()
        r = conn.request("GET", "/slow?s=30")
        assert r.status == 504 and time.monotonic() - began < 5
    served.proc.wait_for(r'request_timeout \(1 s\) passed: cancelling "GET /slow\?s=30 HTTP/1.1"')
    served.proc.wait_for(r'File ".*asgiapps\.py", line \d+, in raw')
    with Conn(served.address) as conn:
        assert int(conn.request("GET", "/pid").body) == pid     # the same worker serves on


# -- what serves what -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_asyncio_on_a_wsgi_app_is_refused(tmp_path):
    done = run_prefork(["serve", "wsgiapps:hello", "-b", "127.0.0.1:0", "-k", "asyncio"],
                       tmp_path, timeout=25)
    assert done.returncode == 3
    assert "'wsgiapps:hello' is a WSGI application, not an ASGI 3 application" in done.stderr
    done = run_prefork(["serve", "asgiapps:raw", "-b", "127.0.0.1:0", "-k", "sync"],
                       tmp_path, timeout=25)
    assert done.returncode == 3
    assert "is an ASGI 3 application: -k sync serves WSGI apps" in done.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target", ["asgiapps:instance", "asgiapps:make_raw()"])
def test_instances_and_factories_are_asgi(tmp_path, target):
    done = run_prefork(["check", target, "-b", "127.0.0.1:0"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"OK: {target} is an ASGI 3 application" in done.stdout
