"""Response heads built by the server itself: the Date cache and whole small responses."""

from __future__ import annotations

import email.utils
import threading

from prefork.servers.http import response
from prefork.servers.http.response import date_header, error_response, simple_response


def test_date_header_is_a_whole_line() -> None:
    line = date_header()
    assert line.startswith(b"Date: ") and line.endswith(b" GMT\r\n")
    assert email.utils.parsedate_to_datetime(line[6:-2].decode()) is not None


def test_a_thread_reading_the_date_while_another_formats_it_gets_a_whole_line(monkeypatch) -> None:
    """Regression: the cache was written in two steps (the second, then the line), so a
    thread arriving between them took the old line, or none at all on the first second."""
    now = 1_900_000_000
    monkeypatch.setattr(response, "_date", (now - 1, b"Date: stale\r\n"))
    monkeypatch.setattr(response.time, "time", lambda: float(now))
    real = response.formatdate
    seen = []

    def formatdate(when: float, usegmt: bool) -> str:
        if not seen:        # another thread asks while this one is formatting
            seen.append(None)
            seen[0] = date_header()
        return real(when, usegmt=usegmt)

    monkeypatch.setattr(response, "formatdate", formatdate)
    outer = date_header()
    expected = b"Date: " + real(now, usegmt=True).encode() + b"\r\n"
    assert outer == expected
    assert seen[0] == expected


def test_date_header_from_many_threads_never_empty() -> None:
    bad = []

    def hammer() -> None:
        for _ in range(2000):
            if not date_header().startswith(b"Date: "):
                bad.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not bad


def test_simple_response_frames_its_body() -> None:
    data = simple_response(404, b"nope\n", extra=[("Allow", "GET")])
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 404 Not Found"
    assert b"Content-Length: 5" in lines and b"Allow: GET" in lines
    assert b"Connection: close" in lines and body == b"nope\n"


def test_simple_response_head_only_keeps_the_length() -> None:
    data = simple_response(200, b"12345", content_type="text/plain", head_only=True)
    assert data.endswith(b"\r\n\r\n") and b"Content-Length: 5\r\n" in data


def test_error_response_keep_alive() -> None:
    assert b"Connection: close" not in error_response(400, keep_alive=True)
    assert error_response(413).endswith(b"413 Content Too Large\n") or \
        error_response(413).endswith(b"413 Request Entity Too Large\n")
