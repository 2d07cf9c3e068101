"""The adaptive pool with real processes: -w 1 --max-workers 3 grows under slow
requests and shrinks back, gracefully, once calm."""

import http.client
import json
import threading

import pytest

from harness import run_prefork
from http_helpers import app_args

pytestmark = pytest.mark.integration


def get(address: tuple, path: str, results: list) -> None:
    try:
        conn = http.client.HTTPConnection(*address, timeout=30)
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        results.append((response.status, response.read()))
        conn.close()
    except OSError as exc:
        results.append((0, repr(exc).encode()))


@pytest.mark.timeout(40)
def test_grows_under_slow_requests_and_shrinks_back_when_calm(prefork_server, tmp_path):
    sock = tmp_path / "ctl.sock"
    server = prefork_server(*app_args("slow", "-w", "1", "--max-workers", "3", "-k", "sync",
                                      "--idle-retire-after", "2",
                                      "--control-socket", str(sock)))
    server.wait_ready()
    server.wait_workers(lambda p: len(p) == 1)

    results: list = []
    clients = [threading.Thread(target=get, args=(server.address, f"/?t=2.5&id={i}", results))
               for i in range(4)]
    for client in clients:
        client.start()
    server.wait_for(r"pool: growing to 2 \((every worker busy|listen queue \d+)\)", timeout=10)
    server.wait_for(r"pool: growing to 3 \((every worker busy|listen queue \d+)\)", timeout=10)
    server.wait_workers(lambda p: len(p) == 3, timeout=10)
    status = run_prefork(["status", "--json", "--control-socket", str(sock)], tmp_path)
    assert status.returncode == 0, status.stderr
    assert len(json.loads(status.stdout)["workers"]) == 3
    assert "growing to 4" not in server.log()

    for client in clients:
        client.join(30)
    assert [code for code, _ in results] == [200] * 4, results

    # Calm: one worker retired per calm period (2 s), down to the floor.
    server.wait_for(r"pool: retiring worker \d+ \(idle \d+ s, calm\); shrinking to 2",
                    timeout=10)
    server.wait_for(r"pool: retiring worker \d+ \(idle \d+ s, calm\); shrinking to 1",
                    timeout=10)
    server.wait_workers(lambda p: len(p) == 1, timeout=10)
    after: list = []
    get(server.address, "/?t=0", after)
    assert after[0][0] == 200
    report = json.loads(run_prefork(["status", "--json", "--control-socket", str(sock)],
                                    tmp_path).stdout)
    assert (report["workers_floor"], report["workers_max"]) == (1, 3)
    assert report["pool_steps"] == {"grow": 2, "shrink": 2}
    text = run_prefork(["status", "--format", "prometheus", "--control-socket", str(sock)],
                       tmp_path).stdout
    assert 'prefork_pool_steps_total{direction="grow"} 2' in text
    assert "prefork_workers_max 3" in text
    # `prefork scale` moves the floor, and says so.
    scaled = run_prefork(["scale", "2", "--control-socket", str(sock)], tmp_path)
    assert scaled.returncode == 0, scaled.stderr
    assert "at least 2 workers, up to 3 under load" in scaled.stdout, scaled.stdout
    server.wait_for(r"scale: pool floor 2, up to 3 under load")
    server.wait_workers(lambda p: len(p) == 2, timeout=10)
    log = server.log()
    assert "shrinking to 0" not in log and "unexpectedly" not in log and "killed" not in log
