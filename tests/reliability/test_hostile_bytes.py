"""Hostile bytes: the HTTP parser and connection fuzzed, and a live server under fuzzed requests.

Promise (issue 7): random and mutated requests never kill a worker, every
reply is well-formed HTTP, and a request means the same whether it arrives
whole or in pieces.

- Sans-IO, no sockets (hypothesis): random bytes and mutations of valid
  requests (CRLF/LF/CR swaps, duplicated lines, chunk-size and number
  mutations, NULs and other control bytes, obs-fold, Content-Length /
  Transfer-Encoding combinations, pipelining, small limits) go through
  ``RequestParser`` and through the real ``HttpConnection`` driven by a fake
  socket, loop and server.  Only ``ProtocolError`` may come out of the
  parser, its status is a 4xx/5xx that ``error_response`` can write, the
  connection's output parses as a sequence of well-formed responses, and
  the outcome is the same whole or split at arbitrary byte boundaries.
- Live (``-w 2``, the echo app): generated requests over raw sockets, each
  exchange's bytes must parse as well-formed HTTP/1.x and give the statuses
  the sans-IO connection gives for the same bytes; afterwards the same
  workers are alive and the log has no crash.
- Live, the corpora of ../shared/conformance: each case sent whole and
  sent in pieces with small random delays gets the same statuses.

The strategies and the strict reply reader are in tests/unit/http_fuzz.py,
shared with the protocol's own fuzz (tests/unit/test_http_protocol_fuzz.py,
the same properties against ``HttpProtocol`` with no adapter at all).  The
parser-level replay of the corpora split at random boundaries is in
tests/unit/test_http_conformance_parser.py and is not repeated here.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import sys
import time
from collections import deque
from types import SimpleNamespace
from typing import List, Sequence, Tuple

import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from conftest import LONG, seconds
from harness import APPS, REPO

from prefork import netlist
from prefork.servers.http.connection import HttpConnection
from prefork.servers.http.environ import base_environ
from prefork.servers.http.exchange import FileWrapper
from prefork.servers.http.parser import Limits, ProtocolError, RequestParser
from prefork.servers.http.response import error_response
from prefork.servers.wsgi import WSGIServer

sys.path.insert(0, str(APPS))
sys.path.insert(0, str(REPO / "tests" / "unit"))
import wsgiapps  # noqa: E402  (the app the live server runs)
from http_fuzz import (AT_LIMITS, HEAD_AT_LIMITS, LONG_CHUNK_LINE, TRAILER_AT_LIMIT,  # noqa: E402
                       comparable, cuts, fuzz_settings, hostile, limited, read_replies,
                       same_statuses)

CORPUS = REPO.parent / "shared" / "conformance"

# Examples per property: the quick form is CI's, the long one run.py's.
UNIT_EXAMPLES = 5000 if LONG else 300
LIVE_EXAMPLES = 3000 if LONG else 300


# == the parser, sans IO ======================================================================

def parse_events(pieces: Sequence[bytes], limits: Limits) -> tuple:
    """Feed ``pieces`` as connection.py does; (requests, error status, waiting)."""
    parser = RequestParser(limits)
    done_requests = []
    request, body = None, b""
    try:
        for piece in pieces:
            parser.feed(piece)
            while True:
                if request is None:
                    request = parser.next_head()
                    if request is None:
                        break
                    body = b""
                if parser.in_body:
                    data, finished = parser.read_body()
                    body += data
                    if not finished:
                        break
                done_requests.append((request.method, request.target, request.version,
                                      request.headers, request.keep_alive, request.chunked,
                                      request.content_length, request.expect_continue,
                                      request.upgrade, body))
                request = None
    except ProtocolError as exc:
        assert 400 <= exc.status < 600, exc
        assert error_response(exc.status).startswith(b"HTTP/1.1 %d " % exc.status)
        return done_requests, exc.status, False
    return done_requests, None, request is not None or parser.buffered > 0


def same_events(whole: tuple, split: tuple) -> bool:
    """Whole and split agree; the one tolerance: a head over a size limit is refused
    (414/431) as soon as the limit is passed, before the rest of it is judged,
    where the whole head may first break another rule (a different 4xx)."""
    if whole == split:
        return True
    return (whole[0] == split[0] and whole[1] is not None and split[1] in (414, 431)
            and whole[1] >= 400)


def check_parser(raw: bytes, pieces: List[bytes], limits: Limits) -> tuple:
    whole = parse_events([raw], limits)
    split = parse_events(pieces, limits)
    if not same_events(whole, split):
        offsets = [sum(len(p) for p in pieces[:n]) for n in range(1, len(pieces))]
        raise AssertionError(f"whole: {whole[1:]} after {len(whole[0])} request(s); split at "
                             f"{offsets if len(offsets) < 20 else 'every byte'}: {split[1:]} "
                             f"after {len(split[0])} request(s); {limits}; raw {raw[:400]!r}")
    return whole


@pytest.mark.timeout(900 if LONG else 120)
def test_parser_raises_only_protocol_errors_and_ignores_where_the_bytes_are_cut(figures):
    counts = {"examples": 0, "requests": 0, "refused": 0}

    @fuzz_settings(UNIT_EXAMPLES)
    @given(st.data(), limited())
    @example(None, (HEAD_AT_LIMITS, AT_LIMITS))
    @example(None, (TRAILER_AT_LIMIT, AT_LIMITS))
    @example(None, (LONG_CHUNK_LINE, Limits()))
    def one(data, case):
        raw, limits = case
        if data is None:    # the explicit regressions: every cut
            pieces_list = [[raw[:i], raw[i:]] for i in range(1, len(raw))]
        else:
            pieces_list = [data.draw(cuts(raw), label="pieces")]
        for pieces in pieces_list:
            whole = check_parser(raw, pieces, limits)
        counts["examples"] += 1
        counts["requests"] += len(whole[0])
        counts["refused"] += whole[1] is not None

    one()
    figures(scenario="parser, hostile bytes whole vs split", **counts, unexpected_exceptions=0)


@pytest.mark.parametrize("raw, limits", [(HEAD_AT_LIMITS, AT_LIMITS),
                                         (TRAILER_AT_LIMIT, AT_LIMITS),
                                         (LONG_CHUNK_LINE, Limits())],
                         ids=["head at the limits", "trailer at header_size",
                              "chunk line over 1024"])
def test_split_regressions(raw, limits):
    whole = parse_events([raw], limits)
    for i in range(1, len(raw)):
        assert parse_events([raw[:i], raw[i:]], limits) == whole, i
    if raw is LONG_CHUNK_LINE:
        assert whole[1] == 400          # the size line is refused however it arrives
    else:
        assert whole[1] is None and len(whole[0]) == 1   # at the limit is still accepted


# == the connection, sans IO ==================================================================

class FakeSocket:
    """A client socket as the connection sees it: one piece per recv, then EOF."""

    def __init__(self, pieces: Sequence[bytes], send_cap: int, stall: bool) -> None:
        self.incoming = deque(pieces)
        self.send_cap = send_cap
        self.stall = stall          # after the pieces: nothing (until tick), not EOF
        self.sent = bytearray()
        self.shut_wr = False
        self.closed = False

    def recv(self, size: int) -> bytes:
        assert not self.closed, "recv on a closed socket"
        if self.incoming:
            piece = self.incoming.popleft()
            if len(piece) > size:
                self.incoming.appendleft(piece[size:])
                piece = piece[:size]
            return piece
        if self.stall:
            raise BlockingIOError
        return b""

    def send(self, data) -> int:
        assert not self.closed, "send on a closed socket"
        assert not self.shut_wr, "send after shutdown(SHUT_WR)"
        n = min(len(data), self.send_cap)
        self.sent += bytes(data[:n])
        return n

    def shutdown(self, how: int) -> None:
        assert how == socket.SHUT_WR
        self.shut_wr = True

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return -1


class FakeSelector:
    def __init__(self) -> None:
        self.keys = {}

    def register(self, sock, events, data) -> None:
        assert sock not in self.keys, "registered twice"
        assert events
        self.keys[sock] = events

    def modify(self, sock, events, data) -> None:
        assert sock in self.keys, "modify of an unregistered socket"
        self.keys[sock] = events

    def unregister(self, sock) -> None:
        del self.keys[sock]


class FakeLoop:
    """The worker loop's side: a sync dispatcher that runs each job at once."""

    multithread = False
    inflight = None

    def __init__(self) -> None:
        self.selector = FakeSelector()
        self.connections = set()
        self.jobs = 0

    def park(self, connection) -> None:
        self.connections.add(connection)

    def forget(self, connection) -> None:
        self.connections.discard(connection)

    def run_job(self, job, on_done=None, counts=True, what=None) -> None:
        if what is not None:
            assert isinstance(what(), str)
        self.jobs += 1
        job()
        if on_done is not None:
            on_done()


