"""Trusted forwarded headers: who is trusted, the chain rule, both header kinds,
and that nothing a client sends raises."""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork.netlist import parse as networks
from prefork.servers.edge.forwarded import Forwarded, resolve

PROXY = "10.0.0.1"
TRUSTED = networks("10.0.0.0/8, fd00::/8")
Headers = List[Tuple[str, str]]


def xff(*values: str, proto: Optional[str] = None) -> Headers:
    headers = [("X-Forwarded-For", value) for value in values]
    return headers + ([("X-Forwarded-Proto", proto)] if proto is not None else [])


def fwd(*values: str) -> Headers:
    return [("Forwarded", value) for value in values]


def host(headers: Sequence[Tuple[str, str]], peer: Optional[str] = PROXY,
         trusted: str = "10.0.0.0/8, fd00::/8") -> Optional[str]:
    result = resolve(peer, headers, networks(trusted))
    return None if result is None else result.host


# -- who is trusted --------------------------------------------------------------

def test_untrusted_peer_changes_nothing() -> None:
    assert resolve("203.0.113.9", xff("1.2.3.4", proto="https"), TRUSTED) is None
    assert resolve("203.0.113.9", fwd("for=1.2.3.4;proto=https"), TRUSTED) is None


def test_empty_list_trusts_no_one() -> None:
    assert resolve(PROXY, xff("1.2.3.4"), networks("")) is None
    assert resolve(None, xff("1.2.3.4"), networks("")) is None


def test_no_forwarding_header_changes_nothing() -> None:
    assert resolve(PROXY, [], TRUSTED) is None
    assert resolve(PROXY, [("Host", "x"), ("X-Real-IP", "1.2.3.4")], TRUSTED) is None


def test_unix_socket_peer_is_trusted_by_a_non_empty_list() -> None:
    assert resolve(None, xff("1.2.3.4"), TRUSTED) == Forwarded("1.2.3.4", None, None)
    assert resolve("", xff("1.2.3.4"), TRUSTED) == Forwarded("1.2.3.4", None, None)
    assert resolve("/run/app.sock", xff("1.2.3.4"), TRUSTED) == Forwarded("1.2.3.4", None, None)


def test_ipv4_mapped_peer_is_judged_as_ipv4() -> None:
    assert host(xff("1.2.3.4"), peer="::ffff:10.0.0.1") == "1.2.3.4"


def test_exact_address_trust() -> None:
    assert host(xff("1.2.3.4"), trusted="10.0.0.1") == "1.2.3.4"
    assert host(xff("1.2.3.4"), peer="10.0.0.2", trusted="10.0.0.1") is None


def test_ipv6_peer_and_cidr() -> None:
    assert host(xff("2001:db8::1"), peer="fd00::5") == "2001:db8::1"
    assert host(xff("2001:db8::1"), peer="fe80::5") is None


# -- the chain rule ----------------------------------------------------------------

def test_spoofed_entry_loses_to_the_address_the_proxy_appended() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended what it saw.
    assert host(xff("1.2.3.4, 198.51.100.7")) == "198.51.100.7"
    assert host(xff("1.2.3.4", "198.51.100.7")) == "198.51.100.7"
    assert host(fwd("for=1.2.3.4, for=198.51.100.7")) == "198.51.100.7"
    assert host(fwd("for=1.2.3.4", "for=198.51.100.7")) == "198.51.100.7"


def test_trusted_hops_are_skipped() -> None:
    assert host(xff("198.51.100.7, 10.1.1.1, 10.2.2.2")) == "198.51.100.7"
    assert host(xff("1.2.3.4, 198.51.100.7, 10.1.1.1")) == "198.51.100.7"
    assert host(fwd('for=1.2.3.4, for=198.51.100.7, for="[fd00::1]"')) == "198.51.100.7"


def test_all_trusted_gives_the_leftmost() -> None:
    assert host(xff("10.9.9.9, 10.1.1.1")) == "10.9.9.9"
    assert host(xff("1.2.3.4, 5.6.7.8"), trusted="*") == "1.2.3.4"
    assert host(fwd("for=1.2.3.4, for=5.6.7.8"), trusted="*") == "1.2.3.4"


