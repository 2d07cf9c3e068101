"""Replay the gunicorn and llhttp request corpora (../shared/conformance) against RequestParser.

The harness drives the parser the way connection.py does: heads, then bodies,
pipelined, and nothing more is read once a request that ends the connection
(HTTP/1.0 without keep-alive, ``Connection: close``) is complete, since the
server answers it and closes.  Trailers are not compared: PEP 3333 has no
place for them and the parser discards them.
"""

import base64
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

from prefork.servers.http.environ import base_environ, build_environ
from prefork.servers.http.parser import ProtocolError, RequestParser

# Cases where this project answers differently from the corpus on purpose:
# name -> (what we do, why).  "accept": the messages complete without error
# (heads and bodies not compared); "wait": no error, the parser waits for more;
# an int: ProtocolError with that status.
DELIBERATE = {
    "valid/009": (400, "Content-Length with Transfer-Encoding: RFC 9112 6.1 lets a server "
                       "reject it, and rejecting is the safe answer to smuggling"),
    "valid/025": (501, "gzip before chunked: RFC 9112 6.1 says a server SHOULD answer 501 to a "
                       "transfer coding it does not implement; gunicorn hands the app the "
                       "still-encoded bytes as if they were the body"),
    "valid/025_line": (501, "gzip, chunked: as valid/025"),
    "valid/rfc9112_smuggle_gzip_chunked_01": (501, "gzip, chunked: as valid/025"),
    "valid/029": (501, "'identity' is not a transfer coding since RFC 7230 (removed from the "
                       "registry): an unknown coding, 501 per RFC 9112 6.1"),
    "valid/030": (501, "identity, chunked: as valid/029"),
    "valid/rfc9112_smuggle_te_identity_chunked_01": (501, "identity, chunked: as valid/029"),
    "valid/040": ("accept", "the parser keeps header names containing '_' (they are RFC 9110 "
                            "tokens); build_environ drops them so they cannot pose as their "
                            "'-' twins in HTTP_*; gunicorn drops them in the parser"),
    "valid/099": ("wait", "the body is 8599 bytes but Content-Length says 17914: an incomplete "
                          "message (RFC 9112 8), never handed to the app; gunicorn serves the "
                          "truncated body at EOF"),
    "invalid/003c": ("accept", "'-bl' is an RFC 9110 token, so a valid method (9.1); gunicorn's "
                               "upper-case / 3-20 character rule is its own"),
    "invalid/006": ("accept", "4112-byte request line: gunicorn's default limit is 4094, ours "
                              "(Limits.request_line) is 8190"),
    "invalid/008": ("accept", "field lines of 8189 and 4108 bytes: within our 8190-byte "
                              "Limits.header_size; the limit is gunicorn's own"),
    "invalid/017": ("accept", "an 8189-byte field line: within our 8190-byte Limits.header_size"),
    "invalid/041": ("accept", "a repeated Content-Type is a sender error (RFC 9110 5.3) that "
                              "RFC 9110/9112 do not require a recipient to reject; it does not "
                              "affect framing"),
    "method.md/CONNECT with body": ("wait", "we do not tunnel: CONNECT is framed like any "
                                            "request (RFC 9112 6.3 has no CONNECT exception "
                                            "for requests), so the 10 Content-Length bytes are "
                                            "read as its body; llhttp hands them to the tunnel"),
    "method.md/SOURCE request with ICE": (400, "ICE/1.0 is not HTTP (RFC 9112 2.3 HTTP-version)"),
    "method.md/OPTIONS request with RTSP": (400, "RTSP/1.0 is not HTTP"),
    "method.md/ANNOUNCE request with RTSP": (400, "RTSP/1.0 is not HTTP"),
    "sample.md/No HTTP version": (400, "HTTP/0.9 simple requests are not served"),
    "transfer-encoding.md/POST with `chunked` as last transfer-encoding":
        (501, "deflate, chunked: a coding we do not implement, 501 per RFC 9112 6.1"),
    "transfer-encoding.md/POST with `chunked` as last transfer-encoding (multiple headers)":
        (501, "deflate then chunked: as above"),
    "method.md/M-SEARCH request": (400, "'M-SEARCH *': RFC 9112 3.2.4 keeps the asterisk-form "
                                        "for OPTIONS (gunicorn's invalid/rfc9112_target_"
                                        "asterisk_non_options_01 agrees); SSDP is HTTP over UDP"),
    "uri.md/Disallow UTF-8 in URI path in strict mode":
        ("accept", "raw non-ASCII bytes in the target are taken as latin-1 (PEP 3333): RFC 9112 "
                   "3 only says SHOULD 400, clients do send them, and gunicorn accepts them "
                   "too (valid/027)"),
}

