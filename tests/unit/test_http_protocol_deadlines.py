"""HttpProtocol's deadlines, the late read before one is enforced, EOF, graceful stop and hurry.

Timeouts here: header_timeout 10, client_timeout 30, keepalive 5 (the
driver's defaults), from the origin T0.
"""

import pytest

from http_protocol_driver import T0, Driver, reply

from prefork.servers.http import protocol as p
from prefork.servers.http.parser import Limits
from prefork.servers.http.protocol import HttpProtocol

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD_ONLY = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"


def at(d, now):
    d.tick(now)
    return d.actions[-1]


# == the head: header_timeout from its first byte ============================================

def test_a_silent_client_is_closed_at_header_timeout_without_a_reply():
    d = Driver()
    assert at(d, T0 + 9.9) == "WAIT"
    assert at(d, T0 + 10) == "CLOSE" and d.sent == b"" and d.rejected == []
    assert d.actions == ["WAIT", "LATE_READ", "CLOSE"]


def test_a_slow_head_gets_408_header_timeout_after_its_first_byte():
    d = Driver()
    d.now = T0 + 4
    d.feed(b"GET / HT")
    d.now = T0 + 13
    d.feed(b"TP/1.1\r\n")        # trickling does not move the deadline
    assert at(d, T0 + 13.9) == "WAIT"
    d.tick(T0 + 14)
    assert d.rejected == [408] and d.actions[-5:] == ["LATE_READ", "REJECT", "SEND", "FINISHED",
                                                        "LINGER"]
    assert bytes(d.sent).startswith(b"HTTP/1.1 408 ")


def test_the_rest_of_a_head_read_late_still_gets_its_408():
    d = Driver()
    d.feed(b"GET / HT")
    d.unread.append(b"TP/1.1\r\n")     # some more came: the head is still late
    d.tick(T0 + 10)
    assert d.rejected == [408]


def test_a_head_completed_by_the_late_read_is_served():
    d = Driver()
    d.feed(b"GET / HT")
    d.unread.append(b"TP/1.1\r\nHost: a\r\n\r\n")
    d.tick(T0 + 10)
    assert d.requests == [("GET", "/", b"")] and d.rejected == [] and d.end is None


# == the body: client_timeout without progress ================================================

def test_a_stalled_body_gets_408_client_timeout_after_its_last_progress():
    d = Driver()
    d.feed(HEAD_ONLY + b"012")
    assert d.proto.deadline == T0 + 30
    d.now = T0 + 20
    d.feed(b"345")
    assert d.proto.deadline == T0 + 50
    assert at(d, T0 + 49) == "WAIT"
    d.tick(T0 + 50)
    assert d.rejected == [408] and d.requests == [] and d.shut


def test_body_progress_in_the_late_read_moves_the_deadline():
    d = Driver()
    d.feed(HEAD_ONLY + b"012")
    d.unread.append(b"345")
    assert at(d, T0 + 30) == "WAIT" and d.rejected == []
    d.unread.append(b"6789")
    d.tick(T0 + 61)
    assert d.requests == [("POST", "/", b"0123456789")]


# == the response: client_timeout without progress, then a reset =============================

def test_a_stalled_reader_is_reset_client_timeout_after_its_last_progress():
    d = Driver(send_cap=10)
    d.feed(GET)
    assert d.proto.state == p.WRITE and d.proto.deadline == T0 + 30
    d.now = T0 + 25
    d.writable()
    assert d.proto.deadline == T0 + 55
    assert at(d, T0 + 54) == "WAIT"
    assert at(d, T0 + 55) == "RESET" and d.end == "reset"


def test_a_stalled_sendfile_reader_is_reset_too():
    d = Driver(responder=reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                               file=(3, 0, 100)), send_cap=30)
    d.files[3] = b"x" * 100
    d.feed(GET)                  # 30 of the head's 40 bytes
    d.writable()                 # the head's last 10, then 30 of the file
    assert d.proto.state == p.WRITE and d.proto.file == (3, 30, 70)
    assert at(d, T0 + 30) == "RESET"


def test_no_deadline_while_the_app_runs():
    d = Driver(hold=True)
    d.feed(GET)
    assert at(d, T0 + 3600) == "WAIT" and d.proto.state == p.APP and d.end is None
    d.app_done()
    assert d.proto.deadline == T0 + 3600 + 5      # keepalive from the response's end


# == idle keep-alive, and the late read that serves what waited ==============================

def test_an_idle_keepalive_connection_closes_at_keepalive():
    d = Driver()
    d.feed(GET)
    assert at(d, T0 + 4.9) == "WAIT"
    assert at(d, T0 + 5) == "CLOSE" and d.actions[-2] == "LATE_READ"


def test_a_request_that_waited_in_the_socket_is_served_not_closed():
    # A sync worker busy elsewhere past the deadline: the request came in time.
    d = Driver()
    d.feed(GET)
    d.unread.append(GET)
    d.tick(T0 + 60)
    assert len(d.requests) == 2 and d.end is None
    assert d.proto.state == p.HEAD and d.proto.deadline == T0 + 65
    assert at(d, T0 + 65) == "CLOSE" and len(d.requests) == 2


def test_a_request_read_late_by_a_thread_worker_runs_and_the_deadline_waits():
    d = Driver(hold=True)
    d.feed(GET)
    d.app_done()
    d.unread.append(GET)
    assert at(d, T0 + 60) == "WAIT" and d.running and d.proto.state == p.APP


def test_eof_in_the_late_read_closes():
    proto = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    assert proto.tick(T0 + 10) == p.LATE_READ
    assert proto.eof() == p.CLOSE and proto.expire() == p.WAIT


