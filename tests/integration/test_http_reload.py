"""HUP under load from keep-alive HTTP clients: no request fails.

The old generation must not close a keep-alive connection under a request
already on its way: it answers it with Connection: close, and the client's
next request goes to a new worker on a new connection.
"""

import signal
import threading
import time

import pytest

from http_helpers import start
from load_clients import keepalive_loop

pytestmark = pytest.mark.integration

CLIENTS = 8
RELOADS = 5


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_hups_under_keepalive_load_lose_nothing(prefork_server, tmp_path, kind):
    served = start(prefork_server, tmp_path, "router", "-w", "2", "-k", kind)
    old = served.proc.wait_workers(lambda pids: len(pids) == 2)
    stop, lock = threading.Event(), threading.Lock()
    stats = {"ok": 0, "failed": []}
    clients = [threading.Thread(target=keepalive_loop,
                                args=(served.address, stop, stats, lock, "/hello/"))
               for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        for n in range(1, RELOADS + 1):
            served.proc.signal(signal.SIGHUP)
            served.proc.wait_for(r"reload complete", count=n, timeout=30)
            time.sleep(0.5)     # load between reloads, not a synchronisation
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    assert stats["failed"] == [], stats["failed"][:5]
    assert stats["ok"] > 100
    assert not (served.proc.worker_pids() & old)
