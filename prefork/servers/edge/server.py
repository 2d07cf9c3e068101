"""The edge in front of a listener's server: which listeners get TLS or PROXY, and the wrapper.

:func:`tls_listeners` says which listeners speak TLS: ``tls://`` addresses,
or, when ``certfile`` is set and no address says ``tls://``, every TCP one
(as gunicorn's ``--certfile`` does).  :class:`EdgeServer` stands in for
the listener's server (handler classes, WSGI or ASGI: any
:class:`~..contracts.StreamServer`) in the worker's loop: an accepted
connection that needs a PROXY header read or a TLS handshake first becomes
an :class:`~.arrival.Arrival`, and reaches the inner server's ``accepted``
once it is through.  The servers themselves never see a PROXY header or a
handshake.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, List, Optional, Sequence

from ... import netlist
from ...netlist import Networks
from .arrival import Arrival

INET = (socket.AF_INET, socket.AF_INET6)


def tls_listeners(listeners: Sequence[Any], certfile: str) -> List[bool]:
    """For each listener (a :class:`prefork.sockets.Listener`): does it speak TLS?"""
    explicit = any(listener.spec.tls for listener in listeners)
    return [listener.spec.tls or (bool(certfile) and not explicit and not listener.datagram
                                  and listener.sock.family in INET)
            for listener in listeners]


class EdgeServer:
    """A listener's server behind its edge; see the module docstring.

    ``proxy``: "off", "v1", "v2" or "auto", believed from ``proxy_allow``
    peers only; ``tls``: the context, or None; ``handshake_inside``: the
    inner server makes its own TLS transport (asyncio), so the edge only
    checks that the client speaks TLS; ``http``: plain text sent to a TLS
    address gets a 400; ``timeout``: seconds for all of it (header_timeout).
    """

    def __init__(self, inner: Any, proxy: str, proxy_allow: Networks,
                 tls: Optional[ssl.SSLContext], handshake_inside: bool, http: bool,
                 timeout: float) -> None:
        self.inner = inner
        self.socket = inner.socket
        # A handshake is a millisecond of CPU: taken one at a time, new TLS
        # connections spread over the idle workers instead of queueing on one.
        self.accept_batch = 1 if tls is not None else getattr(inner, "accept_batch", 0)
        self.proxy = proxy
        self.proxy_allow = proxy_allow
        self.tls = tls
        self.handshake_inside = handshake_inside
        self.http = http
        self.timeout = timeout

    def accepted(self, conn: socket.socket, address: Any, loop: Any) -> Any:
        proxied = self.proxy != "off" and self.proxy_allow.allows(
            address[0] if isinstance(address, tuple) else None)
        if not proxied and self.tls is None:
            return self.inner.accepted(conn, address, loop)
        Arrival(self, conn, address, loop, proxied).start()
        return None

    def close_idle(self, min_wait: float) -> None:
        self.inner.close_idle(min_wait)

    def server_close(self) -> None:
        self.inner.server_close()

    def __getattr__(self, name: str) -> Any:
        # What else the loop or a test reads of a server (datagram, stopping...).
        return getattr(self.inner, name)


def wrap_servers(servers: Sequence[Any], listeners: Sequence[Any], tls: Sequence[bool],
                 config: Any, context: Optional[ssl.SSLContext], *, http: bool,
                 handshake_inside: bool) -> List[Any]:
    """Each stream listener's server behind an :class:`EdgeServer` where it needs one
    (TLS, or ``proxy_protocol`` on); the others as they are."""
    allow = netlist.parse(config.proxy_allow_from)
    wrapped: List[Any] = []
    for server, listener, speaks_tls in zip(servers, listeners, tls):
        if listener.datagram or (not speaks_tls and config.proxy_protocol == "off"):
            wrapped.append(server)
            continue
        wrapped.append(EdgeServer(server, config.proxy_protocol, allow,
                                  context if speaks_tls else None, handshake_inside, http,
                                  config.header_timeout))
    return wrapped