def test_expire_without_a_late_read_does_nothing():
    proto = HttpProtocol(Limits(), 10.0, 30.0, 5.0, T0)
    assert proto.expire() == p.WAIT and proto.state == p.HEAD


# == lingering ===============================================================================

def test_a_lingering_close_ends_at_its_deadline_or_the_client_s_eof():
    d = Driver()
    d.feed(b"BAD\r\n\r\n")
    assert d.shut and d.proto.deadline == T0 + p.LINGER_TIME
    d.feed(b"more bytes, dropped")
    assert d.actions[-1] == "WAIT" and d.proto.wants == p.WANT_READ
    assert at(d, T0 + p.LINGER_TIME - 0.1) == "WAIT"
    assert at(d, T0 + p.LINGER_TIME) == "CLOSE"
    e = Driver()
    e.feed(b"BAD\r\n\r\n")
    e.eof()
    assert e.end == "close"


# == EOF ======================================================================================

@pytest.mark.parametrize("sent", [b"", GET, b"GET / HT", HEAD_ONLY + b"01"])
def test_eof_while_reading_closes(sent):
    d = Driver()
    if sent:
        d.feed(sent)
    d.eof()
    assert d.end == "close" and d.requests == ([("GET", "/", b"")] if sent == GET else [])


def test_eof_after_a_request_still_gets_its_response_and_the_pipelined_ones():
    d = Driver(hold=True)
    d.feed(GET + GET)
    d.eof()                        # the client half-closed after sending
    assert d.end is None and d.actions[-1] == "WAIT"
    d.app_done()
    d.app_done()
    assert len(d.requests) == 2 and bytes(d.sent).count(b"200 OK") == 2 and d.end == "close"


def test_eof_while_a_response_waits_to_be_written_lets_it_finish():
    d = Driver(send_cap=10)
    d.feed(GET)
    d.eof()
    assert d.end is None
    d.drain()
    assert d.end == "close" and bytes(d.sent).endswith(b"GET / 0 ")


# == graceful stop ============================================================================

def test_stop_while_idle_closes_nothing_and_the_next_request_is_told_close():
    d = Driver()
    d.feed(GET)
    assert d.stop() is False and d.end is None and d.proto.state == p.HEAD
    d.feed(GET)
    assert b"Connection: close" in bytes(d.sent).split(b"HTTP/1.1 200")[2]
    assert d.shut and d.proto.state == p.CLOSING


def test_stop_while_idle_and_nothing_comes_closes_at_keepalive():
    d = Driver()
    d.feed(GET)
    d.stop()
    assert at(d, T0 + 5) == "CLOSE" and len(d.requests) == 1


def test_stop_while_the_app_runs_asks_its_response_to_close():
    d = Driver(hold=True, responder=reply(OK))
    d.feed(GET)
    assert d.stop() is True and d.proto.keep_alive is False
    d.app_done()                  # the responder saw keep-alive allowed: the head said so
    assert d.proto.state == p.HEAD


def test_a_response_that_promised_keep_alive_before_the_stop_gets_one_more_request():
    d = Driver(hold=True)
    d.feed(GET)
    d.stop()
    d.proto.respond(OK, True, True)          # the head left before the stop reached it
    d.perform(d.proto.sent(len(OK), d.now))
    assert d.proto.state == p.HEAD and d.end is None
    d.running = False
    d.feed(GET)
    assert d.requests[-1] == ("GET", "/", b"") and d.proto.keep_alive is False


def test_stop_while_the_app_runs_and_its_head_is_still_to_come_closes_after_it():
    d = Driver(hold=True, responder=reply(OK, keep_alive=False))
    d.feed(GET)
    d.stop()
    d.app_done()
    assert d.shut and d.proto.state == p.CLOSING


def test_stop_during_a_body_makes_its_response_close():
    d = Driver()
    d.feed(HEAD_ONLY)
    assert d.stop() is False
    d.feed(b"0123456789")
    assert b"Connection: close" in bytes(d.sent) and d.shut


def test_stop_while_writing_and_while_refusing():
    d = Driver(send_cap=5)
    d.feed(GET)
    assert d.proto.state == p.WRITE and d.stop() is True
    e = Driver(send_cap=5)
    e.feed(b"BAD\r\n\r\n")
    assert e.proto.state == p.WRITE and e.stop() is False


# == hurry (the worker is orphaned) ===========================================================

def test_hurry_brings_an_idle_connection_s_close_forward_never_back():
    d = Driver()
    d.feed(GET)
    d.proto.hurry(T0 + 1)
    assert d.proto.deadline == T0 + 1
    d.proto.hurry(T0 + 3)
    assert d.proto.deadline == T0 + 1
    assert at(d, T0 + 1) == "CLOSE"


def test_hurry_leaves_a_head_on_its_way_a_body_a_job_and_a_response_alone():
    for sent, kwargs in ((b"GET / HT", {}), (HEAD_ONLY, {}), (GET, {"hold": True}),
                         (GET, {"send_cap": 5})):
        d = Driver(**kwargs)
        d.feed(sent)
        before = d.proto.deadline
        d.proto.hurry(T0 + 0.5)
        assert d.proto.deadline == before, (sent, kwargs)


def test_hurry_shortens_a_linger():
    d = Driver()
    d.feed(b"BAD\r\n\r\n")
    d.proto.hurry(T0 + 0.5)
    assert d.proto.deadline == T0 + 0.5 and at(d, T0 + 0.5) == "CLOSE"
