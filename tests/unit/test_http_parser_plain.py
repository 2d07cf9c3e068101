"""The parser's fast path for the usual head against its step-by-step checks.

``RequestParser._plain_head`` takes the usual head in one pass over its
bytes and a few string splits; ``_checked_head`` checks it rule by rule (and
says what is wrong).  The fast path may hand any head over to the checks,
but whatever it accepts must come out exactly as the checks make it, and
under the same limits.
"""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prefork.servers.http.parser import Limits, ProtocolError, RequestParser  # noqa: E402

# Characters that matter to the rules, and a few that do not.
TRICKY = ["\r", "\n", "\r\n", " ", "\t", ":", "/", "\x00", "\x01", "\x0b", "\x7f", "\x80",
          "\xff", "é", "a", "Z", "0", "-", "_", "!", "?", "%", "*", "@", "[", '"', ","]
pieces = st.lists(st.sampled_from(TRICKY) | st.text(alphabet="abcXYZ-019", max_size=4),
                  max_size=8).map("".join)
VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0xff, blacklist_characters="\x7f")


def mostly(usual, odd):
    """Usual values 19 times in 20, so that many heads pass every rule but one."""
    return st.integers(0, 19).flatmap(lambda i: odd if i == 0 else usual)


methods = mostly(st.sampled_from(["GET", "POST", "PURGE", "M-SEARCH", "CONNECT", "OPTIONS"]),
                 st.sampled_from(["get", "G T", ""]) | pieces)
targets = mostly(st.text(VISIBLE, max_size=12).map(lambda t: "/" + t),
                 st.sampled_from(["*", "http://h/x", "h:80", "/ x"]) | pieces)
versions = mostly(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.9"]),
                  st.sampled_from(["HTTP/2.0", "HTTP/1.10", "http/1.1", "HTTP/1.1 "]))
names = mostly(st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}", fullmatch=True),
               st.sampled_from(["a b", " Host", "Host ", "", "Ü"]) | pieces)
separators = mostly(st.sampled_from([":", ": ", ":\t", ":  "]), st.sampled_from([" :", ""]))
values = mostly(st.lists(VISIBLE | st.sampled_from([" ", "\t"]), max_size=10).map("".join),
                st.sampled_from(["a\r b", "a\x00", "x\x7f", "a\nb"]) | pieces)
fields = st.lists(st.tuples(names, separators, values), max_size=5)


def head_of(method, target, version, field_list) -> str:
    lines = [f"{method} {target} {version}"] + [n + sep + v for n, sep, v in field_list]
    head = "".join(line + "\r\n" for line in lines)
    # What next_head hands over: up to the first empty line, without it.
    end = head.find("\r\n\r\n")
    return head if end < 0 else head[:end + 2]


def checked(parser: RequestParser, head: str):
    try:
        r = parser._checked_head(head)
    except ProtocolError as exc:
        return exc.status
    return (r.method, r.target, r.version, r.headers)


@settings(max_examples=2000, deadline=None)
@given(methods, targets, versions, fields,
       st.sampled_from([Limits(), Limits(request_line=12, header_count=2, header_size=10)]))
def test_what_the_fast_path_accepts_the_checks_accept_alike(method, target, version,
                                                            field_list, limits):
    head = head_of(method, target, version, field_list)
    parser = RequestParser(limits)
    plain = parser._plain_head(head.encode("latin-1"))
    if plain is not None:
        assert (plain.method, plain.target, plain.version, plain.headers) == \
            checked(parser, head), head


@pytest.mark.parametrize("head", [
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n",
    "GET /a?b=c HTTP/1.0\r\n",
    "PURGE /x HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Pad: \t a  b \t\r\nCookie: a=b; c=d\r\n",
    "POST /é HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX: \xe9\xff\r\n",
])
def test_usual_heads_take_the_fast_path(head):
    parser = RequestParser()
    plain = parser._plain_head(head.encode("latin-1"))
    assert plain is not None
    assert (plain.method, plain.target, plain.version, plain.headers) == checked(parser, head)


@pytest.mark.parametrize("head", [
    "CONNECT / HTTP/1.1\r\n",                  # CONNECT needs an authority: the checks say so
    "GET http://h/ HTTP/1.1\r\nHost: h\r\n",   # absolute-form: checked
    "GET / HTTP/1.1\r\n Host: h\r\n",          # obs-fold
    "GET / HTTP/1.1\r\nHost : h\r\n",          # space before the colon
    "GET / HTTP/1.1\r\nA: b\rc\r\n",           # bare CR
    "GET / HTTP/2.0\r\n",
])
def test_unusual_heads_are_left_to_the_checks(head):
    assert RequestParser()._plain_head(head.encode("latin-1")) is None


def test_limits_hand_the_head_to_the_checks_which_answer_the_status():
    parser = RequestParser(Limits(request_line=16, header_count=1, header_size=8))
    for head, status in [("GET /abcdefghijk HTTP/1.1\r\n", 414),
                         ("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n", 431),
                         ("GET / HTTP/1.1\r\nA: 123456789\r\n", 431)]:
        assert parser._plain_head(head.encode("latin-1")) is None
        assert checked(parser, head) == status
