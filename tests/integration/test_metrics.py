"""Prometheus metrics: `prefork status --format prometheus` and GET /metrics at metrics_bind."""

import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from daemonized import ECHO, daemon  # noqa: E402,F401 (daemon is a fixture)
from harness import echo_once, free_port, run_prefork, wait_until  # noqa: E402

pytestmark = pytest.mark.integration

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_CLIENTS = 8        # prefork.supervisor.metrics_server
CLIENT_DEADLINE = 5.0


def start(prefork_server, tmp_path: Path, *extra: str, workers: int = 2):
    sock = tmp_path / "control.sock"
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", str(workers),
                            "--metrics-bind", "127.0.0.1:0", "--control-socket", str(sock),
                            *extra)
    server.wait_ready()
    return server, sock


def metrics_address(log: str) -> tuple:
    m = re.search(r"metrics at http://([\d.]+):(\d+)/metrics", log)
    assert m, log
    return m.group(1), int(m.group(2))


def scrape(address: tuple, path: str = "/metrics", timeout: float = 10.0):
    """(status, headers, body) of one GET."""
    url = f"http://{address[0]}:{address[1]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def samples(text: str) -> dict:
    """{name: {frozenset(labels): value}} as prometheus_client parses it."""
    found: dict = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return found


def per_pid(parsed: dict, name: str) -> dict:
    return {int(dict(k)["pid"]): v for k, v in parsed.get(name, {}).items()}


def status(sock: Path, fmt: str, cwd: Path) -> str:
    result = run_prefork(["status", "--control-socket", str(sock), "--format", fmt], cwd,
                         timeout=15)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.timeout(30)
def test_status_format_prometheus_counts_requests(prefork_server, tmp_path):
    server, sock = start(prefork_server, tmp_path)
    workers = server.wait_workers(lambda p: len(p) == 2)
    for i in range(3):
        assert echo_once(server.address, b"%d\n" % i) == b"%d\n" % i

    def counted() -> dict:
        return samples(status(sock, "prometheus", tmp_path))
    wait_until(lambda: sum(per_pid(counted(), "prefork_worker_requests_total").values()) == 3,
               5, "3 requests counted")
    parsed = counted()
    assert set(per_pid(parsed, "prefork_worker_requests_total")) == workers
    assert all(v > 1024 * 1024 for v in per_pid(parsed, "prefork_worker_rss_bytes").values())
    assert parsed["prefork_workers_wanted"] == {frozenset(): 2}
    assert parsed["prefork_workers_ready"] == {frozenset(): 2}
    assert parsed["prefork_generation"] == {frozenset(): 1}
    # --json is still --format json.
    result = run_prefork(["status", "--control-socket", str(sock), "--json"], tmp_path)
    assert json.loads(result.stdout)["pid"] == server.pid


@pytest.mark.timeout(30)
def test_get_metrics_matches_status(prefork_server, tmp_path):
    server, sock = start(prefork_server, tmp_path)
    address = metrics_address(server.log())
    for _ in range(4):
        echo_once(server.address)
    wait_until(lambda: sum(w["requests"] for w in json.loads(status(sock, "json", tmp_path))
                           ["workers"]) == 4, 5, "4 requests counted")
    code, headers, body = scrape(address)
    assert code == 200 and headers["Content-Type"] == CONTENT_TYPE
    assert int(headers["Content-Length"]) == len(body.encode())
    assert headers["Connection"] == "close"
    parsed = samples(body)
    report = json.loads(status(sock, "json", tmp_path))
    assert per_pid(parsed, "prefork_worker_requests_total") == \
        {w["pid"]: w["requests"] for w in report["workers"]}
    assert parsed["prefork_master_info"] == {
        frozenset({"pid": str(server.pid), "target": ECHO}.items()): 1}
    assert parsed["prefork_worker_restarts_total"][frozenset({"reason": "crash"}.items())] == 0

    code, _, body = scrape(address, "/")
    assert code == 404 and "/metrics" in body
    code, _, _ = scrape(address, "/metrics?x=1")
    assert code == 200


@pytest.mark.timeout(30)
def test_workers_do_not_hold_the_metrics_socket(prefork_server, tmp_path):
    server, _ = start(prefork_server, tmp_path)
    _, port = metrics_address(server.log())
    inode = listening_inode(port)
    assert f"socket:[{inode}]" in socket_links(server.pid)
    for worker in server.wait_workers(lambda p: len(p) == 2):
        assert f"socket:[{inode}]" not in socket_links(worker), worker


