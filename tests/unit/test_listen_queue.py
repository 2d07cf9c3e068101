"""Each listener's accept queue and backlog: read from the kernel, in the snapshot,
in `prefork status`'s table and in the Prometheus text."""

import socket
from pathlib import Path

import pytest

from prefork import metrics
from prefork.commands import format_status
from prefork.sockets import BindOptions, accept_queue_length, bind, listen_queue, parse
from prefork.supervisor.status import listener_queues

REPORT = {
    "pid": 100, "target": "app:application", "generation": 1, "workers_wanted": 1,
    "phase": "running", "workers": [],
    "listeners": [{"name": "127.0.0.1:8000", "queue": 5, "backlog": 2048},
                  {"name": "unix:/run/app.sock", "queue": 0, "backlog": 128},
                  {"name": "udp://127.0.0.1:9000", "queue": None, "backlog": None}],
}


def unix_diag() -> bool:
    """Whether this kernel answers sock_diag for unix sockets (CONFIG_UNIX_DIAG)."""
    with socket.socket(socket.AF_UNIX) as probe:
        probe.bind("\0prefork-test-probe-%d" % id(probe))
        probe.listen(1)
        return listen_queue(probe) is not None


def test_tcp_queue_and_backlog():
    listener = bind(parse("127.0.0.1:0"), BindOptions(16))
    clients = [socket.create_connection(listener.address) for _ in range(3)]
    try:
        assert listen_queue(listener.sock) == (3, 16)
        assert accept_queue_length(listener.sock) == 3
    finally:
        for c in clients:
            c.close()
        listener.close()


@pytest.mark.skipif(not unix_diag(), reason="no sock_diag for unix sockets here")
def test_unix_stream_queue_and_backlog(tmp_path: Path):
    listener = bind(parse(f"unix:{tmp_path / 's'}"), BindOptions(9))
    clients = []
    try:
        assert listen_queue(listener.sock) == (0, 9)
        for _ in range(4):
            clients.append(socket.socket(socket.AF_UNIX))
            clients[-1].connect(str(tmp_path / "s"))
        assert listen_queue(listener.sock) == (4, 9)
    finally:
        for c in clients:
            c.close()
        listener.close(unlink=True)


def test_sockets_that_do_not_listen_have_no_queue(tmp_path: Path):
    made = [bind(parse("udp://127.0.0.1:0")), bind(parse(f"unix-dgram:{tmp_path / 'd'}")),
            bind(parse("127.0.0.1:0"), listen=False),     # the master's, with reuse_port
            bind(parse(f"unix:{tmp_path / 'u'}"), listen=False)]
    try:
        assert [listen_queue(l.sock) for l in made] == [None] * 4
        assert [q["queue"] for q in listener_queues(made)] == [None] * 4
        assert [q["backlog"] for q in listener_queues(made)] == [None] * 4
    finally:
        for listener in made:
            listener.close(unlink=True)


def test_listener_queues_names_each_listener_as_logged():
    listener = bind(parse("127.0.0.1:0"), BindOptions(32))
    try:
        [entry] = listener_queues([listener])
        assert entry == {"name": listener.name, "queue": 0, "backlog": 32}
        assert entry["name"] == "127.0.0.1:%d" % listener.address[1]
    finally:
        listener.close()


def test_prometheus_gauges_per_listener():
    lines = metrics.render(REPORT).splitlines()
    for name in ("prefork_listen_queue_length", "prefork_listen_queue_backlog"):
        at = lines.index(f"# TYPE {name} gauge")
        assert lines[at - 1].startswith(f"# HELP {name} ")
    assert 'prefork_listen_queue_length{listener="127.0.0.1:8000"} 5' in lines
    assert 'prefork_listen_queue_backlog{listener="127.0.0.1:8000"} 2048' in lines
    assert 'prefork_listen_queue_length{listener="unix:/run/app.sock"} 0' in lines
    assert 'prefork_listen_queue_backlog{listener="unix:/run/app.sock"} 128' in lines
    assert not [line for line in lines if "udp://" in line]    # unknown: no sample


def test_prometheus_parses_the_listener_gauges():
    parser = pytest.importorskip("prometheus_client.parser")
    found = {(s.name, s.labels["listener"]): s.value
             for family in parser.text_string_to_metric_families(metrics.render(REPORT))
             for s in family.samples if "listener" in s.labels}
    assert found == {("prefork_listen_queue_length", "127.0.0.1:8000"): 5,
                     ("prefork_listen_queue_backlog", "127.0.0.1:8000"): 2048,
                     ("prefork_listen_queue_length", "unix:/run/app.sock"): 0,
                     ("prefork_listen_queue_backlog", "unix:/run/app.sock"): 128}


def test_no_listeners_no_gauges():
    text = metrics.render({"pid": 1, "workers": []})
    assert "prefork_listen_queue" not in text


def test_status_table_has_a_line_per_listener():
    lines = format_status(REPORT).splitlines()
    assert lines[-3:] == ["listener 127.0.0.1:8000  queue 5/2048",
                          "listener unix:/run/app.sock  queue 0/128",
                          "listener udp://127.0.0.1:9000  queue -/-"]
    # A report read from /proc has no listeners: no such line.
    assert "listener" not in format_status({"pid": 1, "workers": []})
