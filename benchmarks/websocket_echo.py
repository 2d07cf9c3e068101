"""A WebSocket echo under load: prefork's asyncio worker against uvicorn, gunicorn's
ASGI worker and granian, side by side.

The app is asgi_apps.py's echo at ``/ws``.  Each server runs 2 workers on
127.0.0.1: prefork ``-k asyncio``, uvicorn with httptools, uvloop and ``--ws
websockets``, gunicorn ``--worker-class asgi`` and granian ``--interface
asgi`` (peers installed into benchmarks/.peers on first use, with websockets
and wsproto for uvicorn).  The client is this script's own: 2 processes
holding 64 connections between them, each connection a closed loop that sends
one masked message (``--size`` bytes of text) and waits for its echo, which
must come back byte for byte.  Servers alternate round by round; the table
gives messages (round trips) per second, p50 and p99 and the ratio to
uvicorn, with every round's figures.

    python benchmarks/websocket_echo.py [--duration 10] [--rounds 3] [--size 32]
        [--connections 64] [--clients 2] [--binary] [--only prefork,uvicorn]
        [--current REV]

``--current REV`` runs prefork from a temporary worktree of REV rather than
the working tree.  A server that does not install, start or echo is left
out, with a note; a connection that closes or echoes wrong counts as an
error and leaves the run.  Never run as a test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import multiprocessing
import os
import select
import socket
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from asgi import PEER_INSTALLS, PEER_NAMES, servers as asgi_servers  # noqa: E402
from common import (Result, check_import, chosen, connection_spread,  # noqa: E402
                    describe_head, parse_args, peer_python, print_table, started_rounds,
                    worktree)

# uvicorn speaks WebSocket only with one of these installed.
INSTALLS = tuple(PEER_INSTALLS) + (["websockets"], ["wsproto"])
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def frame(payload: bytes, opcode: int, mask: Optional[bytes]) -> bytes:
    """One final frame; masked with ``mask`` (4 bytes) as a client must, or not."""
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes([0x80 | opcode, bit | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    # XOR as one big integer: done once per connection, so clarity over speed.
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return head + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def parse_frames(buf: bytes) -> Tuple[List[Tuple[int, bool, bytes]], bytes]:
    """The whole frames at the start of ``buf`` as (opcode, fin, payload), and the rest."""
    frames = []
    while len(buf) >= 2:
        n, at = buf[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(buf[2:10], "big"), 10
        masked = buf[1] & 0x80
        end = at + (4 if masked else 0) + n
        if len(buf) < end:
            break
        payload = buf[end - n:end]
        if masked:     # servers must not mask, but reading it costs nothing here
            key = (buf[at:at + 4] * (n // 4 + 1))[:n]
            payload = bytes(a ^ b for a, b in zip(payload, key))
        frames.append((buf[0] & 0x0F, bool(buf[0] & 0x80), payload))
        buf = buf[end:]
    return frames, buf


def handshake(port: int, timeout: float = 10.0) -> Tuple[socket.socket, bytes]:
    """A connection upgraded to WebSocket at /ws, and any bytes read past the 101's head.
    Raises OSError (ValueError for a refused or wrong upgrade)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n" % (port, key))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ValueError(f"closed during the handshake: {data[:200]!r}")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise ValueError(f"not upgraded: {head[:200]!r}")
        return sock, rest
    except BaseException:
        sock.close()
        raise


