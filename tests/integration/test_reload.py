"""HUP: zero-downtime reload under load, and reloads that must fail safely."""

import re
import signal
import socket
import threading
import time

import pytest

from harness import cmdline, echo_once, free_port, pid_alive, refuses

pytestmark = pytest.mark.integration

ECHO = "prefork.examples.echo:UpperEchoHandler"


def load_loop(address: tuple, stop: threading.Event, stats: dict, lock: threading.Lock) -> None:
    """New connection, one line, full answer, again, until ``stop``; count every outcome."""
    n = 0
    while not stop.is_set():
        n += 1
        line = f"client {threading.get_ident()} request {n}\n".encode()
        try:
            answer = echo_once(address, line, timeout=10)
            ok = answer == line.upper()
            outcome = None if ok else f"wrong answer {answer!r}"
        except OSError as exc:
            outcome = repr(exc)
        with lock:
            if outcome is None:
                stats["ok"] += 1
            else:
                stats["failed"].append(outcome)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_five_hups_under_load_lose_nothing(prefork_server, kind):
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "2", "-k", kind)
    server.wait_ready()
    original = server.wait_workers(lambda p: len(p) == 2)
    stats = {"ok": 0, "failed": []}
    lock, stop = threading.Lock(), threading.Event()
    clients = [threading.Thread(target=load_loop, args=(server.address, stop, stats, lock))
               for _ in range(8)]
    for t in clients:
        t.start()
    try:
        for n in range(1, 6):
            started = time.monotonic()
            server.signal(signal.SIGHUP)
            server.wait_for(r"reload complete", count=n, timeout=30)
            # Pacing, not synchronisation: keep the HUPs about 0.5 s apart.
            time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
        # Some load after the last reload too, while the old workers drain.
        time.sleep(0.5)
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    assert not stats["failed"], (f"{len(stats['failed'])} failed of "
                                 f"{stats['ok'] + len(stats['failed'])}: {stats['failed'][:5]}")
    assert stats["ok"] > 50, stats["ok"]   # the load really ran throughout
    assert len(re.findall(r"reload complete", server.log())) == 5
    final = server.wait_workers(
        lambda p: len({x for x in p if pid_alive(x)}) == 2 and not (p & original))
    for pid in final:
        assert cmdline(pid).endswith("gen 6"), cmdline(pid)
    assert echo_once(server.address) == b"HELLO\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_hup_lets_the_old_worker_finish_its_request(prefork_server, kind):
    server = prefork_server("serve", "testapps:SlowHandler", "-b", "127.0.0.1:0",
                            "-w", "1", "-k", kind)
    server.wait_ready()
    (old,) = server.wait_workers(lambda p: len(p) == 1)
    with socket.create_connection(server.address, timeout=30) as client:
        client.sendall(b"3\n")
        server.wait_for(rf"slow: {old} sleeping")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload complete")
        (new,) = server.wait_workers(lambda p: len(p) == 2) - {old}
        # The new generation already serves while the old worker finishes.
        with socket.create_connection(server.address, timeout=10) as other:
            other.sendall(b"0\n")
            assert other.makefile("rb").readline() == f"done {new}\n".encode()
        assert pid_alive(old)
        assert client.makefile("rb").readline() == f"done {old}\n".encode()
    server.wait_workers(lambda p: p == {new})


HANDLER_SOURCE = '''
import os
import socketserver


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        self.wfile.write(("{tag} %d\\n" % os.getpid()).encode())
'''


def ask(address: tuple) -> tuple:
    """(tag, pid) from the module written by the test."""
    tag, pid = echo_once(address, b"?\n").split()
    return tag.decode(), int(pid)


