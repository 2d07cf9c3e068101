"""Where each microsecond of a keep-alive request goes, stage by stage, on three paths.

Each path serves one keep-alive connection in this process, the way its
worker serves it, with the real system calls: the server side is one half
of a socketpair, and a forked client process sends COUNT requests one at a
time (no pipelining) on the other half, reading each reply whole.

- sync + WSGI: ``WSGIServer`` and its ``HttpConnection`` driven by a
  selector loop like the sync worker's (inprocess.py's ``InlineLoop``,
  without the heartbeat, accept and scoreboard); inprocess.py's app.
- asyncio + ASGI: ``ASGIServer`` on asyncio's own event loop (not uvloop,
  whose C internals cProfile cannot see), the connection made the way the
  asyncio worker makes it; asgi_apps.py's hello world.
- thread + handler class: ``HandlerServer`` with prefork.examples.hello's
  ``HelloHandler`` (``http.server``).  On the thread worker the handler runs
  on a pool thread and reads its connection blocking, a request after the
  other; here the same job runs on the main thread (as the sync worker runs
  it), so the per-request path is the same and the profile sees it.  Its
  per-request stderr log line goes to /dev/null here (a file in production).

For each path, plain runs and profiled runs alternate.  A plain run gives
the server process's CPU time per request (user and system,
time.process_time: the client's work is in the other process) and the wall
time; the table takes the medians.  Under cProfile each function's own time
(a C function's own time split between its callers' files) goes to a stage
by its file, and the stages' shares are scaled to the plain runs' CPU time.
cProfile's clock is the wall clock, so the one system call per path that
waits for the client (epoll_wait; a handler's blocking recv) is not taken
from it: its row is the CPU cost of that call when its fd is ready,
measured apart, and the rest of the CPU time is shared out by the profile.
cProfile inflates every Python call by a roughly constant amount, so stages
made of many small calls come out somewhat too big, and C work (system
calls, regular expressions) too small: read the table as a map.

    python benchmarks/profile_paths.py [--count 20000] [--rounds 3] [--tree CHECKOUT]

Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import select
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

Stage = Callable[[str, str], Optional[str]]      # (file, function) -> stage, None: ask the caller
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


def read_reply(sock: socket.socket, buffered: bytes) -> bytes:
    """Read one response with a Content-Length; returns what came after it."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffered += chunk
    head, _, rest = buffered.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise AssertionError(head[:200])
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        rest += chunk
    return rest[length:]


def exchange(sock: socket.socket, request: bytes, count: int) -> None:
    """``count`` keep-alive requests, each sent after the previous reply."""
    rest = b""
    for _ in range(count):
        sock.sendall(request)
        rest = read_reply(sock, rest)


def forked_client(sock: socket.socket, request: bytes, count: int) -> int:
    """A child process that makes the requests on ``sock`` and closes it; its pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            exchange(sock, request, count)
        except BaseException:             # noqa: B902 - a child must never return
            code = 1
        finally:
            sock.close()
            os._exit(code)
    sock.close()
    return pid


def reap(pid: int) -> None:
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
        raise RuntimeError("the client process failed: a reply was missing or wrong")


# -- the three paths: each returns "serve COUNT requests" ---------------------------------

def wsgi_path(count: int) -> Callable[[], None]:
    from inprocess import connect
    loop, client, close = connect()
    pid = forked_client(client, GET, count)
    wait = loop.selector.select

    def run() -> None:
        while loop.connections:           # the connection leaves it at the client's EOF
            for key, _ in wait():
                key.data()
        reap(pid)
        close()
    return run


class AsgiLoop:
    """What an ASGI connection asks of the asyncio worker's loop (contracts.AsyncLoop)."""

    deadline = 0.0
    inflight = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.done = self.loop.create_future()
        self.running = 0

    def park(self, connection: Any) -> None:   # nothing to count here
        return

    def forget(self, connection: Any) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def request_started(self, request: Any = None) -> None:
        self.running += 1

    def request_finished(self, request: Any = None) -> None:
        self.running -= 1


def asgi_path(count: int) -> Callable[[], None]:
    from asgi_apps import app
    from prefork.config import Config
    from prefork.servers.asgi.server import ASGIServer
    listener = socket.socket()                # only for getsockname()
    listener.bind(("127.0.0.1", 0))
    server = ASGIServer(listener, app, Config(), None, None)
    aloop = AsgiLoop()
    client, conn = socket.socketpair()
    pid = forked_client(client, GET, count)
    server.accepted(conn, ("127.0.0.1", 40000), aloop)

    def run() -> None:
        aloop.loop.run_until_complete(aloop.done)
        aloop.loop.close()
        listener.close()
        reap(pid)
    return run


class HandlerLoop:
    """The part of the worker loop a HandlerServer uses: a job runs inline."""

    multithread = False
    inflight = None

    def run_job(self, job: Callable[[], None], on_done: Optional[Callable[[], None]] = None,
                counts: bool = True, what: Any = None) -> None:
        try:
            job()
        finally:
            if on_done is not None:
                on_done()