# llhttp refuses methods that are not in its own table; RFC 9110 9.1 allows any
# token, so these must be accepted (DESIGN.md: "llhttp rejects methods outside
# its table ... while RFC 9110 allows any token").
METHOD_TABLE = {
    "invalid.md/Invalid method": "MKCOLA",
    "invalid.md/HTTP protocol and ANNOUNCE method": "ANNOUNCE (an RTSP-only method in llhttp)",
}

# Real bugs: the corpus is right; xfail(strict) until prefork/ is fixed.
KNOWN_BUGS = {}

# Split replays whose outcome depends on where the input was cut (a real bug).
SPLIT_BUGS = {}

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "conformance"
_FILES = {"gunicorn": CORPUS / "gunicorn-requests.json", "llhttp": CORPUS / "llhttp-requests.json"}
if not all(path.is_file() for path in _FILES.values()):
    pytest.skip(f"conformance corpora not found in {CORPUS}", allow_module_level=True)


def _load():
    cases = []
    for case in json.loads(_FILES["gunicorn"].read_text())["cases"]:
        if case["config"] or case["name"].rsplit("/", 1)[-1].startswith("pp_"):
            continue    # gunicorn settings or PROXY protocol: not HTTP defaults
        cases.append(dict(case, target_key="uri"))
    for case in json.loads(_FILES["llhttp"].read_text())["cases"]:
        cases.append(dict(case, target_key="url"))
    return cases


CASES = _load()
BY_NAME = {case["name"]: case for case in CASES}


@dataclass
class Outcome:
    requests: List[tuple] = field(default_factory=list)
    status: Optional[int] = None      # ProtocolError status
    in_head: bool = False             # input ended inside a head
    in_body: bool = False             # input ended inside a body
    closed: bool = False              # stopped after a request that ends the connection
    unread: bool = False              # bytes the server never parses (after the close)


def replay(chunks) -> Outcome:
    parser = RequestParser()
    out = Outcome()
    request, body = None, bytearray()
    chunks = list(chunks)
    try:
        for index, data in enumerate(chunks):
            parser.feed(data)
            while not out.closed:
                if request is None:
                    request = parser.next_head()
                    if request is None:
                        break
                    body = bytearray()
                    if not parser.in_body:
                        done = True
                    else:
                        data_, done = parser.read_body()
                        body += data_
                else:
                    data_, done = parser.read_body()
                    body += data_
                if not done:
                    break
                out.requests.append(_head(request) + (bytes(body),))
                out.closed = not request.keep_alive
                request = None
            if out.closed:
                out.unread = bool(parser.buffered) or any(chunks[index + 1:])
                break
    except ProtocolError as exc:
        out.status = exc.status
        return out
    out.in_body = request is not None
    out.in_head = not out.closed and request is None and parser.buffered > 0
    return out


def _head(request):
    return (request.method, request.target, request.version,
            [(name.lower(), value) for name, value in request.headers])


def expected(case, key="requests"):
    return [(r["method"], r[case["target_key"]], "HTTP/%d.%d" % tuple(r["version"]),
             [(name.lower(), value.strip(" \t")) for name, value in r["headers"]],
             base64.b64decode(r["body_b64"]))
            for r in case.get(key, [])]


def raw_of(case) -> bytes:
    raw = base64.b64decode(case["raw_b64"])
    if "upgrade" in case:
        raw = raw[:case["upgrade"]["offset"]]   # the rest belongs to the new protocol
    return raw


def check_accept(case, out: Outcome) -> None:
    assert out.status is None, f"refused with {out.status}"
    assert out.requests == expected(case)
    if not case.get("incomplete_tail"):
        assert not (out.in_head or out.in_body), "a message was left incomplete"


