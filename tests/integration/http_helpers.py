"""Raw HTTP/1.1 over loopback sockets, and echo-app servers, for the test_http_* files.

The client is deliberately byte-level (no http.client): the tests need to send
malformed, pipelined and half-sent requests and to see exactly what framing
came back.  ``Served`` pairs a prefork process with the calls file the test
apps in tests/apps/wsgiapps.py append to (see that module).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from harness import APPS, PreforkProcess

sys.path.insert(0, str(APPS))
import wsgiapps  # noqa: E402  (the same module the server imports)

CALLS_ENV = wsgiapps.CALLS_ENV


class Response:
    def __init__(self, version: str, status: int, reason: str,
                 headers: List[Tuple[str, str]]) -> None:
        self.version, self.status, self.reason, self.headers = version, status, reason, headers
        self.body = b""
        self.chunked = False
        self.complete = True     # False: the connection ended inside the body

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.all(name)
        return values[-1] if values else default

    def all(self, name: str) -> List[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self) -> dict:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


def read_response(reader, method: str = "GET") -> Optional[Response]:
    """One response from a binary file-like; None on EOF before a status line."""
    line = reader.readline(65537)
    if not line:
        return None
    parts = line.rstrip(b"\r\n").decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not line.endswith(b"\r\n"):
        raise AssertionError(f"malformed status line {line!r}")
    version, status, reason = parts[0], int(parts[1]), (parts[2] if len(parts) > 2 else "")
    headers = []
    while True:
        line = reader.readline(65537)
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name, value.strip()))
    resp = Response(version, status, reason, headers)
    if status < 200 or status in (204, 304) or method == "HEAD":
        return resp
    if "chunked" in (resp.header("Transfer-Encoding") or "").lower():
        resp.chunked = True
        resp.body, resp.complete = _read_chunked(reader)
    elif resp.header("Content-Length") is not None:
        length = int(resp.header("Content-Length"))
        resp.body = _read_exactly(reader, length)
        resp.complete = len(resp.body) == length
    else:
        resp.body = reader.read()    # delimited by the close
    return resp


def _read_exactly(reader, length: int) -> bytes:
    parts, left = [], length
    while left:
        data = reader.read(min(left, 1 << 20))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _read_chunked(reader) -> Tuple[bytes, bool]:
    parts = []
    while True:
        line = reader.readline(1026)
        if not line.endswith(b"\r\n"):
            return b"".join(parts), False
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while True:          # trailers, then the empty line
                line = reader.readline(65537)
                if line == b"\r\n":
                    return b"".join(parts), True
                if not line:
                    return b"".join(parts), False
        data = _read_exactly(reader, size)
        parts.append(data)
        if len(data) < size or reader.read(2) != b"\r\n":
            return b"".join(parts), False


def build(method: str = "GET", target: str = "/", headers=(), body: bytes = b"",
          version: str = "HTTP/1.1", host: bool = True) -> bytes:
    lines = [f"{method} {target} {version}"]
    names = {name.lower() for name, _ in headers}
    if host and "host" not in names:
        lines.append("Host: test")
    lines += [f"{name}: {value}" for name, value in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ClientPort(str):
    """REMOTE_PORT as the app sees it, plus when this connection opened.

    Ephemeral ports come round again within one module's many connections:
    only calls recorded after ``opened`` can belong to this connection.
    """

    opened = 0.0


class Conn:
    """One client connection with a buffered reader."""

    def __init__(self, address: tuple, timeout: float = 10.0) -> None:
        opened = time.time()
        self.sock = socket.create_connection(address, timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.port = ClientPort(self.sock.getsockname()[1])
        self.port.opened = opened

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str = "GET", target: str = "/", headers=(), body: bytes = b"",
                version: str = "HTTP/1.1") -> Response:
        self.send(build(method, target, headers, body, version))
        return self.response(method)

    def response(self, method: str = "GET") -> Response:
        resp = read_response(self.reader, method)
        if resp is None:
            raise AssertionError("the server closed the connection without a response")
        return resp

    def at_eof(self) -> bool:
        """True if the server has closed (reset counts as closed)."""
        try:
            return self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get(address: tuple, target: str = "/", method: str = "GET", headers=(), body: bytes = b"",
        timeout: float = 10.0) -> Response:
    with Conn(address, timeout) as conn:
        return conn.request(method, target, headers, body)


class Served:
    """A running server and the calls file its app writes to."""

    def __init__(self, proc: PreforkProcess, calls: Path) -> None:
        self.proc = proc
        self.calls_path = calls
        self.address = proc.address

    def records(self, event: str = "call") -> List[dict]:
        try:
            text = self.calls_path.read_text()
        except FileNotFoundError:
            return []
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [r for r in lines if r["event"] == event]

    def calls_from(self, port: str, event: str = "call") -> List[dict]:
        since = getattr(port, "opened", 0.0)
        return [r for r in self.records(event)
                if r.get("remote_port") == port and r.get("time", 0.0) >= since]

    def with_id(self, ident: str, event: str = "call") -> List[dict]:
        return [r for r in self.records(event) if r.get("id") == ident]

    def wait_record(self, ident: str, event: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.with_id(ident, event)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event!r} record for {ident!r} within {timeout} s:\n"
                                     + self.proc.log()[-3000:])
            time.sleep(0.02)

    def log(self) -> str:
        return self.proc.log()


def app_args(app: str, *args: str) -> List[str]:
    """``app``: a name in wsgiapps, or a whole target ("asgiapps:hello")."""
    return ["serve", app if ":" in app else f"wsgiapps:{app}", "-b", "127.0.0.1:0", *args]


def start(prefork_server, workdir: Path, app: str, *args: str, env=None) -> Served:
    """A per-test server through conftest's ``prefork_server``."""
    calls = workdir / "calls.jsonl"
    proc = prefork_server(*app_args(app, *args), env={CALLS_ENV: str(calls), **(env or {})})
    proc.wait_ready()
    return Served(proc, calls)


@contextlib.contextmanager
def serving(tmp_path_factory, name: str, app: str, *args: str, env=None) -> Iterator[Served]:
    """A server for a whole module (a module-scoped fixture yields from this)."""
    workdir = tmp_path_factory.mktemp(name)
    calls = workdir / "calls.jsonl"
    proc = PreforkProcess(app_args(app, *args), workdir, {CALLS_ENV: str(calls), **(env or {})})
    try:
        proc.wait_ready()
        yield Served(proc, calls)
    finally:
        proc.cleanup()
