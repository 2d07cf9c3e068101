"""Handler classes answer over real sockets: echo, http.server keep-alive, IPv6,
several listeners, errors inside handlers, Nagle, many idle keep-alive clients,
process titles."""

import http.client
import re
import socket
import threading
import time

import pytest

from harness import cmdline, echo_once

pytestmark = pytest.mark.integration

ECHO = "prefork.examples.echo:UpperEchoHandler"
HELLO = "prefork.examples.hello:HelloHandler"


def get_many(address: tuple, count: int, timeout: float = 5.0) -> list:
    """``count`` GETs on one connection; fails unless they all used the same socket."""
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    bodies, sockets_used = [], set()
    try:
        for _ in range(count):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            bodies.append(response.read())
            # http.client silently reconnects after a close: catch that here.
            assert conn.sock is not None, "server closed a keep-alive connection"
            sockets_used.add(conn.sock.getsockname())
    finally:
        conn.close()
    assert len(sockets_used) == 1, f"{count} requests used {len(sockets_used)} connections"
    return bodies


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_echo_handler(prefork_server, kind):
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "2", "-k", kind)
    server.wait_ready()
    for _ in range(5):
        assert echo_once(server.address, b"hello\nworld\n") == b"HELLO\nWORLD\n"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_http_server_keepalive(prefork_server, kind):
    server = prefork_server("serve", HELLO, "-b", "127.0.0.1:0", "-w", "2", "-k", kind)
    server.wait_ready()
    bodies = get_many(server.address, 5)
    assert all(b.startswith(b"Hello, world! (worker ") for b in bodies)
    # One connection, one worker: the PID in the body never changes.
    assert len(set(bodies)) == 1
    pid = int(re.search(rb"worker (\d+)", bodies[0]).group(1))
    assert pid in server.worker_pids()


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.timeout(30)
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 on loopback")
def test_ipv6_loopback(prefork_server):
    server = prefork_server("serve", HELLO, "-b", "[::1]:0", "-b", "127.0.0.1:0", "-w", "1")
    server.wait_ready()
    six, four = server.addresses()
    assert six[0] == "::1" and four[0] == "127.0.0.1"
    for address in (six, four):
        assert get_many(address, 3)[0].startswith(b"Hello, world!")


@pytest.mark.timeout(30)
def test_several_bind_addresses(prefork_server):
    # Two spellings of loopback, so the specs differ (see the duplicate test below).
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-b", "localhost:0",
                            "-w", "2")
    server.wait_ready()
    addresses = server.addresses()
    assert len(addresses) == 2 and addresses[0] != addresses[1]
    for address in addresses:
        assert address[0] == "127.0.0.1"
        for _ in range(3):
            assert echo_once(address, b"both\n") == b"BOTH\n"


@pytest.mark.timeout(30)
def test_repeated_bind_address_does_not_crash_workers(prefork_server):
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-b", "127.0.0.1:0",
                            "-w", "1")
    server.wait_for(r"ready: serving with|worker crashed")
    assert "worker crashed" not in server.log()
    for address in server.addresses():
        assert echo_once(address, b"twice\n") == b"TWICE\n"
    assert "worker crashed" not in server.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_handler_error_is_logged_and_worker_goes_on(prefork_server, kind):
    server = prefork_server("serve", "testapps:SometimesFailingHandler",
                            "-b", "127.0.0.1:0", "-w", "1", "-k", kind)
    server.wait_ready()
    (worker,) = server.live_workers()
    assert echo_once(server.address, b"boom\n") == b""
    server.wait_for(r"error in SometimesFailingHandler while serving 127\.0\.0\.1:\d+")
    server.wait_for(r"Traceback \(most recent call last\):(.|\n)*"
                    r"RuntimeError: boom from SometimesFailingHandler")
    # The same process answers afterwards: nothing crashed or was replaced.
    for _ in range(3):
        assert echo_once(server.address, b"ok\n") == f"{worker}\n".encode()
    assert echo_once(server.address, b"boom\n") == b""
    assert echo_once(server.address, b"ok\n") == f"{worker}\n".encode()
    assert server.live_workers() == {worker}
    assert "worker crashed" not in server.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_keepalive_responses_are_not_delayed_by_nagle(prefork_server, kind):
    # http.server writes headers and body in two sends; with Nagle on, the
    # body waits for the client's delayed ACK, ~40 ms per response.
    server = prefork_server("serve", HELLO, "-b", "127.0.0.1:0", "-w", "1", "-k", kind)
    server.wait_ready()
    get_many(server.address, 2)   # warm up: imports, first-connection costs
    started = time.monotonic()
    get_many(server.address, 20)
    elapsed = time.monotonic() - started
    assert elapsed < 0.8, f"20 keep-alive requests took {elapsed:.3f} s (Nagle?)"


@pytest.mark.timeout(60)
def test_64_idle_keepalive_clients_all_get_answers(prefork_server):
    server = prefork_server("serve", HELLO, "-b", "127.0.0.1:0", "-w", "2")
    server.wait_ready()
    clients = 64
    all_connected = threading.Barrier(clients, timeout=30)
    results, errors = {}, []

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(*server.address, timeout=20)
        try:
            for round_ in range(2):
                conn.request("GET", f"/{n}/{round_}")
                response = conn.getresponse()
                results[(n, round_)] = (response.status, response.read())
                if round_ == 0:
                    # Every client now holds an idle keep-alive connection.
                    all_connected.wait()
        except Exception as exc:   # reported below, with which client failed
            errors.append((n, repr(exc)))
            all_connected.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    assert not errors, f"{len(errors)} clients failed, e.g. {errors[:3]}"
    assert len(results) == 2 * clients
    assert all(status == 200 for status, _ in results.values())


@pytest.mark.timeout(30)
def test_process_titles(prefork_server):
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "2")
    server.wait_ready()
    assert cmdline(server.pid).startswith(f"prefork: master [{ECHO}]")
    workers = server.wait_workers(lambda p: len(p) == 2)
    for pid in workers:
        assert re.match(rf"prefork: worker \[{re.escape(ECHO)}\] gen 1\b", cmdline(pid)), \
            cmdline(pid)