def test_star_trusts_any_peer() -> None:
    assert host(xff("1.2.3.4"), peer="203.0.113.9", trusted="*") == "1.2.3.4"
    assert host(xff("1.2.3.4"), peer=None, trusted="*") == "1.2.3.4"


@pytest.mark.parametrize("headers", [
    xff("1.2.3.4, unknown"),
    xff("1.2.3.4, garbage, 10.1.1.1"),
    xff("1.2.3.4", "_hidden"),
    fwd("for=1.2.3.4, for=unknown"),
    fwd("for=1.2.3.4, for=_hidden"),
    fwd("for=1.2.3.4, for=_hidden:_port"),
    fwd('for=1.2.3.4, for="unknown:80"'),
    fwd("for=1.2.3.4, by=10.0.0.1"),                 # an element without for=
    fwd("for=1.2.3.4, for=5.6.7.8;for=9.9.9.9"),     # a parameter given twice
    fwd('for=1.2.3.4, for="5.6.7.8'),                # an unterminated quote
    fwd("for=1.2.3.4, for=5.6.7.8:99999"),           # a port out of range
    fwd("for=1.2.3.4, for=5.6.7.8 x"),
])
def test_a_hop_without_an_address_stops_the_walk(headers: Headers) -> None:
    # 1.2.3.4 is further left than the opaque hop: the client may have written it.
    assert resolve(PROXY, headers, TRUSTED) is None
    assert host(headers, trusted="*") is None


def test_opaque_hop_left_of_the_client_does_not_matter() -> None:
    assert host(xff("unknown, 198.51.100.7")) == "198.51.100.7"
    assert host(fwd("for=_secret, for=198.51.100.7")) == "198.51.100.7"


def test_opaque_hop_keeps_the_scheme() -> None:
    assert resolve(PROXY, fwd("for=unknown;proto=https"), TRUSTED) == Forwarded(None, None, "https")
    assert resolve(PROXY, xff("unknown", proto="https"), TRUSTED) == Forwarded(None, None, "https")


def test_an_unterminated_quote_cannot_swallow_what_the_proxy_appended() -> None:
    # The client sent 'Forwarded: for="1.2.3.4' and the proxy appended its own
    # element on the same line: the address is not believed, but none invented.
    assert host(fwd('for="1.2.3.4, for=198.51.100.7')) is None


# -- X-Forwarded-For ---------------------------------------------------------------

def test_xff_lines_are_joined_in_order() -> None:
    assert host(xff("1.2.3.4", "198.51.100.7, 10.1.1.1", "10.2.2.2")) == "198.51.100.7"


def test_xff_empty_items_are_dropped() -> None:
    assert host(xff(" , 198.51.100.7 ,, ")) == "198.51.100.7"
    assert host(xff("1.2.3.4,", "")) == "1.2.3.4"
    assert resolve(PROXY, xff(""), TRUSTED) is None


@pytest.mark.parametrize("entry, expected", [
    ("198.51.100.7", Forwarded("198.51.100.7", None, None)),
    ("198.51.100.7:4711", Forwarded("198.51.100.7", 4711, None)),
    ("2001:db8::1", Forwarded("2001:db8::1", None, None)),
    ("2001:DB8:0::1", Forwarded("2001:db8::1", None, None)),
    ("[2001:db8::1]", Forwarded("2001:db8::1", None, None)),
    ("[2001:db8::1]:4711", Forwarded("2001:db8::1", 4711, None)),
    ("::ffff:198.51.100.7", Forwarded("198.51.100.7", None, None)),
    ("198.51.100.7:0", Forwarded("198.51.100.7", 0, None)),
    ("198.51.100.7:_obf", Forwarded("198.51.100.7", None, None)),
])
def test_xff_entry_forms(entry: str, expected: Forwarded) -> None:
    assert resolve(PROXY, xff(entry), TRUSTED) == expected


@pytest.mark.parametrize("entry", [
    "unknown", "_obf", "1.2.3", "256.1.1.1", "01.2.3.4", "1.2.3.4:65536", "1.2.3.4:-1",
    "1.2.3.4:", "[1.2.3.4]", "[::1", "::1]", "[::1]:", "fe80::1%eth0", "1.2.3.4%0",
    "example.com", "1.2.3.4 5.6.7.8", "[::1]:80:80", "1.2.3.4:80:80", '"1.2.3.4"', ":::",
])
def test_xff_malformed_entries_are_not_believed(entry: str) -> None:
    assert resolve(PROXY, xff(entry), TRUSTED) is None


