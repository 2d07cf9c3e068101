"""The server and the clients of test_hostile_edge.py.

:class:`Edge` starts one kind of server on a TLS address and is its real
client; :class:`Loris` keeps up connections that never complete a
handshake; :func:`refusals` opens many hostile connections at once and
reads how the server ended each, :func:`summary` turns that into a figure
and :func:`check_refused` judges it.
"""

from __future__ import annotations

import json
import selectors
import socket
import ssl
import struct
import time
from typing import Dict, List, Optional

import pytest

KINDS = {"sync-wsgi": ("hostile_edge_apps:wsgi", "sync"),
         "thread-handler": ("hostile_edge_apps:AddressHandler", "thread"),
         "asyncio-asgi": ("hostile_edge_apps:asgi", "asyncio")}
HEADER_TIMEOUT = 2.0
PROBE_TIMEOUT = 5.0
GOOD_PROXY = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n"
TRICKLE = 0.1                # seconds between two bytes of a trickled ClientHello


def client_hello(context: ssl.SSLContext) -> bytes:
    """The bytes of a real ClientHello, from a handshake run on memory BIOs."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class Loris:
    """``n`` connections that never finish a handshake: silent ones, or ClientHellos sent a
    byte every TRICKLE s.  One the server closes is opened again (a new wave) and its age at
    the close noted.  Driven by :meth:`pump`, between the real client's requests."""

    def __init__(self, address, n: int, hello: Optional[bytes]) -> None:
        self.address, self.n, self.hello = address, n, hello
        self.selector = selectors.DefaultSelector()
        self.state: Dict[socket.socket, list] = {}    # [opened at, bytes sent, next send]
        self.ages: List[float] = []
        self.connect_errors = 0
        self.reopen = True

    def fill(self) -> None:
        while self.reopen and len(self.state) < self.n:
            try:
                sock = socket.create_connection(self.address, timeout=PROBE_TIMEOUT)
            except OSError:
                self.connect_errors += 1
                return
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            now = time.monotonic()
            self.state[sock] = [now, 0, now]

    def pump(self) -> None:
        now = time.monotonic()
        for key, _ in self.selector.select(0):
            try:
                gone = not key.fileobj.recv(4096)     # bytes before a close: an alert
            except BlockingIOError:
                continue
            except OSError:
                gone = True
            if gone:
                self.ages.append(now - self.state[key.fileobj][0])
                self._drop(key.fileobj)
        if self.hello:
            for sock, state in list(self.state.items()):
                if state[1] < len(self.hello) and now >= state[2]:
                    try:
                        state[1] += sock.send(self.hello[state[1]:state[1] + 1])
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.ages.append(now - state[0])
                        self._drop(sock)
                        continue
                    state[2] = now + TRICKLE
        self.fill()

    def _drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        del self.state[sock]
        sock.close()

    def close(self) -> None:
        for sock in list(self.state):
            self._drop(sock)
        self.selector.close()



def refusals(address, cases: Dict[str, List[tuple]], wait: float) -> Dict[str, list]:
    """Open every case's connections at once, each sending its bytes then, per its
    ending, EOF ("eof"), RST ("rst") or nothing ("idle"); then read each until the
    server closes it.  Per case: (bytes received, "closed"/"reset"/"open", seconds)."""
    selector = selectors.DefaultSelector()
    outcome: Dict[str, list] = {name: [] for name in cases}
    began = time.monotonic()
    for name, payloads in cases.items():
        for data, ending in payloads:
            sock = socket.create_connection(address, timeout=PROBE_TIMEOUT)
            sock.sendall(data)
            if ending == "rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                continue
            if ending == "eof":
                sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, [name, b""])
    deadline = began + wait
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(0.05):
            name, received = key.data
            try:
                data = key.fileobj.recv(65536)
                how = "closed"
            except OSError:
                data, how = b"", "reset"
            if data:
                key.data[1] += data
                continue
            outcome[name].append((received, how, time.monotonic() - began))
            selector.unregister(key.fileobj)
            key.fileobj.close()
    for key in list(selector.get_map().values()):
        outcome[key.data[0]].append((key.data[1], "open", wait))
        key.fileobj.close()
    selector.close()
    return outcome