def fake_server(limits: Limits, calls: list) -> WSGIServer:
    """A WSGIServer without a listener, serving the echo app the live tests run."""

    def app(environ, start_response):
        calls.append(environ["REQUEST_METHOD"])
        return wsgiapps.echo(environ, start_response)

    server = WSGIServer.__new__(WSGIServer)
    server.app = app
    server.limits = limits
    server.header_timeout = 10.0
    server.client_timeout = 30.0
    server.keepalive = 5.0
    server.body_buffer_size = 64
    server.high_water = 256 * 1024
    server.access_log = None
    server.forwarded_allow = netlist.parse("127.0.0.1,::1")     # the defaults
    server.forwarded_kind = "x-forwarded"
    server.environ_base = base_environ(("127.0.0.1", 8000), False, "", FileWrapper)
    rejected = []
    server.log_rejection = lambda connection, status: rejected.append(status)
    server.rejected = rejected
    return server


class Conversation(SimpleNamespace):
    """sent: bytes out; methods: what reached the app; rejected: server-made statuses."""


def converse(pieces: Sequence[bytes], limits: Limits = Limits(), send_cap: int = 1 << 30,
             stall: bool = False) -> Conversation:
    sock = FakeSocket(pieces, send_cap, stall)
    loop, calls = FakeLoop(), []
    server = fake_server(limits, calls)
    conn = HttpConnection(sock, ("10.0.0.1", 40000), server, loop)
    ticked = False
    for _ in range(100000):
        if conn.closed:
            break
        if conn._events == 0:
            raise AssertionError(f"open in state {conn.state!r} but waits for nothing")
        if stall and not sock.incoming and conn.state != "write" and not ticked:
            conn.tick(time.monotonic() + 3600)    # the client went quiet: deadlines pass
            ticked, sock.stall = True, False      # ...and then it hangs up
            continue
        conn._on_ready()
    else:
        raise AssertionError(f"no end after 100000 steps, state {conn.state!r}")
    assert sock.closed and not loop.connections and not loop.selector.keys
    return Conversation(sent=bytes(sock.sent), methods=calls, rejected=server.rejected,
                        shut=sock.shut_wr)