def test_xff_proto_takes_the_rightmost() -> None:
    result = resolve(PROXY, xff("198.51.100.7", proto="http, https"), TRUSTED)
    assert result == Forwarded("198.51.100.7", None, "https")
    result = resolve(PROXY, [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http ")],
                     TRUSTED)
    assert result == Forwarded(None, None, "http")


@pytest.mark.parametrize("proto, expected", [
    ("HTTPS", "https"), ("Http", "http"), ("ftp", None), ("https, ws", None), ("", None),
    ("https ,", "https"), ("h t t p s", None),
])
def test_xff_proto_values(proto: str, expected: Optional[str]) -> None:
    result = resolve(PROXY, xff("198.51.100.7", proto=proto), TRUSTED)
    assert result == Forwarded("198.51.100.7", None, expected)


def test_proto_alone() -> None:
    assert resolve(PROXY, xff(proto="https"), TRUSTED) == Forwarded(None, None, "https")
    assert resolve(PROXY, xff(proto="gopher"), TRUSTED) is None


# -- Forwarded ---------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("for=198.51.100.7", Forwarded("198.51.100.7", None, None)),
    ('for="198.51.100.7:4711"', Forwarded("198.51.100.7", 4711, None)),
    ('for="[2001:db8:cafe::17]:4711"', Forwarded("2001:db8:cafe::17", 4711, None)),
    ('for="[2001:db8:cafe::17]"', Forwarded("2001:db8:cafe::17", None, None)),
    ("for=[2001:db8::17]:80", Forwarded("2001:db8::17", 80, None)),    # unquoted, leniently
    ('for="[::1]:_port"', Forwarded("::1", None, None)),
    ('for="[::ffff:198.51.100.7]"', Forwarded("198.51.100.7", None, None)),
    ("for=198.51.100.7;proto=https", Forwarded("198.51.100.7", None, "https")),
    ("proto=HTTPS;for=198.51.100.7;by=10.0.0.1", Forwarded("198.51.100.7", None, "https")),
    ("FOR=198.51.100.7;Proto=http", Forwarded("198.51.100.7", None, "http")),
    ('for="\\1\\9\\8.51.100.7"', Forwarded("198.51.100.7", None, None)),   # quoted-pairs
    ("for=198.51.100.7;;proto=https;", Forwarded("198.51.100.7", None, "https")),
    (" for=198.51.100.7 ; proto=https ", Forwarded("198.51.100.7", None, "https")),
    ('for=198.51.100.7;host="a,b;c"', Forwarded("198.51.100.7", None, None)),
    ("for=198.51.100.7;ext=x, ,", Forwarded("198.51.100.7", None, None)),
])
def test_forwarded_forms(value: str, expected: Forwarded) -> None:
    assert resolve(PROXY, fwd(value), TRUSTED) == expected


@pytest.mark.parametrize("value", [
    "for=", "for", "=1.2.3.4", 'for="1.2.3.4', 'for=1.2.3.4"', "for=1.2.3.4=5",
    'for="1.2.3.4" x', "for=1.2.3.4;for=1.2.3.4", "for=<1.2.3.4>", 'for="[1.2.3.4]"',
    'for="[::1]:65536"', "for=unknown", "UNKNOWN", ";", "proto=https;proto=http",
    'for=\"\\"', "fór=1.2.3.4",
])
def test_forwarded_malformed_values_are_not_believed(value: str) -> None:
    assert resolve(PROXY, fwd(value), TRUSTED) is None


def test_forwarded_proto_is_the_nearest_elements() -> None:
    value = "for=198.51.100.7;proto=https, for=10.1.1.1;proto=http"
    assert resolve(PROXY, fwd(value), TRUSTED) == Forwarded("198.51.100.7", None, "http")
    value = "for=198.51.100.7;proto=https, for=10.1.1.1"
    assert resolve(PROXY, fwd(value), TRUSTED) == Forwarded("198.51.100.7", None, None)
    value = "for=198.51.100.7, for=10.1.1.1;proto=ftp"
    assert resolve(PROXY, fwd(value), TRUSTED) == Forwarded("198.51.100.7", None, None)


