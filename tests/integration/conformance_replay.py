"""Replay the gunicorn and llhttp request corpora (../shared/conformance) against a server.

Shared by tests/integration/test_http_conformance.py (a WSGI echo app) and
test_asgi_conformance.py (an ASGI one): the cases, the deliberate choices,
the raw exchange and the verdicts are the same; only how a call recorded by
the app is compared with the corpus's request (``check_call``) differs.

Each case gets its own connection to one echo-app server: the raw bytes are
sent, our side is half-closed, and everything up to the server's close is
read.  What reached the application is read back from the calls file, by the
connection's port, so HEAD requests and refused ones are judged the same way.

Cases kept: gunicorn's with its default settings (empty "config", no PROXY
preamble) and every llhttp strict case.  llhttp refuses methods missing from
its own table, which RFC 9110 allows: those must be served (METHOD_TABLE).
Where prefork takes the other branch of a choice the RFCs leave open, the case
is in DELIBERATE and the opposite outcome is checked instead.  Known defects
are in each test file's BUGS and xfail strictly.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional
from urllib.parse import unquote_to_bytes

import pytest

from http_helpers import ClientPort, read_response

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"
CASE_TIMEOUT = 5.0

DELIBERATE = {
    "valid/009": "Content-Length with Transfer-Encoding is refused (400): RFC 9112 6.1 "
                 "allows it, and llhttp refuses it too",
    **{name: "a transfer coding other than chunked gets 501 (RFC 9112 6.1 SHOULD) "
             "instead of passing the coded body through"
       for name in ("valid/025", "valid/025_line", "valid/029", "valid/030",
                    "valid/rfc9112_smuggle_gzip_chunked_01",
                    "valid/rfc9112_smuggle_te_identity_chunked_01",
                    "transfer-encoding.md/POST with `chunked` as last transfer-encoding",
                    "transfer-encoding.md/POST with `chunked` as last transfer-encoding "
                    "(multiple headers)")},
    "invalid/003c": "'-bl' is an RFC 9110 token, so a valid method; gunicorn wants "
                    "upper case and 3+ letters",
    "invalid/041": "a repeated Content-Type is passed on (the last one), not refused",
    "sample.md/No HTTP version": "HTTP/0.9 simple requests are not served (400)",
    **{name: "not HTTP (ICE or RTSP protocol): refused with 400"
       for name in ("method.md/SOURCE request with ICE", "method.md/OPTIONS request with RTSP",
                    "method.md/ANNOUNCE request with RTSP")},
    "method.md/M-SEARCH request": "'*' is a target for OPTIONS only (RFC 9112 3.2.4): 400 "
                                  "(SSDP's M-SEARCH * is not HTTP)",
    "uri.md/Disallow UTF-8 in URI path in strict mode": "non-ASCII bytes in the "
        "request-target are accepted, as gunicorn does (valid/027)",
}

# llhttp refusals of methods its own table lacks (ANNOUNCE is RTSP-only there):
# RFC 9110 9.1 lets a method be any token, so these must reach the app.
METHOD_TABLE = {
    "invalid.md/Invalid method": {"method": "MKCOLA", "url": "/", "version": [1, 1],
                                  "headers": [], "body_b64": ""},
    "invalid.md/HTTP protocol and ANNOUNCE method": {
        "method": "ANNOUNCE", "url": "/music/sweet/music", "version": [1, 0],
        "headers": [["Host", "example.com"]], "body_b64": ""},
}

# Corpus artefacts, not server behaviour: gunicorn's test reads a body to EOF.
# Here the missing bytes are sent, and the corpus body must be their prefix.
SHORT_BODY = {
    "valid/099": "Content-Length: 17914, but only 8599 body bytes follow",
}

# gunicorn's default limits, so its LimitRequest* cases hold.  gunicorn counts
# the CRLF in its 8190-byte field limit, prefork does not: 8188.
LIMITS = ("--limit-request-line", "4094", "--limit-request-fields", "100",
          "--limit-request-field-size", "8188")


def load_cases(bugs: Dict[str, str]) -> List:
    """The cases as pytest params, those named in ``bugs`` xfail strictly; [] without corpora."""
    if not CONFORMANCE.is_dir():
        return []
    cases = []
    for case in json.loads((CONFORMANCE / "gunicorn-requests.json").read_text())["cases"]:
        if not case["config"] and not case["name"].split("/", 1)[1].startswith("pp_"):
            cases.append(case)
    for case in json.loads((CONFORMANCE / "llhttp-requests.json").read_text())["cases"]:
        if case["mode"] == "strict":
            cases.append(case)
    params = []
    for case in cases:
        marks = []
        if case["name"] in bugs:
            marks.append(pytest.mark.xfail(strict=True, reason=bugs[case["name"]]))
        params.append(pytest.param(case, id=case["name"], marks=marks))
    return params


def exchange(address, raw: bytes) -> tuple:
    """Send ``raw``, half-close, read until the server closes: (port, bytes)."""
    opened = time.time()
    with socket.create_connection(address, timeout=CASE_TIMEOUT) as sock:
        port = ClientPort(sock.getsockname()[1])
        port.opened = opened     # a reused port must not inherit an older case's calls
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass        # refused early and closed: what came back still counts
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError(f"no close within {CASE_TIMEOUT} s; got {chunks!r}")
            if not data:
                break
            chunks.append(data)
    return port, b"".join(chunks)


def statuses(data: bytes, methods) -> list:
    reader = io.BytesIO(data)
    found = []
    while True:
        method = methods[len(found)] if len(found) < len(methods) else "GET"
        try:
            resp = read_response(reader, method)
        except (AssertionError, ValueError):
            break
        if resp is None:
            break
        if resp.status >= 200:
            found.append(resp.status)
    return found


def split_target(uri: str):
    """(path as sent, query) of a request-target; None for "*", where the path may
    be "" or "*"."""
    if uri == "*":
        return None
    target = uri.split("#", 1)[0]        # a fragment is never part of the resource
    path, _, query = target.partition("?")
    if "://" in path:
        rest = path.split("://", 1)[1]
        path = rest[rest.find("/"):] if "/" in rest else "/"
    elif not path.startswith("/"):
        path = ""                        # authority-form (CONNECT)
    return path, query


def expected_path(uri: str):
    """(PATH_INFO, QUERY_STRING) for a request-target, or None where either '' or '*' do."""
    split = split_target(uri)
    if split is None:
        return None
    path, query = split
    return unquote_to_bytes(path.encode("latin-1")).decode("latin-1"), query


def target_host(uri: str):
    """The host[:port] of an absolute-form target: it replaces Host (RFC 9112 3.2.2)."""
    target = uri.split("#", 1)[0].partition("?")[0]
    if target.startswith("/") or "://" not in target:
        return None
    return target.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]


def replay(server, case: dict, check_call: Callable[..., None],
           deliberate: Optional[Dict[str, str]] = None,
           cut_short: Optional[Callable[[dict], bool]] = None) -> None:
    """One case against ``server`` (an http_helpers.Served echo server): the
    responses and the calls file judged as the corpus says, ``check_call(call,
    want, body_prefix_only)`` judging each request that reached the app.

    ``deliberate``: more DELIBERATE cases, for this server kind only.
    ``cut_short(call)``: True for a call whose body never ended for the app.  A
    server that streams bodies (ASGI) calls the app once a request's head is
    in; a body that then turns out malformed, or is cut off by our close, must
    end there as a disconnect, never as a complete body.  One such call, the
    last, is allowed and does not count as served; the verdicts are the same.
    """
    name = case["name"]
    raw = base64.b64decode(case["raw_b64"])
    if name in METHOD_TABLE:
        case = dict(case, expect="accept", requests=[METHOD_TABLE[name]])
    wanted = case.get("requests") if case["expect"] == "accept" \
        else case.get("requests_before_error", [])
    methods = [r["method"] for r in wanted]
    if name in SHORT_BODY:
        declared = int(dict(wanted[0]["headers"])["CONTENT-LENGTH"])
        raw += b"-" * (declared - len(base64.b64decode(wanted[0]["body_b64"])))
    port, data = exchange(server.address, raw)
    calls = server.calls_from(port)
    codes = statuses(data, methods)
    context = f"responses {codes}, calls {[c['method'] for c in calls]}, sent {raw[:200]!r}"
    if cut_short is not None:
        if calls and cut_short(calls[-1]):
            calls = calls[:-1]
        assert not any(cut_short(call) for call in calls), context

    if name in DELIBERATE or name in (deliberate or {}):
        if case["expect"] == "accept":       # prefork refuses what the corpus accepts
            assert calls == [], context
            assert all(code >= 400 for code in codes), context
        else:                                # prefork serves what the corpus refuses
            assert calls and calls[0]["method"] == raw.split(b" ", 1)[0].decode("latin-1"), \
                context
            assert codes and codes[0] == 200, context
        return

    upgrade = "upgrade" in case
    if upgrade:
        # Bytes past llhttp's upgrade offset belong to a tunnel prefork does not
        # open; whatever it makes of them is not judged.
        assert len(calls) >= len(wanted), context
        calls = calls[:len(wanted)]
    assert len(calls) == len(wanted), context
    for n, (call, want) in enumerate(zip(calls, wanted)):
        check_call(call, want, body_prefix_only=upgrade and n == len(wanted) - 1
                   or name in SHORT_BODY)
    assert codes[:len(wanted)] == [200] * len(wanted), context
    if not upgrade:
        # Anything after the served requests is a refusal (accept cases: none
        # at all, not even for an incomplete tail cut short by our close).
        extra = codes[len(wanted):]
        if case["expect"] == "accept":
            assert extra == [], context
        else:
            assert all(code >= 400 for code in extra), context
