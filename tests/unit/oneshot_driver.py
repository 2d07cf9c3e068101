"""Driving a one-request-per-connection server (prefork.supervisor.oneshot) the way the
master's select loop does, with a clock the test moves for the deadlines."""

import select
import socket

from prefork.supervisor.oneshot import OneShotServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def turn(server: OneShotServer, timeout: float = 0.05) -> None:
    """One turn of the master's loop, for this server alone."""
    reading, writing = server.waiting()
    readable, writable, _ = select.select(reading, writing, [], timeout)
    server.handle(readable, writable)


def reply(server: OneShotServer, client: socket.socket, turns: int = 100) -> bytes:
    """Turn the server until ``client`` got its whole answer and was closed."""
    client.settimeout(0)
    data = b""
    for _ in range(turns):
        turn(server)
        try:
            chunk = client.recv(1 << 20)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"no complete answer: {data[:200]!r}")


def closed(sock: socket.socket) -> bool:
    """True if the server closed ``sock`` (EOF or reset) without sending anything."""
    sock.settimeout(0)
    try:
        return sock.recv(100) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class Clients:
    """The connections a test opens to ``address``, all closed by :meth:`close`."""

    def __init__(self, address: object, family: int = socket.AF_UNIX) -> None:
        self.address = address
        self.family = family
        self.open: list = []

    def connect(self, send: bytes = b"") -> socket.socket:
        c = socket.socket(self.family, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(self.address)
        self.open.append(c)
        if send:
            c.sendall(send)
        return c

    def close(self) -> None:
        for c in self.open:
            c.close()