def test_forwarded_proto_of_an_empty_trailing_item_is_not_lost() -> None:
    value = "for=198.51.100.7;proto=https, "
    assert resolve(PROXY, fwd(value), TRUSTED) == Forwarded("198.51.100.7", None, "https")


def test_forwarded_takes_precedence_over_x_forwarded() -> None:
    headers = xff("203.0.113.1", proto="http") + fwd("for=198.51.100.7;proto=https")
    assert resolve(PROXY, headers, TRUSTED) == Forwarded("198.51.100.7", None, "https")
    # ... even when it yields nothing: the kinds are never mixed.
    headers = xff("203.0.113.1", proto="https") + fwd("for=unknown")
    assert resolve(PROXY, headers, TRUSTED) is None
    headers = xff("203.0.113.1", proto="https") + fwd("")
    assert resolve(PROXY, headers, TRUSTED) is None


@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title, str.swapcase])
def test_names_are_case_insensitive(spelling: Callable[[str], str]) -> None:
    assert host([(spelling("Forwarded"), "for=198.51.100.7")]) == "198.51.100.7"
    assert host([(spelling("X-Forwarded-For"), "198.51.100.7")]) == "198.51.100.7"
    result = resolve(PROXY, [(spelling("X-Forwarded-Proto"), "HTTPS")], TRUSTED)
    assert result == Forwarded(None, None, "https")


def test_long_hostile_values_are_cheap() -> None:
    started = time.monotonic()
    for value in (":" * 20000 + "x", "1" * 20000 + ":x", '"' + "\\" * 20000, "for=" + ":" * 20000,
                  "[" + ":" * 20000, ";" * 20000 + "for=x", "," * 20000, "for=" + "1." * 10000):
        assert resolve(PROXY, xff(value) + xff(proto=value), TRUSTED) is None
        assert resolve(PROXY, fwd(value), TRUSTED) is None
    assert time.monotonic() - started < 2.0


# -- nothing raises ------------------------------------------------------------------

header_names = st.sampled_from(["Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "Host"])
header_text = st.lists(st.sampled_from(list('for=proto;,"\\[]:._-19aAfx :%')
                                       + ["1.2.3.4", "::1", "https", "unknown"]),
                       max_size=20).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(header_names, st.one_of(header_text, st.text(max_size=30))),
                max_size=5),
       st.sampled_from(["10.0.0.1", None, "203.0.113.9", "fd00::1"]),
       st.sampled_from(["10.0.0.0/8, fd00::/8", "*", ""]))
def test_no_input_raises(headers: Headers, peer: Optional[str], trusted: str) -> None:
    result = resolve(peer, headers, networks(trusted))
    if result is not None:
        assert result.host is not None or result.scheme is not None
        assert result.scheme in (None, "http", "https")
        assert result.port is None or (result.host is not None and 0 <= result.port <= 65535)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.ip_addresses().map(str), max_size=4), st.ip_addresses(v=4).map(str))
def test_the_address_the_trusted_proxy_appended_always_wins(spoofed: List[str],
                                                             client: str) -> None:
    # Whatever the client wrote to the left, an untrusted real address wins.
    if TRUSTED.allows(client):
        return
    assert host(xff(*spoofed, client)) == client
    forwarded = ", ".join([f'for="[{a}]"' if ":" in a else f"for={a}" for a in spoofed])
    assert host(fwd(*([forwarded] if forwarded else []), f"for={client}")) == client


def test_a_named_kind_ignores_the_other() -> None:
    # Behind nginx (X-Forwarded-For appended), a client's own Forwarded passes through.
    headers = [("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "1.2.3.4")]
    assert resolve(PROXY, headers, TRUSTED, "x-forwarded") == Forwarded("1.2.3.4", None, None)
    assert resolve(PROXY, headers, TRUSTED, "forwarded") == Forwarded("6.6.6.6", None, None)
    assert resolve(PROXY, [("Forwarded", "for=6.6.6.6")], TRUSTED, "x-forwarded") is None
