"""The master's listeners across reloads and upgrades.

A reload binds only the addresses it does not hold yet and closes the ones
no live generation uses any more; an upgraded master takes its old
master's sockets instead of binding them again.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Iterable, List, Optional, Sequence

from ..accounts import gid_of, uid_of
from ..config import Config
from ..errors import BindError
from ..servers.edge.server import tls_listeners
from ..servers.edge.tls import server_context
from ..sockets import DGRAM, BindOptions, BindSpec, Listener, bind, resolve

logger = logging.getLogger("prefork")


def tls_context(config: Config, bound: Sequence[Listener]) -> Optional[ssl.SSLContext]:
    """A generation's TLS context, its files read now (a HUP reads them again, so a
    renewed certificate takes effect); None when no listener speaks TLS.  A file
    that cannot be loaded is a ConfigError naming its key."""
    speaks = tls_listeners(bound, config.certfile)
    if not any(speaks):
        return None
    context = server_context(config, alpn=())      # each worker offers what it speaks
    logger.info("TLS on %s with the certificate in %s",
                ", ".join(l.name for l, tls in zip(bound, speaks) if tls), config.certfile)
    return context


class ListenerSet:
    """The master's listeners, keyed by spec, so a reload can keep, add or drop some.

    A reload binds only the specs it does not hold yet; a listener no longer
    used by any live generation is closed by :meth:`keep_only`.
    """

    def __init__(self, options: BindOptions) -> None:
        self.options = options
        # Unix socket files are removed when their listener closes, by the
        # master that owns them: not by one that handed them to a new master
        # (USR2), nor by a new master that never took over.
        self.owns_files = True
        self._by_spec: dict = {}
        self._spares: List[Listener] = []
        self.fresh: List[Listener] = []

    def inherit(self, listeners: Sequence[Listener]) -> None:
        """Sockets an old master handed over: :meth:`acquire` takes them instead of
        binding the same address again (which would fail while the old one lives)."""
        self._spares = list(listeners)

    def close_spares(self) -> None:
        """Inherited sockets the config no longer binds."""
        for listener in self._spares:
            listener.close()
        self._spares = []

    def acquire(self, specs: Sequence[BindSpec]) -> List[Listener]:
        """Return listeners for ``specs``, binding the missing ones.

        All or nothing: if one bind fails, the ones this call bound are closed.
        Newly bound listeners are in :attr:`fresh` until the next call.
        """
        fresh: List[Listener] = []
        try:
            for spec in specs:
                if spec not in self._by_spec:
                    listener = self._take_spare(spec) or self._bind(spec)
                    fresh.append(listener)
                    self._by_spec[spec] = listener
        except BindError:
            for listener in fresh:
                del self._by_spec[listener.spec]
                listener.close(unlink=self.owns_files)
            raise
        self.fresh = fresh
        return [self._by_spec[s] for s in specs]

    def _bind(self, spec: BindSpec) -> Listener:
        if self.options.reuse_port and spec.inet and spec.type == DGRAM:
            # Every bound UDP socket of a reuse_port group gets its share of the
            # datagrams, and the master reads none: check the address, keep nothing.
            if not spec.port:
                raise BindError(f"cannot bind {spec.text}: with reuse_port a UDP address "
                                "needs a port (each worker binds its own socket to it)")
            bind(spec, self.options).close()
            return Listener(spec, socket.socket(spec.family, DGRAM))
        # With reuse_port each worker listens on a socket of its own; the
        # master's only holds the address (a listening one would take a share).
        return bind(spec, self.options, listen=not (self.options.reuse_port and spec.inet))

    def _take_spare(self, spec: BindSpec) -> Optional[Listener]:
        # The same text first: ":0" (any free port) means the port already got.
        found = [l for l in self._spares if l.spec.text == spec.text]
        if not found and self._spares and spec.inet:
            family, _, _, sockaddr = resolve(spec)
            found = [l for l in self._spares
                     if l.sock.family == family and l.address[:2] == sockaddr[:2]]
        if not found:
            return None
        self._spares.remove(found[0])
        return Listener(spec, found[0].sock)

    def adopt(self, listeners: Sequence[Listener]) -> None:
        """Take over sockets made elsewhere (socket activation)."""
        for listener in listeners:
            self._by_spec[listener.spec] = listener
        self.fresh = list(listeners)

    def all(self) -> List[Listener]:
        return list(self._by_spec.values())

    def keep_only(self, specs: Iterable[BindSpec]) -> None:
        keep = set(specs)
        for spec in list(self._by_spec):
            if spec not in keep:
                self._by_spec.pop(spec).close(unlink=self.owns_files)

    def close_all(self) -> None:
        self.keep_only(())


def bind_options(config: Config) -> BindOptions:
    """The bind settings of ``config`` (user and group names resolved)."""
    owner = None
    if config.unix_socket_owner:
        user, _, group = config.unix_socket_owner.partition(":")
        owner = (uid_of(user) if user else -1, gid_of(group) if group else -1)
    mode = int(config.unix_socket_mode, 8) if config.unix_socket_mode else None
    return BindOptions(config.backlog, config.reuse_port, mode, owner)