def payload_for(index: int, size: int, binary: bool) -> bytes:
    """Each connection's own message, so an echo sent to the wrong connection shows."""
    body = (b"%06d:" % index + bytes(range(256)) * (size // 256 + 1) if binary else
            (b"%06d:" % index + b"abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 1)))
    return body[:size]


class Connection:
    __slots__ = ("sock", "send", "request", "echo", "buf", "sent_at")

    def __init__(self, sock: socket.socket, rest: bytes, payload: bytes, opcode: int):
        self.sock, self.send, self.buf, self.sent_at = sock, sock.send, rest, 0.0
        self.request = frame(payload, opcode, os.urandom(4))
        # What a server sends back: unmasked, one frame (nothing here asks for
        # compression, and no server fragments a small message).
        self.echo = frame(payload, opcode, None)


def client(port: int, first: int, count: int, size: int, binary: bool, duration: float,
           ready, start_at, out) -> None:
    """One client process: ``count`` connections, ready, then closed loops until the
    shared start time plus ``duration``; sends (round trips, errors, latencies, CPU
    seconds used) to ``out``."""
    opcode = BINARY if binary else TEXT
    conns: Dict[int, Connection] = {}
    errors = 0
    for index in range(first, first + count):
        try:
            sock, rest = handshake(port)
        except (OSError, ValueError):
            errors += 1
            continue
        sock.setblocking(False)
        conns[sock.fileno()] = Connection(sock, rest, payload_for(index, size, binary), opcode)
    ready.put(len(conns))
    while start_at.value == 0.0:
        time.sleep(0.001)
    cpu = os.times()
    count_, latencies, lost = loop(conns, start_at.value, start_at.value + duration)
    cpu_used = sum(os.times()[:2]) - sum(cpu[:2])
    for conn in conns.values():
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(0.5)
            conn.sock.sendall(frame(b"\x03\xe8", CLOSE, os.urandom(4)))   # 1000, normal
        except OSError:
            pass
        conn.sock.close()
    out.put((count_, errors + lost, latencies.tobytes(), cpu_used))


def loop(conns: Dict[int, Connection], begin: float, deadline: float
         ) -> Tuple[int, array, int]:
    """Every connection sends its message and waits for the echo, over and over, on
    one epoll: (round trips completed by ``deadline``, latencies, connections lost)."""
    now = time.monotonic
    while now() < begin:
        time.sleep(0.0005)
    epoll = select.epoll()
    latencies = array("d")
    record = latencies.append
    done = lost = 0
    for fd, conn in conns.items():
        epoll.register(fd, select.EPOLLIN)
        conn.sent_at = now()
        try:
            send_all(conn, conn.request)
        except OSError:
            lost += 1
            epoll.unregister(fd)
    poll = epoll.poll
    while True:
        left = deadline - now()
        if left <= 0:
            break
        for fd, _ in poll(left):
            conn = conns[fd]
            try:
                data = conn.sock.recv(65536)
                if conn.buf:
                    data, conn.buf = conn.buf + data, b""
                if data == conn.echo:
                    # The common case: the whole echo in one read, checked byte for byte.
                    ok = True
                else:
                    ok = bool(data) and slow_path(conn, data)
                    if ok is None:     # part of a frame: wait for the rest
                        continue
                if ok:
                    t = now()
                    record(t - conn.sent_at)
                    done += 1
                    conn.sent_at = t
                    request = conn.request
                    sent = conn.send(request)
                    if sent != len(request):       # only with a large --size
                        send_rest(conn, request[sent:])
                    continue
            except BlockingIOError:
                continue
            except OSError:
                pass
            # Closed, reset or a wrong echo: counted, and out of the run.
            lost += 1
            epoll.unregister(fd)
    epoll.close()
    return done, latencies, lost


def send_all(conn: Connection, data: bytes) -> None:
    sent = conn.send(data)
    if sent != len(data):
        send_rest(conn, data[sent:])


def send_rest(conn: Connection, data: bytes) -> None:
    # Blocking for the rest: the peer is reading (closed loop), so this is short.
    conn.sock.setblocking(True)
    conn.sock.sendall(data)
    conn.sock.setblocking(False)


def slow_path(conn: Connection, data: bytes) -> Optional[bool]:
    """Bytes that are not exactly the echo: part of it (None: wait for more), pings
    (answered), or the echo after a control frame (True); anything else (False)."""
    frames, conn.buf = parse_frames(data)
    echoed = False
    for opcode, fin, payload in frames:
        if opcode == PING:
            send_all(conn, frame(payload, PONG, os.urandom(4)))
        elif opcode != PONG and fin and not echoed and frame(payload, opcode, None) == conn.echo:
            echoed = True
        elif opcode != PONG:
            return False
    return True if echoed else None


def probe(port: int, size: int, binary: bool) -> Optional[str]:
    """Why the server at ``port`` is no WebSocket echo (one message tried), or None."""
    try:
        sock, buf = handshake(port, timeout=5)
    except (OSError, ValueError) as exc:
        return f"no upgrade ({exc})"
    with sock:
        payload = payload_for(0, size, binary)
        opcode = BINARY if binary else TEXT
        try:
            sock.sendall(frame(payload, opcode, os.urandom(4)))
            while True:
                frames, buf = parse_frames(buf)
                data = [f for f in frames if f[0] not in (PING, PONG)]
                if data:
                    return None if data[0] == (opcode, True, payload) else f"echoed {data[0]!r}"
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed without an echo"
                buf += chunk
        except OSError as exc:
            return f"no echo ({exc})"


def run_echo(port: int, duration: int, connections: int, clients: int, size: int,
             binary: bool, spread_over: int) -> Result:
    """One run: ``clients`` processes share ``connections``; messages/s, p50, p99 (s),
    errors (failed handshakes, lost connections, wrong echoes) and the spread."""
    # fork: the children need nothing but this module's functions, and start fast.
    ctx = multiprocessing.get_context("fork")
    ready, out = ctx.Queue(), ctx.Queue()
    start_at = ctx.Value("d", 0.0, lock=False)
    shares = [connections // clients + (i < connections % clients) for i in range(clients)]
    procs = [ctx.Process(target=client, daemon=True,
                         args=(port, sum(shares[:i]), n, size, binary, duration,
                               ready, start_at, out))
             for i, n in enumerate(shares)]
    spread: List[int] = []
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=60)
        # Halfway through, as wsgi.py does: how the connections landed on the workers.
        sampler = threading.Timer(0.1 + duration / 2,
                                  lambda: spread.extend(connection_spread(port, spread_over)))
        sampler.start()
        start_at.value = time.monotonic() + 0.1    # all clients begin together
        finished = [out.get(timeout=duration + 60) for _ in procs]
        sampler.join()
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    latencies = array("d")
    for _, _, raw, _ in finished:
        latencies.frombytes(raw)
    ordered = sorted(latencies)
    done = sum(f[0] for f in finished)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    return {"rps": done / duration, "p50": quantile(0.50), "p99": quantile(0.99),
            "errors": sum(f[1] for f in finished), "spread": spread,
            "client_cpu": sum(f[3] for f in finished) / duration}


def servers(python: Optional[Path], workers: int) -> Dict[str, List[str]]:
    """asgi.py's command lines, uvicorn's told which WebSocket implementation to use."""
    table = asgi_servers(python, workers)
    if "uvicorn" in table:
        table["uvicorn"] = table["uvicorn"] + ["--ws", "websockets"]
    return table


def options(parser) -> None:
    parser.add_argument("--size", type=int, default=32, help="message size in bytes")
    parser.add_argument("--binary", action="store_true", help="bytes messages, not text")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--current", metavar="REV", default="",
                        help="run prefork as of this git revision (a temporary worktree) "
                             "instead of the working tree, which others may be editing")
    parser.set_defaults(rounds=3)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, wrk=False, extra=options)
    with contextlib.ExitStack() as trees:
        tree, label = HERE.parent, f"the working tree, {describe_head()}"
        if args.current:
            tree, commit = trees.enter_context(worktree(args.current))
            label = f"@{args.current} ({commit})"
            check_import(f"{HERE}:{tree}", tree / "prefork", str(HERE))
        return run(args, tree, label)


def run(args, tree: Path, label: str) -> int:
    """Every round of every server; ``tree`` is where prefork is imported from."""
    python = peer_python(INSTALLS) if chosen(PEER_NAMES, args.only) else None
    table = servers(python, args.workers)
    mode = f"echo, {args.size} B {'binary' if args.binary else 'text'}"
    results: dict = {}
    failed: set = set()
    names = chosen(list(table), args.only)
    for _, name, port in started_rounds(table, [mode], names, args.rounds,
                                        {"PYTHONPATH": f"{HERE}:{tree}"}, str(HERE), failed):
        why = probe(port, args.size, args.binary)
        if why:
            print(f"note: {name} does not echo over WebSocket ({why}); left out",
                  file=sys.stderr)
            failed.add(name)
            continue
        result = run_echo(port, args.duration, args.connections, args.clients,
                          args.size, args.binary, args.workers)
        results.setdefault((mode, name), []).append(result)
        print(f"# {name}: {result['rps']:,.0f} msgs/s, p99 {result['p99'] * 1e3:.2f} ms, "
              f"errors {result['errors']}, spread {result['spread']}, "
              f"client CPU {result['client_cpu']:.2f} cores", file=sys.stderr)
    names = [n for n in names if n not in failed]
    print(f"{args.clients} client processes, {args.connections} connections, "
          f"{args.duration}s, {args.workers} workers each, {args.rounds} round(s), "
          f"median per cell; ratio = msgs/s over uvicorn; prefork from {label}\n")
    print_table(results, [mode], names, "uvicorn", unit="msgs/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
