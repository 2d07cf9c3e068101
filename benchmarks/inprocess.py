"""In-process cost of one keep-alive WSGI request through the real HTTP connection.

A socketpair stands for the client's TCP connection: the client half sends a
request, a selector (the worker loop's) reports the server half readable,
the connection reads, parses, builds the environ, runs the app inline (a
sync worker), sends the response, and the client half reads it.  What is
left out is the network and the rest of the worker loop (heartbeat,
accept), so the figure is the per-request cost of prefork's HTTP layer and
the app, plus two send/recv pairs on a unix socket.

    python benchmarks/inprocess.py                      # this tree
    python benchmarks/inprocess.py --base-tree ../base  # and a base commit's tree

``--base-tree`` names a checkout of another commit (``git worktree add
../base HEAD~3``); both trees run the same measurement in fresh processes,
alternating, and the table gives each tree's best and median round, and the
function calls per request (Python and C, counted with sys.setprofile), which
CPU contention on a shared machine cannot blur; with ``--instructions`` (and
valgrind installed) also the user-space instructions per request, exact to a
few tenths of a percent.  Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve()

CASES = {
    "GET, keep-alive": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "browser GET": (b"GET /articles/2026/11/prefork?page=2&sort=new HTTP/1.1\r\n"
                    b"Host: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0)\r\n"
                    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
                    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
                    b"Connection: keep-alive\r\nCookie: session=0123456789abcdef\r\n\r\n"),
    "POST 1 KiB": (b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024),
}

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict, start_response: Callable) -> List[bytes]:
    if environ["REQUEST_METHOD"] == "POST":
        environ["wsgi.input"].read()
    start_response("200 OK", HEADERS)
    return [BODY]


class InlineLoop:
    """The sync worker loop's side of the contract, without the scoreboard."""

    multithread = False
    inflight = None

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.connections: set = set()

    def run_job(self, job, on_done=None, counts=True, what=None) -> None:
        try:
            job()
        finally:
            if on_done is not None:
                on_done()

    def park(self, connection) -> None:
        self.connections.add(connection)

    def forget(self, connection) -> None:
        self.connections.discard(connection)


def connect() -> Tuple[InlineLoop, socket.socket, Callable[[], None]]:
    """A WSGIServer and one accepted keep-alive connection; the client half, and a
    closer."""
    from prefork.config import Config
    from prefork.servers.wsgi import WSGIServer

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # only for getsockname()
    listener.bind(("127.0.0.1", 0))
    server = WSGIServer(listener, app, Config(), False, None)
    loop = InlineLoop()
    client, conn = socket.socketpair()
    client.setblocking(True)
    server.accepted(conn, ("127.0.0.1", 40000), loop)

    def close() -> None:
        client.close()
        listener.close()
    return loop, client, close


def measure(request: bytes, rounds: int, count: int) -> Tuple[float, float]:
    """Best-of-rounds microseconds per request on one keep-alive connection, and
    the function calls (Python and C) per request: a figure CPU contention
    cannot move."""
    loop, client, close = connect()
    select = loop.selector.select
    send, recv = client.send, client.recv
    expect = None
    best = float("inf")

    def serve(count: int) -> None:
        nonlocal expect
        for _ in range(count):
            send(request)
            for key, _ in select():
                key.data()
            reply = recv(65536)
            if expect is None:
                expect = len(reply)
                assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(BODY), reply
            elif len(reply) != expect:
                raise AssertionError(f"reply of {len(reply)} bytes, not {expect}: {reply!r}")

    for n in range(rounds + 1):
        start = time.perf_counter()
        serve(count)
        if n:                  # the first round warms the caches up
            best = min(best, (time.perf_counter() - start) / count * 1e6)
    calls = 0

    def profile(frame, event, arg) -> None:
        nonlocal calls
        if event == "call" or event == "c_call":
            calls += 1

    sys.setprofile(profile)
    serve(1000)
    sys.setprofile(None)
    assert len(loop.connections) == 1, "the connection closed"
    close()
    return best, calls / 1000


def serve_only(request: bytes, count: int) -> None:
    """``count`` requests and nothing else: what --instructions counts."""
    loop, client, close = connect()
    for _ in range(count):
        client.send(request)
        for key, _ in loop.selector.select():
            key.data()
        client.recv(65536)
    close()


def instructions(tree: Path, label: str) -> Optional[int]:
    """User-space instructions per request under valgrind (deterministic: the hash
    seed is fixed), from the difference between 1200 and 200 requests."""
    totals = []
    for count in (200, 1200):
        run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                              sys.executable, str(HERE), "--tree", str(tree), "--serve", label,
                              "--count", str(count)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": "0"})
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode or not found:
            return None
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // 1000


def run_here(rounds: int, count: int) -> Dict[str, Tuple[float, float]]:
    return {label: measure(request, rounds, count) for label, request in CASES.items()}


def run_tree(tree: Path, rounds: int, count: int) -> Dict[str, Tuple[float, float]]:
    """The measurement in a fresh process that imports prefork from ``tree``."""
    out = subprocess.run([sys.executable, str(HERE), "--tree", str(tree), "--json",
                          "--rounds", str(rounds), "--count", str(count)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def tree_options(doc: str, tree_help: str = argparse.SUPPRESS) -> argparse.ArgumentParser:
    """The options this benchmark and sansio.py share: trees, processes, rounds, counts."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    parser.add_argument("--base-tree", type=Path, help="a checkout of the commit to compare with")
    parser.add_argument("--tree", type=Path, help=tree_help)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=5,
                        help="fresh processes per tree, alternating (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per process, best kept")
    parser.add_argument("--count", type=int, default=20000, help="requests per round")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per request under valgrind (slow)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    return parser


def main(argv: List[str] = None) -> int:
    args = tree_options(__doc__).parse_args(argv)
    if args.serve:
        sys.path.insert(0, str(args.tree.resolve()))
        serve_only(CASES[args.serve], args.count)
        return 0
    if args.json:
        sys.path.insert(0, str(args.tree.resolve()))
        print(json.dumps(run_here(args.rounds, args.count)))
        return 0
    trees = {"this tree": HERE.parent.parent}
    if args.base_tree is not None:
        trees = {"base": args.base_tree.resolve(), **trees}
    results: Dict[str, List[dict]] = {name: [] for name in trees}
    for _ in range(args.processes):
        for name, tree in trees.items():
            results[name].append(run_tree(tree, args.rounds, args.count))
    counted = args.instructions and shutil.which("valgrind") is not None
    print("| request | tree | best us/request | median us/request | calls/request |"
          + (" instructions/request |" if counted else ""))
    print("| --- | --- | ---: | ---: | ---: |" + (" ---: |" if counted else ""))
    for label in CASES:
        for name, tree in trees.items():
            values = [r[label][0] for r in results[name]]
            calls = results[name][0][label][1]
            row = (f"| {label} | {name} | {min(values):.2f} | {statistics.median(values):.2f} "
                   f"| {calls:.0f} |")
            if counted:
                row += f" {instructions(tree, label) or '-'} |"
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
