"""HUP under load from keep-alive HTTP clients: no request fails.

The old generation must not close a keep-alive connection under a request
already on its way: it answers it with Connection: close, and the client's
next request goes to a new worker on a new connection.
"""


import pytest

from http_helpers import start
from load_clients import hups_under_keepalive_load

pytestmark = pytest.mark.integration

CLIENTS = 8
RELOADS = 5


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_hups_under_keepalive_load_lose_nothing(prefork_server, tmp_path, kind):
    served = start(prefork_server, tmp_path, "router", "-w", "2", "-k", kind)
    old = served.proc.wait_workers(lambda pids: len(pids) == 2)
    stats = hups_under_keepalive_load(served, "/hello/", CLIENTS, RELOADS)
    assert stats["failed"] == [], stats["failed"][:5]
    assert stats["ok"] > 100
    assert not (served.proc.worker_pids() & old)