@pytest.mark.timeout(90)
def test_hup_with_broken_module_keeps_old_workers(prefork_server, tmp_path):
    # The server's cwd is tmp_path, which prefork puts on sys.path.
    module = tmp_path / "reloadme.py"
    module.write_text(HANDLER_SOURCE.format(tag="v1"))
    server = prefork_server("serve", "reloadme:Handler", "-b", "127.0.0.1:0", "-w", "2")
    server.wait_ready()
    old = server.wait_workers(lambda p: len(p) == 2)
    assert ask(server.address)[0] == "v1"

    module.write_text("def broken(:\n    pass\n")
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload failed: .*generation 1 keeps serving")
    server.wait_for(r"cannot import module 'reloadme'(.|\n)*SyntaxError")
    # Same processes, old code, still answering; the failed ones are gone.
    server.wait_workers(lambda p: {x for x in p if pid_alive(x)} == old)
    for _ in range(6):
        tag, pid = ask(server.address)
        assert tag == "v1" and pid in old
    assert "reload complete" not in server.log()

    # A longer tag changes the file size, so a stale .pyc (mtime has 1 s
    # resolution) can never be mistaken for the new source.
    module.write_text(HANDLER_SOURCE.format(tag="v2-fixed"))
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete")
    new = server.wait_workers(
        lambda p: len({x for x in p if pid_alive(x)}) == 2 and not (p & old))
    for _ in range(6):
        tag, pid = ask(server.address)
        assert tag == "v2-fixed" and pid in new


@pytest.mark.timeout(60)
def test_hup_with_broken_config_keeps_old_workers(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text('bind = ["127.0.0.1:0"]\nworkers = 2\n')
    server = prefork_server("serve", ECHO, "-c", str(config))
    server.wait_ready()
    old = server.wait_workers(lambda p: len(p) == 2)

    config.write_text('bind = ["127.0.0.1:0"]\nworkers = 2\nno_such_setting = 1\n')
    server.signal(signal.SIGHUP)
    failed = server.wait_for(r"reload failed: .*")[0].group(0)
    assert "no_such_setting" in failed and str(config) in failed
    for _ in range(4):
        assert echo_once(server.address) == b"HELLO\n"
    assert server.live_workers() == old

    # Fixed, the next HUP reloads, with the new settings.
    config.write_text('bind = ["127.0.0.1:0"]\nworkers = 3\n')
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete: generation \d+ serving with 3 workers")
    server.wait_workers(lambda p: len({x for x in p if pid_alive(x)}) == 3 and not (p & old))
    assert echo_once(server.address) == b"HELLO\n"


@pytest.mark.timeout(60)
def test_hup_keeps_the_listening_socket(prefork_server):
    # The same "127.0.0.1:0" must keep its socket, not be re-bound to a fresh port.
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "1")
    server.wait_ready()
    (old,) = server.wait_workers(lambda p: len(p) == 1)
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete")
    server.wait_workers(lambda p: len(p) == 1 and old not in p)
    assert echo_once(server.address) == b"HELLO\n"


def _config(path, bind: str, workers: int = 2) -> None:
    path.write_text(f'bind = ["{bind}"]\nworkers = {workers}\n')


@pytest.mark.timeout(60)
def test_hup_moves_the_listener(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    _config(config, "127.0.0.1:0")
    server = prefork_server("serve", ECHO, "-c", str(config))
    server.wait_ready()
    old_address = server.address
    old = server.wait_workers(lambda p: len(p) == 2)
    port = free_port()   # a fixed port, so the test knows where to connect
    _config(config, f"127.0.0.1:{port}")
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete")
    assert echo_once(("127.0.0.1", port)) == b"HELLO\n"
    # Once the old generation is gone, nobody listens at the old address.
    server.wait_workers(lambda p: not (p & old))
    assert refuses(old_address)


@pytest.mark.timeout(60)
def test_hup_logs_new_listeners(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    _config(config, "127.0.0.1:0")
    server = prefork_server("serve", ECHO, "-c", str(config))
    server.wait_ready()
    _config(config, "localhost:0")
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload complete")
    assert len(server.addresses()) == 2
    assert echo_once(server.addresses()[-1]) == b"HELLO\n"


@pytest.mark.timeout(60)
def test_hup_to_an_address_in_use_keeps_old_workers(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    _config(config, "127.0.0.1:0")
    server = prefork_server("serve", ECHO, "-c", str(config))
    server.wait_ready()
    old = server.wait_workers(lambda p: len(p) == 2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = "127.0.0.1:%d" % holder.getsockname()[1]
        _config(config, taken)
        server.signal(signal.SIGHUP)
        failed = server.wait_for(r"reload failed: .*")[0].group(0)
    assert taken in failed and "in use" in failed, failed
    assert echo_once(server.address) == b"HELLO\n"
    assert server.live_workers() == old
