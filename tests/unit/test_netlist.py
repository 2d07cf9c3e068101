"""netlist: the allow-lists of proxy_allow_from and forwarded_allow_ips."""

from __future__ import annotations

import pytest

from prefork import netlist


def test_addresses_and_networks() -> None:
    nets = netlist.parse("127.0.0.1, ::1,10.0.0.0/8 , fd00::/8")
    assert nets.allows("127.0.0.1") and nets.allows("::1")
    assert nets.allows("10.200.3.4") and nets.allows("fd00::7")
    assert not nets.allows("11.0.0.1") and not nets.allows("fe80::1")


def test_ipv4_mapped_peers_and_ranges_are_judged_as_ipv4() -> None:
    assert netlist.parse("127.0.0.1").allows("::ffff:127.0.0.1")
    assert netlist.parse("::ffff:10.0.0.0/104").allows("10.0.0.1")
    assert netlist.parse("::ffff:10.0.0.0/104").allows("::ffff:10.9.9.9")


def test_star_and_empty() -> None:
    assert netlist.parse("*").allows("203.0.113.1") and netlist.parse("*").allows(None)
    empty = netlist.parse("")
    assert not empty and not empty.allows("127.0.0.1") and not empty.allows(None)


def test_unix_socket_peers_are_trusted_by_any_non_empty_list() -> None:
    assert netlist.parse("10.0.0.1").allows(None)
    assert netlist.parse("10.0.0.1").allows("")


@pytest.mark.parametrize("bad", ["nope", "10.0.0.0/33", "1.2.3", "example.org", "::1/129"])
def test_a_bad_entry_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[").replace(".", r"\.")):
        netlist.parse(f"127.0.0.1,{bad}")
    assert bad in netlist.check(bad)
    assert netlist.check("127.0.0.1, 10.0.0.0/8") == ""