def check_conversation(c: Conversation) -> List[int]:
    statuses = read_replies(c.sent, c.methods)
    if c.rejected:
        assert len(c.rejected) == 1, c.rejected
        assert statuses and statuses[-1] == c.rejected[0], (statuses, c.rejected)
        assert 400 <= c.rejected[0] < 600 and c.shut, c.rejected
    return statuses


@pytest.mark.timeout(900 if LONG else 120)
def test_connection_answers_well_formed_and_ignores_where_the_bytes_are_cut(figures):
    counts = {"examples": 0, "replies": 0, "refused": 0, "app_calls": 0}

    @fuzz_settings(UNIT_EXAMPLES)
    @given(st.data(), limited(), st.sampled_from([1 << 30, 1 << 30, 7, 1]), st.booleans())
    @example(None, (HEAD_AT_LIMITS, AT_LIMITS), 1 << 30, False)
    def one(data, case, send_cap, stall):
        raw, limits = case
        if data is None:
            pieces = [raw[:-1], raw[-1:]]
        else:
            pieces = data.draw(cuts(raw), label="pieces")
        whole = converse([raw] if raw else [], limits, send_cap, stall)
        split = converse(pieces, limits, send_cap, stall)
        note(f"whole: app saw {whole.methods}, rejected {whole.rejected}: {whole.sent[:300]!r}")
        note(f"split: app saw {split.methods}, rejected {split.rejected}: {split.sent[:300]!r}")
        statuses = check_conversation(whole)
        split_statuses = check_conversation(split)
        assert split.methods == whole.methods
        assert same_statuses(statuses, split_statuses, whole.rejected), (statuses, split_statuses)
        if statuses == split_statuses:
            assert comparable(split.sent) == comparable(whole.sent)
        counts["examples"] += 1
        counts["replies"] += len(statuses)
        counts["refused"] += bool(whole.rejected)
        counts["app_calls"] += len(whole.methods)

    one()
    figures(scenario="HttpConnection (fake socket), whole vs split", **counts,
            malformed_replies=0, unexpected_exceptions=0)