def summary(outcome: Dict[str, list]) -> Dict[str, str]:
    """Per case: how many of each ending, what came back, the slowest close."""
    told = {}
    for name, results in outcome.items():
        kinds: Dict[str, int] = {}
        for received, how, _ in results:
            what = ("400" if received.startswith(b"HTTP/1.1 400") else
                    "alert" if received[:1] == b"\x15" else
                    "nothing" if not received else repr(received[:20]))
            kinds[f"{how}/{what}"] = kinds.get(f"{how}/{what}", 0) + 1
        told[name] = " ".join(f"{k}:{v}" for k, v in sorted(kinds.items())) + \
            f" max {max((t for _, _, t in results), default=0):.2f}s"
    return told


class Edge:
    """One server under test, and a real client of it."""

    def __init__(self, prefork_server, certs, tmp_path, kind: str, *extra: str,
                 proxied: bool = False) -> None:
        """``proxied``: the real client is a proxy (``--proxy-protocol auto``), so
        it sends GOOD_PROXY first and the app sees 203.0.113.7."""
        target, worker = KINDS[kind]
        if proxied:
            extra += ("--proxy-protocol", "auto")
        self.proxy, self.real = (GOOD_PROXY, "203.0.113.7") if proxied else (b"", "127.0.0.1")
        self.calls_file = tmp_path / "calls.jsonl"
        self.proc = prefork_server("serve", target, "-b", "tls://127.0.0.1:0", "--certfile",
                                   certs.certfile, "-w", "2", "-k", worker, "--header-timeout",
                                   str(HEADER_TIMEOUT), *extra,
                                   env={"PREFORK_TEST_CALLS": str(self.calls_file)})
        self.proc.wait_ready()
        self.proc.wait_workers(lambda pids: len(pids) == 2)
        found = self.proc.wait_for(r"listening at tls://([\d.]+):(\d+)")[0]
        self.address = (found.group(1), int(found.group(2)))
        self.kind, self.http, self.client = kind, kind != "thread-handler", certs.client
        self.workers = sorted(self.proc.worker_pids())

    def connect(self, proxy: Optional[bytes] = None) -> ssl.SSLSocket:
        raw = socket.create_connection(self.address, timeout=PROBE_TIMEOUT)
        raw.sendall(self.proxy if proxy is None else proxy)
        return self.client.wrap_socket(raw, server_hostname="127.0.0.1")

    def ask(self, proxy: Optional[bytes] = None, headers: bytes = b"",
            line: bytes = b"who\n") -> dict:
        """One request on a new TLS connection: what the app was told of the client."""
        with self.connect(proxy) as tls:
            if not self.http:
                tls.sendall(line)
                host, port = tls.makefile("rb").readline().split()
                return {"remote_addr": host.decode(), "remote_port": port.decode()}
            reply = exchange(tls, b"GET / HTTP/1.1\r\nHost: edge\r\n" + headers
                             + b"Connection: close\r\n\r\n")
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), reply[:300]
            return json.loads(body)

    def calls(self) -> List[dict]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def unharmed(self) -> None:
        """A real client answered, the same workers, no traceback."""
        assert self.ask()["remote_addr"] == self.real
        log = self.proc.log()
        assert "Traceback" not in log, log[-3000:]
        assert sorted(self.proc.worker_pids()) == self.workers, \
            f"a worker was replaced:\n{log[-3000:]}"


def check_refused(edge: Edge, outcome: Dict[str, list], plain: tuple = ()) -> None:
    """Nothing left open, and each answer a close, a TLS alert, or (for ``plain`` cases on
    HTTP listeners) a 400; none reached the app."""
    for name, results in outcome.items():
        for received, how, _ in results:
            assert how != "open", f"{name}: still open after the wait: {summary(outcome)}"
            if name in plain and edge.http:
                assert received.startswith(b"HTTP/1.1 400 "), (name, received[:200])
            else:
                assert received[:1] in (b"", b"\x15"), (name, received[:200])
    assert edge.calls() == [], edge.calls()[:5]