@pytest.mark.timeout(40)
def test_silent_clients_hold_neither_the_control_socket_nor_supervision(prefork_server,
                                                                        tmp_path):
    server, sock = start(prefork_server, tmp_path)
    address = metrics_address(server.log())
    before = server.wait_workers(lambda p: len(p) == 2)
    silent = [socket.create_connection(address, timeout=30) for _ in range(MAX_CLIENTS + 2)]
    try:
        began = time.monotonic()
        report = json.loads(status(sock, "json", tmp_path))
        assert report["pid"] == server.pid
        assert time.monotonic() - began < CLIENT_DEADLINE - 1, "status waited for the clients"

        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        server.wait_workers(lambda p: victim not in p and len(p) == 2, timeout=3)
        server.wait_for(r"worker \d+ \(gen 1\) was killed by SIGKILL")
        assert time.monotonic() - began < CLIENT_DEADLINE, "replaced only once clients left"

        # Slots free up at the deadline: a scrape waiting behind them is answered then.
        code, _, body = scrape(address, timeout=CLIENT_DEADLINE + 10)
        assert code == 200
        parsed = samples(body)
        assert parsed["prefork_worker_restarts_total"][
            frozenset({"reason": "crash"}.items())] == 1
        assert victim not in per_pid(parsed, "prefork_worker_requests_total")
        for s in silent[:MAX_CLIENTS]:      # the ones held were closed by the master
            s.settimeout(CLIENT_DEADLINE + 5)
            assert s.recv(10) == b""
    finally:
        for s in silent:
            s.close()


@pytest.mark.timeout(30)
def test_metrics_bind_in_use_exits_4_naming_it(prefork_server, tmp_path):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = "127.0.0.1:%d" % holder.getsockname()[1]
        sock = tmp_path / "control.sock"
        server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "1",
                                "--metrics-bind", taken, "--control-socket", str(sock))
        assert server.wait_exit() == 4
    error = server.log()
    assert f"metrics_bind: cannot bind {taken}: address already in use" in error, error
    assert "starting generation" not in error
    assert not sock.exists()


@pytest.mark.timeout(30)
def test_bad_metrics_bind_exits_2_naming_it(prefork_server):
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "--metrics-bind", "nowhere")
    assert server.wait_exit() == 2
    assert "'metrics_bind'" in server.log(), server.log()


@pytest.mark.timeout(30)
def test_daemon_serves_metrics_and_pidfile_status_renders_proc(daemon):
    d = daemon()
    result = d.start(ECHO, "-b", "127.0.0.1:0", "-w", "2", "--metrics-bind", "127.0.0.1:0")
    assert result.returncode == 0, result.stderr + d.log()
    workers = d.wait_workers(lambda p: len(p) == 2)
    code, _, body = scrape(metrics_address(d.log()))
    assert code == 200 and set(per_pid(samples(body), "prefork_worker_rss_bytes")) == workers

    os.unlink(f"{d.pidfile}.ctl")    # as an older prefork: no control socket beside the pidfile
    result = d.ctl("status", "--pidfile", str(d.pidfile), "--format", "prometheus")
    assert result.returncode == 0, result.stderr
    parsed = samples(result.stdout)
    # /proc knows the processes and their memory, not their requests.
    assert set(per_pid(parsed, "prefork_worker_rss_bytes")) == workers
    assert parsed["prefork_workers_alive"] == {frozenset(): 2}
    assert "prefork_worker_requests_total" not in parsed
    assert list(parsed["prefork_master_rss_bytes"].values())[0] > 0


# -- /proc helpers ---------------------------------------------------------------


def listening_inode(port: int) -> str:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(":%04X" % port) and fields[3] == "0A":   # LISTEN
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def socket_links(pid: int) -> set:
    links = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.add(os.readlink(fd))
        except OSError:
            pass
    return links


