"""The HTTP conformance corpora (../shared/conformance) replayed against an ASGI echo app.

The same cases, deliberate choices and verdicts as test_http_conformance.py
(conformance_replay.py), served by ``-k asyncio`` with tests/apps/asgi_echo.py:
an accepted request reaches the app with the corpus's method, target,
HTTP version, headers and body; a refused one gets the same 4xx/5xx and never
reaches it.  What differs from WSGI is the comparison: the ASGI scope gives
``raw_path`` and ``query_string`` as they came, ``path`` percent-decoded as
UTF-8, and the header fields one by one (lowercase names, no joining), so
they are compared as a list.  And the app is called as soon as a request's
head is in, before its body: a body that turns out malformed (or is cut off
by our close) must reach the app as ``http.disconnect``, never as a complete
body, and the client still gets the same 400 (``cut_short``).
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import unquote_to_bytes

import pytest

from conformance_replay import (CONFORMANCE, LIMITS, exchange, load_cases, replay, split_target,
                                statuses, target_host)
from harness import PreforkProcess
from http_helpers import CALLS_ENV, Served

pytestmark = pytest.mark.integration

# Choices that differ from the WSGI side's, where the ASGI worker takes another
# branch the RFCs leave open (the opposite outcome is checked, as for DELIBERATE).
ASGI_DELIBERATE = {
    name: "a GET with 'Upgrade: websocket' is a WebSocket opening handshake on the ASGI "
          "worker: without Sec-WebSocket-Version 13 and a key it is refused (426, RFC "
          "6455 4.2.1 and 4.4), never served as plain HTTP"
    for name in ("connection.md/Parsing multiple tokens/Multiple tokens with folding and LWS",
                 "connection.md/`upgrade`/Upgrade GET request")}

# Real bugs (the corpus is right) go here, with a reason; they xfail strictly.
# (Underscore field names, an absolute-form authority lost from the scope and
# pipelined requests before a half-close were, and are fixed: 9340002.)
BUGS: dict = {}

CASES = load_cases(BUGS)
if not CASES:
    pytest.skip(f"no conformance corpora at {CONFORMANCE}", allow_module_level=True)


class EchoServed(Served):
    """The calls of a connection once each app call the connection started has
    recorded its end: a body cut short ends in the app after the client is gone."""

    def records(self, event: str = "call"):
        try:
            text = self.calls_path.read_text()
        except FileNotFoundError:
            return []
        # A line still being written (no newline yet) is not read.
        lines = [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]
        return [r for r in lines if r["event"] == event]

    def calls_from(self, port: str, event: str = "call"):
        deadline = time.monotonic() + 5.0
        while True:
            started = super().calls_from(port, "start")
            calls = super().calls_from(port, event)
            if len(calls) >= len(started):
                return calls
            assert time.monotonic() < deadline, f"{len(started)} app calls, {len(calls)} ended"
            time.sleep(0.01)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("asgi_conformance")
    calls = workdir / "calls.jsonl"
    proc = PreforkProcess(["serve", "asgi_echo:echo", "-b", "127.0.0.1:0", "-w", "1",
                           "-k", "asyncio", *LIMITS], workdir, {CALLS_ENV: str(calls)})
    try:
        proc.wait_ready()
        yield EchoServed(proc, calls)
    finally:
        proc.cleanup()


def check_call(call: dict, want: dict, body_prefix_only: bool = False) -> None:
    uri = want.get("uri", want.get("url"))
    where = f"{want['method']} {uri!r}"
    assert call["method"] == want["method"], where
    assert call["http_version"] == "%d.%d" % tuple(want["version"]), where
    split = split_target(uri)   # the scope's raw_path and query_string
    if split is None:
        assert call["raw_path"] in ("", "*") and call["path"] in ("", "*"), where
        assert call["query_string"] == "", where
    else:
        raw_path, query = split
        assert (call["raw_path"], call["query_string"]) == (raw_path, query), where
        decoded = unquote_to_bytes(raw_path.encode("latin-1")).decode("utf-8", "replace")
        assert call["path"] == decoded, where
    body = base64.b64decode(want["body_b64"]).decode("latin-1")
    if body_prefix_only:
        assert call["body"].startswith(body), where
    else:
        assert call["body"] == body, where
    # Every field line as sent, in order, names lowercased, values without OWS;
    # absolute-form: the target's authority replaces Host (RFC 9112 3.2.2), as the
    # WSGI side's HTTP_HOST does.
    wanted = [[name.lower(), value.strip(" \t")] for name, value in want["headers"]]
    got = call["headers"]
    host = target_host(uri)
    if host is not None:
        assert [v for n, v in got if n == "host"] == [host], where
        got = [h for h in got if h[0] != "host"]
        wanted = [h for h in wanted if h[0] != "host"]
    assert got == wanted, where


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES)
def test_case(server, case):
    replay(server, case, check_call, deliberate=ASGI_DELIBERATE,
           cut_short=lambda call: call["disconnected"])


@pytest.mark.timeout(30)
def test_pipelined_requests_then_half_close_all_answered(server):
    """Two pipelined POSTs and a half-close, 20 times: two 200s each time (the WSGI
    replay's pipelining cases pass the same way)."""
    raw = (b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nAAA"
           b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nBBBB")
    answered = []
    for _ in range(20):
        _port, data = exchange(server.address, raw)
        answered.append(statuses(data, ["POST", "POST"]))
    assert answered == [[200, 200]] * 20, answered
