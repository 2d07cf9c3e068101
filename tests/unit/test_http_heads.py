"""The response-head cache (heads.app_head): bounded, and not crowded by one-off heads.

Regression: the cache was keyed by the exact (status, headers), Content-Length
value included, and stopped taking entries once full, so the first 512
distinct lengths an app sent held it for good and every head after them was
rebuilt on every response.
"""

import pytest

from prefork.servers.http import heads
from prefork.servers.http.heads import app_head, read_head

from test_http_exchange import Response, respond


@pytest.fixture(autouse=True)
def empty_caches():
    heads._HEADS.clear()
    heads._SHAPES.clear()
    yield
    heads._HEADS.clear()
    heads._SHAPES.clear()


def sized(n):
    return [("Content-Type", "application/json"), ("Content-Length", str(n)), ("X-A", "b")]


def test_a_later_common_head_is_cached_after_a_thousand_distinct_lengths():
    for n in range(1000):
        head = app_head("200 OK", sized(n))
        assert head.declared == n
    assert len(heads._HEADS) < 10 and len(heads._SHAPES) == 1   # one shape for all
    common = [("Content-Type", "text/html"), ("Content-Length", "13")]
    first = app_head("200 OK", common)
    second = app_head("200 OK", common)
    assert app_head("200 OK", common) is second           # cached after its second use
    assert first.prefix == second.prefix


def test_a_later_common_head_is_cached_after_a_thousand_one_off_heads():
    # Values that vary in other fields (an ETag) still make one-off entries:
    # the oldest leave, so a later head still gets in.
    for n in range(1000):
        app_head("200 OK", [("ETag", f'"{n}"')])
    assert len(heads._HEADS) <= heads._MAX_HEADS
    common = [("Content-Type", "text/plain")]
    assert app_head("200 OK", common) is app_head("200 OK", common)


def test_a_common_head_among_one_offs_stays_cached_or_comes_back():
    common = [("Content-Type", "text/plain"), ("Content-Length", "2")]
    key = ("200 OK", tuple(common))
    app_head("200 OK", common)
    for n in range(2000):
        app_head("200 OK", [("ETag", f'"{n}"')])
        app_head("200 OK", sized(n))
        app_head("200 OK", common)
        assert key in heads._HEADS     # pushed out at times, back at its next use


@pytest.mark.parametrize("n", [0, 7, 10, 123456, 10 ** 12])
def test_a_spliced_length_is_what_a_fresh_head_would_be(n):
    app_head("200 OK", sized(5))        # the shape, with another length
    spliced = app_head("200 OK", sized(n))
    fresh = read_head("200 OK", sized(n))
    assert spliced.prefix == fresh.prefix and spliced.declared == fresh.declared == n
    assert (spliced.code, spliced.close, spliced.has_server, spliced.has_date) == \
        (fresh.code, fresh.close, fresh.has_server, fresh.has_date)
    again = app_head("200 OK", sized(n + 1))        # spliced from a spliced shape's length
    assert again.prefix == read_head("200 OK", sized(n + 1)).prefix


def test_the_app_spelling_and_position_of_content_length_are_kept():
    headers = [("content-length", "3"), ("X-Z", "1"), ("Connection", "close")]
    app_head("201 Created", headers)
    head = app_head("201 Created", [("content-length", "42"), ("X-Z", "1"),
                                    ("Connection", "close")])
    assert head.prefix == b"HTTP/1.1 201 Created\r\ncontent-length: 42\r\nX-Z: 1\r\n"
    assert head.close and head.declared == 42


@pytest.mark.parametrize("bad", ["-1", "1 2", "\xb2", "0x5", "", "5\r\nX: y"])
def test_a_malformed_length_is_refused_even_when_its_shape_is_cached(bad):
    app_head("200 OK", sized(5))
    with pytest.raises(ValueError):
        app_head("200 OK", [("Content-Type", "application/json"), ("Content-Length", bad),
                            ("X-A", "b")])


def test_two_lengths_are_refused_whatever_is_cached():
    app_head("200 OK", [("Content-Length", "1")])
    with pytest.raises(ValueError):
        app_head("200 OK", [("Content-Length", "1"), ("Content-Length", "1")])


def test_responses_of_varying_length_are_framed_by_their_own_length():
    for n in (3, 1, 20, 3):
        body = b"x" * n

        def app(environ, start_response):
            start_response("200 OK", [("Content-Length", str(n))])
            return [body]

        _, response = respond(app)
        assert isinstance(response, Response)
        assert response.get("Content-Length") == str(n) and response.body == body
