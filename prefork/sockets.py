"""Bind specs -> listening sockets, made by the master before any fork.

A :class:`BindSpec` is the parsed form of one ``-b`` address; :func:`bind`
turns it into a :class:`Listener`: a non-blocking listening socket with
``SO_REUSEADDR`` set, which every worker inherits across ``fork``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from .errors import BindError, ConfigError


@dataclass(frozen=True)
class BindSpec:
    """One address to listen on, as the operator wrote it and as parsed."""

    text: str
    family: int
    host: str
    port: int


@dataclass
class Listener:
    """A bound, listening socket and the spec it came from."""

    spec: BindSpec
    sock: socket.socket

    @property
    def address(self) -> tuple:
        return self.sock.getsockname()

    @property
    def name(self) -> str:
        if not isinstance(self.address, tuple):
            return f"unix:{self.address}"
        host, port = self.address[:2]
        return f"[{host}]:{port}" if self.spec.family == socket.AF_INET6 else f"{host}:{port}"

    def close(self) -> None:
        self.sock.close()


def parse(text: str) -> BindSpec:
    """Parse ``HOST:PORT``, ``:PORT`` or ``[IPV6]:PORT``."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(f"bind address {text!r}: expected HOST:PORT, :PORT or [IPV6]:PORT")
    family = socket.AF_INET
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigError(f"bind address {text!r}: unbalanced '[' in IPv6 address")
        host, family = host[1:-1], socket.AF_INET6
    elif ":" in host:
        raise ConfigError(f"bind address {text!r}: write IPv6 addresses as [ADDR]:PORT")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(f"bind address {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"bind address {text!r}: port {port} is out of range")
    if not host:
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    return BindSpec(text, family, host, port)


def parse_all(texts: Iterable[str]) -> List[BindSpec]:
    """Parse every address; the same address given twice is bound once."""
    specs: List[BindSpec] = []
    for text in texts:
        spec = parse(text)
        if spec not in specs:
            specs.append(spec)
    return specs


def _resolve(spec: BindSpec) -> tuple:
    """(family, type, proto, sockaddr) for ``spec``; BindError if the name does not resolve."""
    try:
        infos = socket.getaddrinfo(spec.host, spec.port, spec.family, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot bind {spec.text}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    return family, kind, proto, sockaddr


def bind(spec: BindSpec, backlog: int) -> Listener:
    """Create, bind and listen; raise BindError naming the address on failure."""
    family, kind, proto, sockaddr = _resolve(spec)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Lets [::]:P and 0.0.0.0:P be bound side by side, as operators expect.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
        set_nodelay(sock)
    except OSError as exc:
        sock.close()
        reason = {errno.EADDRINUSE: "address already in use",
                  errno.EACCES: "permission denied",
                  errno.EADDRNOTAVAIL: "address not available on this host"}.get(
                      exc.errno, exc.strerror)
        raise BindError(f"cannot bind {spec.text}: {reason}") from None
    return Listener(spec, sock)


def same_address(sock: socket.socket, wanted: str) -> bool:
    """Whether ``sock`` is bound where ``wanted`` (a path, or HOST:PORT) says."""
    if sock.family == socket.AF_UNIX:
        return sock.getsockname() == os.path.abspath(wanted)
    try:
        family, _, _, sockaddr = _resolve(parse(wanted))
    except (ConfigError, BindError):
        return False
    return family == sock.family and sock.getsockname()[:2] == sockaddr[:2]


# struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss,
# unacked.  For a listening socket Linux reports its accept queue length in
# tcpi_unacked (what `ss -l` shows as Recv-Q).
_TCP_INFO_UNACKED = 24


def accept_queue_length(sock: socket.socket) -> Optional[int]:
    """Connections waiting in ``sock``'s accept queue, where the OS tells."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCP_INFO_UNACKED + 4:
        return None
    return struct.unpack_from("=I", info, _TCP_INFO_UNACKED)[0]


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY: a response leaves when written, not after a delayed ACK (~40 ms).

    Set on a listener, Linux passes it on to every accepted connection, which
    saves a syscall per connection.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


SD_LISTEN_FDS_START = 3


def from_fd(fd: int, label: str) -> Listener:
    """A Listener for an open listening socket (socket activation, an upgrade)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    set_nodelay(sock)
    address = sock.getsockname()
    host, port = (address[0], address[1]) if isinstance(address, tuple) else (address, 0)
    return Listener(BindSpec(label, sock.family, str(host), port), sock)


def from_systemd() -> List[Listener]:
    """Listening sockets passed by systemd socket activation (LISTEN_FDS), if any.

    The variables are removed from the environment, so that no child (and
    no re-executed master) mistakes them for its own.
    """
    pid, count = os.environ.pop("LISTEN_PID", ""), os.environ.pop("LISTEN_FDS", "")
    names = os.environ.pop("LISTEN_FDNAMES", "")
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    labels = names.split(":") if names else []
    found = []
    for i in range(int(count)):
        fd = SD_LISTEN_FDS_START + i
        found.append(from_fd(fd, labels[i] if i < len(labels) else f"fd://{fd}"))
    return found


class ListenerSet:
    """The master's listeners, keyed by spec, so a reload can keep, add or drop some.

    A reload binds only the specs it does not hold yet; a listener no longer
    used by any live generation is closed by :meth:`keep_only`.
    """

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
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
                    listener = self._take_spare(spec) or bind(spec, self.backlog)
                    fresh.append(listener)
                    self._by_spec[spec] = listener
        except BindError:
            for listener in fresh:
                del self._by_spec[listener.spec]
                listener.close()
            raise
        self.fresh = fresh
        return [self._by_spec[s] for s in specs]

    def _take_spare(self, spec: BindSpec) -> Optional[Listener]:
        # The same text first: ":0" (any free port) means the port already got.
        found = [l for l in self._spares if l.spec.text == spec.text]
        if not found and self._spares:
            family, _, _, sockaddr = _resolve(spec)
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
                self._by_spec.pop(spec).close()

    def close_all(self) -> None:
        self.keep_only(())
