"""The HTTP/1.1 protocol fuzzed directly: hostile bytes in, well-formed answers out, wherever cut.

The same strategies as the reliability fuzz (tests/unit/http_fuzz.py), with
no socket, selector or loop: random bytes and mutated pipelines of valid
requests, at small limits too, go to ``HttpProtocol`` through the
in-memory driver, whole, byte by byte and cut at drawn offsets.  Each time
the protocol raises nothing, its output reads as a sequence of well-formed
responses (a server-made refusal last, followed by a lingering close), and
the requests that reach the app and the answers are the same however the
bytes were cut.  Responses come from a WSGI app through the real Exchange
with a small high-water mark, so long ones arrive in several parts, and the
client's socket may take only a few bytes per send.
"""

from __future__ import annotations

from typing import List

import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st

from http_fuzz import (AT_LIMITS, HEAD_AT_LIMITS, LONG_CHUNK_LINE, TRAILER_AT_LIMIT, comparable,
                       cuts, fuzz_settings, limited, read_replies, same_statuses)
from http_protocol_driver import Driver, converse, wsgi

from prefork.servers.http.parser import Limits


def app(environ, start_response):
    """Echo the request, framed three ways by what it was: a length, the close, none."""
    body = environ["wsgi.input"].read()
    text = f'{environ["REQUEST_METHOD"]} {environ["RAW_URI"]} {len(body)} '.encode() + body
    kind = len(text) % 3
    headers = [("Content-Type", "text/plain")]
    if kind == 0:       # no length: chunked (HTTP/1.1) or delimited by the close (HTTP/1.0)
        start_response("200 OK", headers)
        return [text[:5], text[5:20], text[20:]]
    headers.append(("Content-Length", str(len(text))))
    if kind == 2:
        headers.append(("Connection", "close"))
    start_response("200 OK", headers)
    return [text]


RESPONDER = wsgi(app, high_water=16)


def talk(pieces: List[bytes], limits: Limits, send_cap: int, stall: bool) -> Driver:
    return converse(pieces, limits, RESPONDER, send_cap=send_cap, stall=stall)


def check(d: Driver) -> List[int]:
    """The statuses of a conversation, having checked its shape."""
    methods = [method for method, _, _ in d.requests]
    statuses = read_replies(bytes(d.sent), methods)
    if d.rejected:
        assert len(d.rejected) == 1, d.rejected
        assert statuses[-1] == d.rejected[0] and 400 <= d.rejected[0] < 600
        assert d.shut, "a refusal is followed by a lingering close"
    assert d.end in ("close", "reset")
    assert d.finished == len(d.requests) or d.end == "reset" or "CLOSE" in d.actions
    return statuses


def same(whole: Driver, split: Driver, how: str) -> None:
    how = f"{how}: app saw {split.requests}, rejected {split.rejected}: {bytes(split.sent)[:300]!r}"
    assert [r[:2] for r in split.requests] == [r[:2] for r in whole.requests], how
    assert [r[2] for r in split.requests] == [r[2] for r in whole.requests], how
    statuses, split_statuses = check(whole), check(split)
    assert same_statuses(statuses, split_statuses, whole.rejected), (how, statuses,
                                                                     split_statuses)
    if statuses == split_statuses:
        assert comparable(bytes(split.sent)) == comparable(bytes(whole.sent)), how


@fuzz_settings(300)
@given(st.data(), limited(), st.sampled_from([1 << 30, 1 << 30, 7, 1]), st.booleans())
@example(None, (HEAD_AT_LIMITS, AT_LIMITS), 1 << 30, False)
@example(None, (TRAILER_AT_LIMIT, AT_LIMITS), 1, True)
@example(None, (LONG_CHUNK_LINE, Limits()), 7, False)
def test_hostile_bytes_get_the_same_well_formed_answers_whole_bytewise_and_cut(
        data, case, send_cap, stall):
    raw, limits = case
    whole = talk([raw] if raw else [], limits, send_cap, stall)
    note(f"whole: app saw {whole.requests}, rejected {whole.rejected}: {bytes(whole.sent)[:300]!r}")
    check(whole)
    same(whole, talk([raw[i:i + 1] for i in range(len(raw))], limits, send_cap, stall),
         "byte by byte")
    if data is not None:
        same(whole, talk(data.draw(cuts(raw), label="pieces"), limits, send_cap, stall), "cut")


@pytest.mark.parametrize("raw, limits", [(HEAD_AT_LIMITS, AT_LIMITS),
                                         (TRAILER_AT_LIMIT, AT_LIMITS),
                                         (LONG_CHUNK_LINE, Limits())],
                         ids=["head at the limits", "trailer at header_size",
                              "chunk line over 1024"])
def test_split_in_two_at_every_byte_answers_as_whole(raw, limits):
    whole = talk([raw], limits, 1 << 30, False)
    for i in range(1, len(raw)):
        same(whole, talk([raw[:i], raw[i:]], limits, 1 << 30, False), f"cut at {i}")


PIPELINE = (b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"
            b"HEAD /d HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
            b"GET /e HTTP/1.0\r\n\r\n")


@pytest.mark.parametrize("send_cap", [1 << 30, 3])
def test_a_valid_pipeline_split_in_two_at_every_byte_answers_as_whole(send_cap):
    whole = talk([PIPELINE], Limits(), send_cap, False)
    assert [r[1] for r in whole.requests] == ["/a", "/b", "/c", "/d", "/e"]
    assert check(whole) == [200] * 5
    for i in range(1, len(PIPELINE)):
        same(whole, talk([PIPELINE[:i], PIPELINE[i:]], Limits(), send_cap, False), f"cut {i}")