def test_a_request_waiting_in_the_socket_is_served_not_reset_at_the_keepalive_deadline():
    # Regression: the sweep closed an idle keep-alive connection whose deadline
    # passed while the worker could not read (a sync worker busy with a longer
    # request), with the client's next request unread in the socket: a reset.
    sock = FakeSocket([b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"], 1 << 30, stall=True)
    loop, calls = FakeLoop(), []
    conn = HttpConnection(sock, ("10.0.0.1", 40000), fake_server(Limits(), calls), loop)
    assert calls == ["GET"] and conn.state == "head" and not conn.closed
    sock.incoming.append(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")   # sent in time, not read yet
    conn.tick(time.monotonic() + 3600)                               # the deadline has passed
    assert calls == ["GET", "GET"] and not conn.closed
    assert read_replies(bytes(sock.sent), calls, closed=False) == [200, 200]
    conn.tick(time.monotonic() + 3600)     # truly idle now: closed, nothing more sent
    assert conn.closed and read_replies(bytes(sock.sent), calls) == [200, 200]


# == live: a real server under fuzzed requests ================================================

# Small limits, so that the limit paths (414, 431, 413) are reachable with
# small requests; the sans-IO oracle uses the same.
LIVE_LIMITS = Limits(request_line=256, header_count=12, header_size=128, body_size=1024)
LIVE_ARGS = ("--limit-request-line", "256", "--limit-request-fields", "12",
             "--limit-request-field-size", "128", "--max-body-size", "1024")
CRASH_WORDS = ("crashed", "exited unexpectedly", "Traceback", "was killed by")


def exchange(address: tuple, pieces: Sequence[bytes], delays: Sequence[float] = (),
             timeout: float = 20.0) -> Tuple[bytes, bool]:
    """Send ``pieces`` (sleeping ``delays`` between them), half-close, read to the close.

    Returns (bytes received, whether the connection was reset)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for n, piece in enumerate(pieces):
                if n and n - 1 < len(delays) and delays[n - 1]:
                    time.sleep(delays[n - 1])
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass     # refused early: what came back still counts
        chunks, reset = [], False
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            except socket.timeout:
                raise AssertionError(f"no close within {timeout} s; got {b''.join(chunks)!r}")
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks), reset


def wsgi_echo_server(prefork_server, *extra: str):
    server = prefork_server("serve", "wsgiapps:echo", "-b", "127.0.0.1:0", "-w", "2", *extra)
    server.wait_ready(timeout=60)
    workers = server.wait_workers(lambda p: len(p) == 2, timeout=60)
    return server, workers


def assert_no_worker_died(server, workers) -> None:
    log = server.log()
    assert not [w for w in CRASH_WORDS if w in log], log[-4000:]
    assert server.live_workers() == workers, (workers, server.worker_pids(), log[-3000:])


@pytest.mark.integration
@pytest.mark.timeout(seconds(90, 900))
def test_live_server_answers_fuzzed_requests_well_formed_and_no_worker_dies(
        prefork_server, figures):
    server, workers = wsgi_echo_server(prefork_server, *LIVE_ARGS)
    address = server.address
    budget = seconds(20, 400)
    started = time.monotonic()
    stop_at = started + budget
    counts = {"examples": 0, "replies": 0, "refused": 0, "no_reply": 0, "resets": 0,
              "over_budget": 0}
    failing = []

    @fuzz_settings(LIVE_EXAMPLES)
    @given(st.data(), hostile(LIVE_LIMITS))
    def one(data, raw):
        if not failing and time.monotonic() > stop_at:
            counts["over_budget"] += 1
            return      # the time budget is spent; hypothesis finishes its count
        try:
            pieces = data.draw(cuts(raw), label="pieces") if raw else [b""]
            oracle = converse([raw] if raw else [], LIVE_LIMITS)
            got, reset = exchange(address, pieces)
            note(f"sent {raw[:300]!r}; got {got[:400]!r}; oracle {oracle.sent[:300]!r}")
            statuses = read_replies(got, oracle.methods)
            assert same_statuses(check_conversation(oracle), statuses, oracle.rejected)
            counts["examples"] += 1
            counts["last_example_at"] = round(time.monotonic() - started, 1)
            counts["replies"] += len(statuses)
            counts["refused"] += bool(oracle.rejected)
            counts["no_reply"] += not statuses
            counts["resets"] += reset
        except HypothesisException:
            raise       # hypothesis's own control flow (an overrun draw): not a failure
        except Exception:
            failing.append(True)    # a real failure: replay and shrink it, whatever the time
            raise

    one()
    assert_no_worker_died(server, workers)
    assert counts["examples"] >= min(50, LIVE_EXAMPLES), counts   # the fuzzer really ran
    figures(scenario="fuzzed requests against -w 2", **counts, workers_died=0,
            seconds=round(time.monotonic() - started, 1))


# == live: the corpora, whole and in pieces ===================================================

def corpus_cases() -> List[dict]:
    if not CORPUS.is_dir():
        return []
    cases = []
    for case in json.loads((CORPUS / "gunicorn-requests.json").read_text())["cases"]:
        if not case["config"] and not case["name"].split("/", 1)[1].startswith("pp_"):
            cases.append(case)
    for case in json.loads((CORPUS / "llhttp-requests.json").read_text())["cases"]:
        if case.get("mode") == "strict":
            cases.append(case)
    return cases


@pytest.mark.integration
@pytest.mark.timeout(seconds(90, 900))
def test_live_corpora_split_at_random_boundaries_answer_as_whole(prefork_server, figures):
    cases = corpus_cases()
    if not cases:
        pytest.skip(f"no conformance corpora at {CORPUS}")
    server, workers = wsgi_echo_server(prefork_server)
    rng = random.Random(0 if not LONG else None)
    rounds = 3 if LONG else 1
    replays, replies, differing = 0, 0, []
    for case in cases:
        raw = base64.b64decode(case["raw_b64"])
        oracle = converse([raw], Limits())
        whole, _ = exchange(server.address, [raw])
        want = read_replies(whole, oracle.methods)
        assert want == check_conversation(oracle), case["name"]
        for _ in range(rounds):
            points = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 4))))
            edges = [0] + points + [len(raw)]
            pieces = [raw[a:b] for a, b in zip(edges, edges[1:])]
            delays = [rng.uniform(0, 0.005) for _ in pieces]
            got, _ = exchange(server.address, pieces, delays)
            statuses = read_replies(got, oracle.methods)
            if not same_statuses(want, statuses, oracle.rejected):
                differing.append((case["name"], points, want, statuses))
            replays += 1
            replies += len(statuses)
    assert not differing, differing[:10]
    assert_no_worker_died(server, workers)
    figures(scenario="corpora split with delays vs whole", cases=len(cases), split_replays=replays,
            replies_checked=replies, differing=0, workers_died=0)
