"""HttpProtocol's rules, one by one: requests, pipelining, 100-continue, keep-alive, responses.

Deadlines, graceful stop and hurry are in test_http_protocol_deadlines.py;
the fuzzing in test_http_protocol_fuzz.py.  Each test drives the protocol
with the in-memory driver (http_protocol_driver.py) and checks the actions
it answered, what it sent and how the connection ended.
"""

import sys

import pytest

from http_protocol_driver import T0, Driver, reply

from prefork.servers.http import protocol as p
from prefork.servers.http.parser import Limits
from prefork.servers.http.protocol import HttpProtocol
from prefork.servers.http.response import CONTINUE

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def get(path="/", version="1.1", *fields):
    lines = [f"GET {path} HTTP/{version}", "Host: a", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(body=b"hello", *fields, path="/"):
    lines = [f"POST {path} HTTP/1.1", "Host: a", f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def responses(d):
    return bytes(d.sent).count(b"HTTP/1.1 200 OK")


def test_the_protocol_makes_no_system_calls_and_answers_small_ints():
    module = sys.modules[HttpProtocol.__module__]
    for name in ("os", "socket", "selectors", "time", "threading", "select"):
        assert name not in vars(module)
    for code, name in enumerate(p.ACTIONS):
        assert getattr(p, name) == code and type(getattr(p, name)) is int


# == the usual request ========================================================================

def test_a_get_in_one_piece_is_one_request_one_send_then_waiting_for_the_next():
    d = Driver()
    d.feed(get())
    assert d.actions == ["REQUEST", "SEND", "FINISHED", "WAIT"]
    assert d.requests == [("GET", "/", b"")] and responses(d) == 1
    proto = d.proto
    assert proto.state == p.HEAD and proto.wants == p.WANT_READ
    assert proto.deadline == T0 + 5.0 and proto.started == 0.0      # keepalive, idle


def test_every_input_answers_a_plain_int():
    proto = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    action = proto.received(get(), T0)
    assert type(action) is int and action == p.REQUEST
    assert type(proto.respond(OK, True, True)) is int
    assert type(proto.sent(len(OK), T0)) is int


def test_a_head_s_start_is_its_first_byte():
    d = Driver(hold=True)
    d.now = T0 + 1
    d.feed(b"GET / HT")
    d.now = T0 + 3
    d.feed(b"TP/1.1\r\nHost: a\r\n\r\n")
    assert d.proto.started == T0 + 1 and d.proto.state == p.APP and d.proto.wants == 0


def test_the_request_is_what_the_parser_read():
    d = Driver()
    raw, body = post(b"abc", "X-A: 1")
    d.feed(raw + body)
    request = d.heads[0]
    assert (request.method, request.target, request.content_length) == ("POST", "/", 3)
    assert ("X-A", "1") in request.headers and d.requests == [("POST", "/", b"abc")]


def test_a_body_comes_as_data_events_then_the_request():
    d = Driver()
    raw, body = post(b"0123456789")
    d.feed(raw + body[:4])
    assert d.actions == ["REQUEST_HEAD", "BODY_DATA", "WAIT"] and d.proto.state == p.BODY
    d.feed(body[4:])
    assert d.actions[3:] == ["BODY_DATA", "REQUEST", "SEND", "FINISHED", "WAIT"]
    assert d.requests == [("POST", "/", b"0123456789")]


def test_a_chunked_body_arrives_whole():
    d = Driver()
    d.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: x\r\n\r\n")
    assert d.requests == [("PUT", "/", b"abcde")] and d.proto.state == p.HEAD


# == pipelining ===============================================================================

def test_pipelined_requests_are_answered_in_order_one_after_the_other():
    d = Driver()
    raw, body = post(b"xy", path="/2")
    d.feed(get("/1") + raw + body + get("/3"))
    assert [r[1] for r in d.requests] == ["/1", "/2", "/3"]
    sent = bytes(d.sent)
    assert sent.index(b"GET /1") < sent.index(b"POST /2") < sent.index(b"GET /3")
    assert d.actions.count("FINISHED") == 3 and d.actions[-1] == "WAIT"


def test_a_pipelined_request_s_head_starts_when_its_turn_comes():
    d = Driver()
    d.feed(get("/1") + b"GET /2 HT")
    d.now = T0 + 2
    d.feed(b"TP/1.1\r\nHost: a\r\n\r\n")
    assert len(d.requests) == 2
    d2 = Driver()
    d2.feed(get("/1") + b"GET /2 HT")
    assert d2.proto.state == p.HEAD and d2.proto.deadline == T0 + 10.0   # header_timeout
    assert d2.proto.started == T0


def test_input_during_a_response_waits_its_turn():
    d = Driver(send_cap=10)
    d.feed(get("/1"))
    assert d.proto.state == p.WRITE and d.proto.wants == p.WANT_WRITE
    d.feed(get("/2"))                    # an asyncio adapter reads all the time
    assert d.actions[-1] == "WAIT" and len(d.requests) == 1
    d.drain()
    assert [r[1] for r in d.requests] == ["/1", "/2"] and d.proto.state == p.HEAD


def test_a_thread_worker_runs_one_request_of_a_pipeline_at_a_time():
    d = Driver(hold=True)
    d.feed(get("/1") + get("/2"))
    assert len(d.requests) == 1 and d.proto.state == p.APP and d.proto.wants == 0
    d.feed(get("/3"))
    assert len(d.requests) == 1
    d.app_done()
    assert len(d.requests) == 2 and d.running
    d.app_done()
    d.app_done()
    assert [r[1] for r in d.requests] == ["/1", "/2", "/3"] and d.proto.state == p.HEAD


# == 100-continue =============================================================================

def continued(*pieces):
    d = Driver()
    for piece in pieces:
        d.feed(piece)
    return d


EXPECT = "Expect: 100-continue"


def test_100_continue_goes_out_when_the_head_came_alone():
    raw, body = post(b"hello", EXPECT)
    d = continued(raw)
    assert d.actions == ["REQUEST_HEAD", "SEND_CONTINUE", "WAIT"] and bytes(d.sent) == CONTINUE
    d.feed(body)
    assert d.continues == 1 and d.requests == [("POST", "/", b"hello")]


def test_no_100_continue_when_some_of_the_body_came_with_the_head():
    raw, body = post(b"hello", EXPECT)
    d = continued(raw + body[:1], body[1:])
    assert d.continues == 0 and d.requests == [("POST", "/", b"hello")]


def test_no_100_continue_without_a_body_or_to_http10():
    raw, _ = post(b"", EXPECT)
    assert continued(raw).continues == 0
    d = continued(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert d.continues == 0 and d.proto.state == p.BODY


def test_100_continue_for_a_chunked_body_and_for_a_pipelined_head_waiting_alone():
    d = continued(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" +
                  EXPECT.encode() + b"\r\n\r\n")
    assert d.continues == 1
    raw, body = post(b"hi", EXPECT, path="/2")
    d = continued(get("/1") + raw)
    assert d.continues == 1 and bytes(d.sent).endswith(CONTINUE)
    d.feed(body)
    assert [r[1] for r in d.requests] == ["/1", "/2"]


def test_100_continue_waits_for_the_adapter_to_want_the_body():
    # An ASGI adapter asks for the body on the app's first receive(): the
    # interim response goes out then, and only if the client still waits.
    raw, body = post(b"hello", EXPECT)
    proto = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    assert proto.received(raw, T0) == p.REQUEST_HEAD
    assert proto.next(T0 + 1) == p.SEND_CONTINUE
    assert proto.next() == p.WAIT and proto.deadline == T0 + 1 + 30.0
    assert proto.received(body, T0 + 2) == p.BODY_DATA and proto.data == body
    assert proto.next() == p.REQUEST
    late = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    assert late.received(raw, T0) == p.REQUEST_HEAD
    assert late.received(body[:2], T0) == p.BODY_DATA      # sent without waiting: no 100
    assert late.next() == p.WAIT


# == keep-alive and the close =================================================================

def test_http11_keeps_the_connection():
    d = Driver()
    d.feed(get())
    assert d.proto.keep_alive and d.end is None and not d.shut


def test_http10_closes_when_the_client_asked_and_sent_nothing_more():
    d = Driver()
    d.feed(get(version="1.0"))
    assert not d.proto.keep_alive and d.end == "close" and not d.shut
    assert b"Connection: close" in bytes(d.sent)


def test_http10_keep_alive_on_request():
    d = Driver()
    d.feed(get("/", "1.0", "Connection: keep-alive"))
    d.feed(get("/", "1.0", "Connection: keep-alive"))
    assert len(d.requests) == 2 and d.end is None


def test_connection_close_closes_after_the_response():
    d = Driver()
    d.feed(get("/", "1.1", "Connection: close"))
    assert d.end == "close" and d.proto.state == p.CLOSED


def test_connection_close_with_more_sent_lingers_and_serves_nothing_more():
    d = Driver()
    d.feed(get("/1", "1.1", "Connection: close") + get("/2"))
    assert d.shut and d.end is None and d.proto.state == p.CLOSING and len(d.requests) == 1
    d.feed(get("/3"))
    assert len(d.requests) == 1 and d.actions[-1] == "WAIT"


def test_a_response_that_closes_lingers_whatever_the_request_asked():
    d = Driver(responder=reply(OK, keep_alive=False))
    d.feed(get())
    assert d.shut and d.proto.state == p.CLOSING and d.proto.wants == p.WANT_READ
    assert d.proto.deadline == T0 + p.LINGER_TIME


# == responses ================================================================================

def test_a_response_in_parts_asks_the_app_for_more_after_each_leaves():
    d = Driver(responder=reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", b"ab", b"",
                               b"cd"))
    d.feed(get())
    assert d.actions == ["REQUEST", "SEND", "PRODUCE", "SEND", "PRODUCE", "PRODUCE", "SEND",
                         "FINISHED", "WAIT"]
    assert bytes(d.sent).endswith(b"\r\n\r\nabcd")


def test_a_file_range_goes_after_the_bytes_before_it():
    d = Driver(responder=reply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n",
                               file=(7, 2, 6)), send_cap=4)
    d.files[7] = b"xx123456yy"
    d.feed(get())
    d.drain()
    assert bytes(d.sent).endswith(b"\r\n\r\n123456") and d.proto.state == p.HEAD
    assert "SENDFILE" in d.actions and d.actions[-2:] == ["FINISHED", "WAIT"]


def test_a_file_that_shrank_ends_its_range():
    d = Driver(responder=reply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", file=(7, 2, 6)))
    d.files[7] = b"xx12"
    d.feed(get())
    d.drain()
    assert bytes(d.sent).endswith(b"\r\n\r\n12") and d.finished == 1


def test_a_partial_send_waits_for_writable_and_resumes_where_it_stopped():
    d = Driver(send_cap=5)
    d.feed(get())
    assert d.proto.state == p.WRITE and len(d.sent) == 5
    d.writable()
    assert len(d.sent) == 10
    d.drain()
    assert responses(d) == 1 and d.proto.state == p.HEAD


def test_an_app_failing_after_output_left_closes_the_connection():
    d = Driver(responder=reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"abc",
                               abort_after=1))
    d.feed(get())
    assert d.end == "close" and d.finished == 0 and d.actions[-1] == "CLOSE"


def test_an_answer_before_the_body_ended_is_followed_by_a_lingering_close():
    # An ASGI app may answer (a 413, say) without reading the body.
    raw, body = post(b"0123456789")
    proto = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    assert proto.received(raw + body[:3], T0) == p.REQUEST_HEAD
    assert proto.respond(OK, True, True) == p.SEND and proto.state == p.APP
    assert proto.received(body[3:5], T0) == p.BODY_DATA    # still delivered, if it wants it
    assert proto.sent(len(OK), T0) == p.FINISHED
    assert proto.finish(T0) == p.LINGER and proto.state == p.CLOSING


def test_a_bad_body_after_an_early_answer_closes_without_a_second_response():
    proto = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert proto.received(head, T0) == p.REQUEST_HEAD
    assert proto.respond(OK, False, True) == p.SEND
    assert proto.received(b"zz\r\n", T0) == p.CLOSE and proto.state == p.CLOSED


# == refusals =================================================================================

@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
])
def test_a_refused_request_gets_its_status_then_a_lingering_close(raw, status):
    d = Driver()
    d.feed(raw)
    assert d.rejected == [status] and d.requests == []
    assert d.actions == ["REJECT", "SEND", "FINISHED", "LINGER"]
    assert bytes(d.sent).startswith(b"HTTP/1.1 %d " % status) and b"Connection: close" in d.sent
    d.feed(get())                   # dropped
    assert d.requests == [] and d.actions[-1] == "WAIT"
    d.eof()
    assert d.end == "close"


def test_a_refusal_in_a_pipeline_comes_after_the_answers_before_it():
    d = Driver()
    d.feed(get("/1") + b"BAD\r\n\r\n" + get("/3"))
    assert [r[1] for r in d.requests] == ["/1"] and d.rejected == [400]
    assert bytes(d.sent).index(b"200 OK") < bytes(d.sent).index(b"400 Bad Request")


def test_a_bad_body_is_refused_before_the_app_runs():
    d = Driver()
    d.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY")
    assert d.rejected == [400] and d.requests == [] and d.shut


def test_a_refusal_that_does_not_fit_waits_for_writable_then_lingers():
    d = Driver(send_cap=10)
    d.feed(b"BAD\r\n\r\n")
    assert d.proto.state == p.WRITE and not d.shut
    d.drain()
    assert d.shut and bytes(d.sent).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("state, wants", [(p.HEAD, 1), (p.BODY, 1), (p.CLOSING, 1),
                                          (p.WRITE, 2), (p.APP, 0), (p.CLOSED, 0)])
def test_what_each_state_waits_for(state, wants):
    proto = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    proto.state = state
    assert proto.wants == wants == p.WANTS[state]