def check_reject(case, raw: bytes, out: Outcome) -> None:
    before = expected(case, "requests_before_error")
    if out.status is not None:
        assert 400 <= out.status < 600
        assert out.requests == before[:len(out.requests)]
        return
    if out.closed and out.unread and before:
        # Data after a request that ends the connection: the server answers that
        # request and closes without reading on, which is the refusal.
        assert out.requests == before
        return
    assert out.requests == before[:len(out.requests)]
    if out.in_head:
        # llhttp flags the bad byte as it arrives; we judge a head once it is
        # whole.  End it: it must then be refused, not served.
        finished = replay([raw, b"\r\n\r\n"])
        assert finished.status is not None and 400 <= finished.status < 600, \
            f"accepted once the head is complete: {finished}"
        return
    # Input stopping inside a body: the message is incomplete (RFC 9112 8); the
    # connection closes at EOF without handing it to the app.
    assert out.in_body, f"neither refused nor incomplete: {out}"


def check_ours(ours, out: Outcome) -> None:
    if isinstance(ours, int):
        assert out.status == ours
    elif ours == "accept":
        assert out.status is None and not (out.in_head or out.in_body)
        assert out.requests
    else:
        assert ours == "wait"
        assert out.status is None and (out.in_head or out.in_body)


def _params(bugs):
    return [pytest.param(case["name"], id=case["name"],
                         marks=[pytest.mark.xfail(strict=True, reason=bugs[case["name"]])]
                         if case["name"] in bugs else [])
            for case in CASES]


@pytest.mark.parametrize("name", _params(KNOWN_BUGS))
def test_corpus_case(name):
    case = BY_NAME[name]
    raw = raw_of(case)
    out = replay([raw])
    if name in DELIBERATE:
        check_ours(DELIBERATE[name][0], out)
    elif name in METHOD_TABLE:
        assert out.status is None and out.requests and not (out.in_head or out.in_body)
    elif case["expect"] == "accept":
        check_accept(case, out)
    else:
        check_reject(case, raw, out)


def split_points(name: str, size: int, count: int = 3) -> List[int]:
    rng = random.Random(name)   # str seeds are stable across runs and hash seeds
    inner = range(1, size)
    return sorted(rng.sample(inner, min(count, len(inner))))


@pytest.mark.parametrize("name", _params(SPLIT_BUGS))
def test_corpus_case_split_at_random_boundaries(name):
    raw = raw_of(BY_NAME[name])
    whole = replay([raw])
    cuts = [0] + split_points(name, len(raw)) + [len(raw)]
    pieces = [raw[a:b] for a, b in zip(cuts, cuts[1:])]
    split = replay(pieces)
    assert (split.requests, split.status, split.in_head, split.in_body, split.closed) == \
        (whole.requests, whole.status, whole.in_head, whole.in_body, whole.closed), cuts


def test_every_listed_name_is_a_replayed_case():
    for table in (DELIBERATE, METHOD_TABLE, KNOWN_BUGS, SPLIT_BUGS):
        assert set(table) <= set(BY_NAME)
    assert not set(DELIBERATE) & set(KNOWN_BUGS)


def test_the_selection_matches_the_issue():
    gunicorn = [c for c in CASES if c["target_key"] == "uri"]
    assert len(gunicorn) == 137 - 24     # 24 cases need gunicorn settings (pp_* among them)
    assert len(CASES) - len(gunicorn) == 133


def test_underscore_header_names_reach_the_parser_but_not_the_environ():
    raw = base64.b64decode(BY_NAME["valid/040"]["raw_b64"])
    parser = RequestParser()
    parser.feed(raw)
    request = parser.next_head()
    names = [name for name, _ in request.headers]
    assert names == ["Transfer_Encoding", "Content-Length", "Content_Length"]
    assert request.content_length == 7 and not request.chunked
    environ = build_environ(base_environ(("127.0.0.1", 80), False, "", None), request,
                            None, 7, ("127.0.0.1", 1))
    assert environ["CONTENT_LENGTH"] == "7"
    assert "HTTP_TRANSFER_ENCODING" not in environ
