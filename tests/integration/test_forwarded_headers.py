"""Trusted forwarded headers on WSGI (sync, thread) and ASGI (asyncio, uvloop): from a
trusted peer X-Forwarded-For / X-Forwarded-Proto, or RFC 7239 Forwarded when so told,
set the client (REMOTE_ADDR, ASGI client, the access log) and the scheme; the other
kind of header and untrusted peers change nothing; in a chain the client is the
nearest untrusted hop, never the spoofable first entry."""

from __future__ import annotations

import contextlib
import json
from typing import Callable, Dict, Iterator

import pytest
import websockets.sync.client

from edge_helpers import ASGI_KINDS, HTTP_KINDS, EdgeServed, connect, ask, edge_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MODES = {
    "x-forwarded": ("--forwarded-allow-ips", "127.0.0.1"),
    "forwarded": ("--forwarded-headers", "forwarded"),
    "untrusted": ("--forwarded-allow-ips", "10.0.0.0/8"),      # 127.0.0.1 is not in it
}
XFF, XFP, FWD = "X-Forwarded-For", "X-Forwarded-Proto", "Forwarded"
PEER = None          # the client stays the connection's peer
# name: (the server's mode, the request's headers, the client [host, port] the app
# must see, or PEER, and the scheme).  A header without a port gives port 0.
CASES = {
    "xff-and-proto": ("x-forwarded", [(XFF, "203.0.113.5"), (XFP, "https")],
                      ["203.0.113.5", 0], "https"),
    "xff-ipv6": ("x-forwarded", [(XFF, "2001:db8::5")], ["2001:db8::5", 0], "http"),
    "xff-chain-not-the-first": ("x-forwarded", [(XFF, "6.6.6.6, 203.0.113.6")],
                                ["203.0.113.6", 0], "http"),
    "xff-chain-skips-trusted-hops": ("x-forwarded", [(XFF, "6.6.6.6, 203.0.113.7, 127.0.0.1")],
                                     ["203.0.113.7", 0], "http"),
    "xff-chain-over-two-lines": ("x-forwarded", [(XFF, "6.6.6.6"), (XFF, "203.0.113.8")],
                                 ["203.0.113.8", 0], "http"),
    "xff-unknown-hop-keeps-the-peer": ("x-forwarded", [(XFF, "6.6.6.6, unknown")], PEER,
                                       "http"),
    "proto-only": ("x-forwarded", [(XFP, "https")], PEER, "https"),
    "proto-nonsense-ignored": ("x-forwarded", [(XFP, "gopher")], PEER, "http"),
    "forwarded-ignored-in-x-mode": ("x-forwarded", [(FWD, "for=198.51.100.7;proto=https")],
                                    PEER, "http"),
    "forwarded": ("forwarded", [(FWD, "for=198.51.100.8;proto=https")],
                  ["198.51.100.8", 0], "https"),
    "forwarded-chain-with-port": ("forwarded",
                                  [(FWD, 'for=6.6.6.6, for="[2001:db8::9]:4711";proto=https')],
                                  ["2001:db8::9", 4711], "https"),
    "x-ignored-in-forwarded-mode": ("forwarded", [(XFF, "203.0.113.9"), (XFP, "https")], PEER,
                                    "http"),
    "untrusted-x-forwarded": ("untrusted", [(XFF, "203.0.113.10"), (XFP, "https")], PEER,
                              "http"),
    "untrusted-forwarded": ("untrusted", [(FWD, "for=198.51.100.10;proto=https")], PEER,
                            "http"),
}


@pytest.fixture(scope="module", params=HTTP_KINDS, ids=str)
def servers(request, tmp_path_factory) -> Iterator[Callable[[str], EdgeServed]]:
    """The kind's server in a mode, started the first time a test asks for it."""
    started: Dict[str, EdgeServed] = {}
    with contextlib.ExitStack() as stack:
        def server(mode: str) -> EdgeServed:
            if mode not in started:
                workdir = tmp_path_factory.mktemp(f"forwarded-{mode}")
                started[mode] = stack.enter_context(edge_server(
                    workdir, request.param, "-b", "127.0.0.1:0", "--access-log", "-",
                    *MODES[mode]))
            return started[mode]
        yield server


@pytest.mark.parametrize("case", CASES)
def test_forwarded_headers(servers, case):
    mode, headers, client, scheme = CASES[case]
    served = servers(mode)
    with connect(served.plain) as sock:
        answer = ask(served.kind, sock, case, headers)
        peer = ["127.0.0.1", sock.getsockname()[1]]
    assert answer["client"] == (client or peer)
    assert answer["scheme"] == scheme
    line = served.log_line(f"id={case} ")
    assert line.startswith(f"{(client or peer)[0]} - - ["), line


@pytest.mark.parametrize("kind", ASGI_KINDS, ids=str)
def test_websocket_behind_a_trusted_proxy(tmp_path, kind):
    with edge_server(tmp_path, kind, "-b", "127.0.0.1:0") as served:
        url = f"ws://127.0.0.1:{served.plain[1]}/socket?id=ws-forwarded"
        headers = [(XFF, "6.6.6.6, 203.0.113.11"), (XFP, "https")]
        with websockets.sync.client.connect(url, additional_headers=headers,
                                            open_timeout=5) as ws:
            answer = json.loads(ws.recv(timeout=5))
        assert answer["scheme"] == "wss" and answer["client"] == ["203.0.113.11", 0]