def refused(address: tuple) -> bool:
    try:
        socket.create_connection(address, timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.timeout(60)
def test_hup_moves_metrics_bind_and_a_failed_move_keeps_the_old_endpoint(prefork_server,
                                                                        tmp_path):
    config = tmp_path / "prefork.toml"
    first, second = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())

    def configure(metrics: str) -> None:
        config.write_text(f'bind = ["127.0.0.1:0"]\nworkers = 1\n{metrics}')

    configure(f'metrics_bind = "127.0.0.1:{first[1]}"\n')
    server = prefork_server("serve", ECHO, "-c", str(config))
    server.wait_ready()
    assert scrape(first)[0] == 200

    configure(f'metrics_bind = "127.0.0.1:{second[1]}"\n')
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete")
    assert scrape(second)[0] == 200 and refused(first)
    assert f"metrics at http://127.0.0.1:{second[1]}/metrics" in server.log()

    with socket.socket() as holder:    # the next address is taken: the reload fails
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        configure(f'metrics_bind = "127.0.0.1:{holder.getsockname()[1]}"\n')
        server.signal(signal.SIGHUP)
        failed = server.wait_for(r"reload failed: .*")[0].group(0)
        assert "metrics_bind" in failed and "address already in use" in failed, failed
        assert scrape(second)[0] == 200
        assert echo_once(server.address) == b"HELLO\n"

    configure("")                       # unset: the endpoint closes
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete", count=2)
    assert refused(second)
    assert echo_once(server.address) == b"HELLO\n"


def unix_queue_readable(tmp_path: Path) -> bool:
    """Whether this kernel tells a unix listener's queue (sock_diag with unix_diag)."""
    from prefork.sockets import listen_queue
    with socket.socket(socket.AF_UNIX) as probe:
        probe.bind(str(tmp_path / "probe.sock"))
        probe.listen(4)
        return listen_queue(probe) == (0, 4)


@pytest.mark.timeout(40)
def test_listen_queue_depth_in_status_and_metrics(prefork_server, tmp_path):
    # One sync worker held by a slow request: the next connections wait in the
    # accept queue.  TCP_DEFER_ACCEPT queues a TCP connection only once it has
    # sent data, so each one sends its request.
    sock, unix_path, waiting = tmp_path / "control.sock", tmp_path / "app.sock", 3
    server = prefork_server("serve", "wsgiapps:slow", "-b", "127.0.0.1:0",
                            "-b", f"unix:{unix_path}", "-w", "1", "-k", "sync",
                            "--metrics-bind", "127.0.0.1:0", "--control-socket", str(sock))
    server.wait_ready()
    host, port = server.address
    tcp_name, unix_name = f"{host}:{port}", f"unix:{unix_path}"
    request = b"GET /?t=%d HTTP/1.1\r\nHost: x\r\n\r\n"
    clients = [socket.create_connection((host, port), timeout=30)]
    try:
        clients[0].sendall(request % 20)
        server.wait_for(r"slow: start")
        for _ in range(waiting):
            clients.append(socket.create_connection((host, port), timeout=30))
            clients[-1].sendall(request % 0)
        for _ in range(2):
            clients.append(socket.socket(socket.AF_UNIX))
            clients[-1].connect(str(unix_path))

        def listeners() -> dict:
            report = json.loads(status(sock, "json", tmp_path))
            return {l["name"]: l for l in report["listeners"]}
        wait_until(lambda: listeners()[tcp_name]["queue"] >= waiting, 10,
                   f"{waiting} connections queued")
        tcp = listeners()[tcp_name]
        assert tcp["backlog"] > 0 and tcp["queue"] <= tcp["backlog"], tcp
        if unix_queue_readable(tmp_path):
            assert listeners()[unix_name]["queue"] == 2, listeners()
            assert listeners()[unix_name]["backlog"] > 0, listeners()
        else:
            assert listeners()[unix_name]["queue"] is None, listeners()

        text = status(sock, "table", tmp_path)
        assert re.search(rf"^listener {re.escape(tcp_name)}  queue [1-9]\d*/{tcp['backlog']}$",
                         text, re.M), text
        code, _, body = scrape(metrics_address(server.log()))
        assert code == 200
        parsed = samples(body)
        key = frozenset({"listener": tcp_name}.items())
        assert parsed["prefork_listen_queue_length"][key] >= waiting, body
        assert parsed["prefork_listen_queue_backlog"][key] == tcp["backlog"], body
        assert "# TYPE prefork_listen_queue_length gauge" in body
    finally:
        for client in clients:
            client.close()