def handler_path(count: int) -> Callable[[], None]:
    from prefork.examples.hello import HelloHandler
    from prefork.servers.stream import HandlerServer
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = HandlerServer(listener, HelloHandler)
    client, conn = socket.socketpair()
    pid = forked_client(client, GET, count)

    def run() -> None:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)                   # http.server logs each request to stderr
        try:
            server.accepted(conn, ("127.0.0.1", 40000), HandlerLoop())
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
            listener.close()
        reap(pid)
    return run


# -- stages --------------------------------------------------------------------------------

def by_file(table: List[Tuple[str, Tuple[str, ...]]], named: Dict[str, str],
            functions: Dict[Tuple[str, str], str]) -> Stage:
    """A stage function: C functions by name (``named``: a substring of cProfile's
    name for it), then (file, function) pairs, then the first file ending in one of
    a stage's suffixes; "other" for the rest."""
    def stage(path: str, name: str) -> Optional[str]:
        if path == "~":
            for part, what in named.items():
                if part in name:
                    return what
            return None                        # its callers' stages
        for (suffix, function), what in functions.items():
            if name == function and path.endswith(suffix):
                return what
        for what, suffixes in table:
            if path.endswith(suffixes):
                return what
        return "other"
    return stage


SYSCALLS = {"'recv'": "read (recv)", "'recv_into'": "read (recv)", "'send'": "write (send)",
            "'sendall'": "write (send)", "'poll' of 'select.epoll'": "selector",
            "'control' of 'select.kqueue'": "selector",
            # stream.py's super() calls into socket.socket, as cProfile names them
            "Tracking.send": "write (send)", "Tracking.recv": "read (recv)"}
WSGI = by_file([
    ("parse", ("http/parser.py", "http/protocol.py", "http/grammar.py")),
    ("environ", ("http/environ.py", "servers/wsgi.py", "http/listener.py", "addresses.py")),
    ("response head/body", ("http/exchange.py", "http/heads.py", "http/response.py")),
    ("connection/loop glue", ("http/connection.py", "worker/loop.py", "inprocess.py")),
    ("selector", ("selectors.py",)),
], SYSCALLS, {("inprocess.py", "app"): "app"})
ASGI = by_file([
    ("parse", ("http/parser.py", "http/protocol.py", "http/grammar.py")),
    ("scope", ("asgi/scope.py", "http/listener.py", "addresses.py")),
    ("app", ("asgi_apps.py",)),
    ("cycle/response", ("asgi/cycle.py", "asgi/running.py", "asgi/response.py",
                        "http/heads.py", "http/response.py")),
    ("connection glue", ("asgi/http.py", "profile_paths.py")),
    ("selector", ("selectors.py",)),
    ("asyncio loop", ("asyncio/base_events.py", "asyncio/events.py", "asyncio/tasks.py",
                      "asyncio/selector_events.py", "asyncio/transports.py",
                      "asyncio/futures.py")),
], SYSCALLS, {("asyncio/base_events.py", "create_task"): "app task (create_task)"})
HANDLER = by_file([
    ("handler (do_GET)", ("examples/hello.py",)),
    ("parse (http.server, email)", ("http/client.py", "/email/feedparser.py",
                                    "/email/parser.py", "/email/message.py",
                                    "/email/_policybase.py", "/email/policy.py")),
    ("prefork glue (stream.py, pooled.py)", ("servers/stream.py", "servers/pooled.py")),
    ("socketserver/io glue", ("/socketserver.py", "/socket.py")),
    ("selector", ("selectors.py",)),
], SYSCALLS, {**{("http/server.py", f): "parse (http.server, email)"
                 for f in ("parse_request", "handle_one_request")},
              **{("http/server.py", f): "response head (http.server)"
                 for f in ("send_response", "send_response_only", "send_header",
                           "end_headers", "flush_headers", "date_time_string",
                           "version_string")},
              **{("http/server.py", f): "access log (http.server)"
                 for f in ("log_request", "log_message", "address_string",
                           "log_date_time_string")}})


def stage_times(stats: Dict[Any, Any], stage: Stage) -> Tuple[Dict[str, float], float]:
    """Own time per stage (seconds), and calls: a C function whose name gives no
    stage is split over its callers' stages, in proportion to what each caller's
    calls cost."""
    totals: Dict[str, float] = {}
    calls = 0
    for (path, _, name), (_, ncalls, own, _, callers) in stats.items():
        calls += ncalls
        what = stage(path, name)
        if what is None:
            split = sum(c[2] for c in callers.values()) or 1.0
            for (cpath, _, cname), c in callers.items():
                where = stage(cpath, cname) or "other"
                totals[where] = totals.get(where, 0.0) + own * c[2] / split
            if not callers:
                totals["other"] = totals.get("other", 0.0) + own
            continue
        totals[what] = totals.get(what, 0.0) + own
    return totals, calls


def ready_costs(rounds: int = 20000) -> Dict[str, float]:
    """CPU seconds of one epoll_wait that finds its fd ready, and of one blocking
    recv_into that finds a request waiting: the profile times these calls with
    the wait for the client in them, so the table uses these figures instead."""
    a, b = socket.socketpair()
    poller = select.epoll()
    poller.register(b.fileno(), select.EPOLLIN)
    a.sendall(GET)
    start = time.process_time()
    for _ in range(rounds):
        poller.poll()
    poll = (time.process_time() - start) / rounds
    buffer, batch, total = bytearray(8192), 2000, 0.0
    for _ in range(rounds // batch):
        a.sendall(GET * batch)            # queued before the clock starts
        start = time.process_time()
        for _ in range(batch):
            b.recv_into(buffer, len(GET))
        total += time.process_time() - start
    poller.close()
    a.close()
    b.close()
    return {"selector": poll, "read (recv)": total / rounds}


def measure(path: Callable[[int], Callable[[], None]], stage: Stage, count: int,
            waits: Dict[str, float], rounds: int) -> Dict[str, Any]:
    """The plain runs' median CPU and wall time per request, and each stage's own
    time under cProfile (seconds, summed over the profiled runs); ``waits``: the
    stages whose system call waits for the client, with the CPU cost of one call."""
    path(min(count, 2000))()                  # warm-up: imports, caches, allocator
    cpus, walls = [], []
    profiler = cProfile.Profile()
    for _ in range(rounds):                   # plain and profiled runs alternate
        run = path(count)
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        cpus.append((time.process_time() - cpu) / count * 1e6)
        walls.append((time.perf_counter() - wall) / count * 1e6)
        run = path(count)
        profiler.enable()
        run()
        profiler.disable()
    stats = pstats.Stats(profiler).stats      # type: ignore[attr-defined]
    totals, calls = stage_times(stats, stage)
    fixed = {}
    for what, cost in waits.items():
        ncalls = sum(v[1] for (path_, _, name), v in stats.items()
                     if path_ == "~" and stage(path_, name) == what)
        fixed[what] = ncalls / (count * rounds) * cost * 1e6
        totals.pop(what, None)
    return {"cpu": statistics.median(cpus), "cpus": cpus, "wall": statistics.median(walls),
            "stages": totals, "fixed": fixed,
            "profiled": sum(totals.values()) / (count * rounds) * 1e6,
            "calls": calls / (count * rounds)}


def table(title: str, result: Dict[str, Any]) -> List[str]:
    """Stages by share; the waiting calls at their measured cost, the rest of the
    plain run's CPU time shared out in proportion to the profile."""
    stages, cpu, fixed = result["stages"], result["cpu"], result["fixed"]
    total = sum(stages.values())
    rest = cpu - sum(fixed.values())
    rows = {name: seconds / total * rest for name, seconds in stages.items()}
    lines = [f"### {title}", "",
             f"{cpu:.1f} us CPU per request in the server process, the median of "
             f"{len(result['cpus'])} runs ({', '.join(f'{c:.1f}' for c in result['cpus'])}); "
             f"{result['wall']:.1f} us wall, the client's turn included; "
             f"{result['calls']:.0f} calls per request; "
             f"the profiled stages took {result['profiled']:.1f} us a request under cProfile.",
             "", "| stage | us/request | share |", "| --- | ---: | ---: |"]
    for name, value in sorted({**rows, **fixed}.items(), key=lambda kv: kv[1], reverse=True):
        mark = " *" if name in fixed else ""
        lines.append(f"| {name}{mark} | {value:.2f} | {value / cpu:.1%} |")
    return lines + ["", "\\* the system call's CPU cost measured apart (the profile's "
                    "figure includes waiting for the client)", ""]


PATHS = {"sync worker + WSGI": (wsgi_path, WSGI, ("selector",)),
         "asyncio worker + ASGI": (asgi_path, ASGI, ("selector",)),
         "thread worker + http.server handler": (handler_path, HANDLER, ("read (recv)",))}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=20000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="plain and profiled runs per path, alternating (default 3)")
    parser.add_argument("--tree", type=Path, help="measure the prefork in this checkout")
    parser.add_argument("--only", default="", help="run only paths whose name has this word")
    args = parser.parse_args(argv)
    sys.path.insert(0, str((args.tree or HERE.parent.parent).resolve()))
    from sansio import implementation
    import prefork
    print(f"prefork from {Path(prefork.__file__).parent}; {implementation()}; "
          f"{args.count} keep-alive requests per run, {args.rounds} plain and "
          f"{args.rounds} profiled runs per path\n")
    costs = ready_costs()
    print(f"a ready epoll_wait costs {costs['selector'] * 1e6:.2f} us of CPU, a ready recv "
          f"{costs['read (recv)'] * 1e6:.2f} us\n")
    for title, (path, stage, waiting) in PATHS.items():
        if args.only in title:
            result = measure(path, stage, args.count, {w: costs[w] for w in waiting},
                             args.rounds)
            print("\n".join(table(title, result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
