"""Bind specs -> listening sockets, made by the master before any fork.

A :class:`BindSpec` is the parsed form of one ``-b`` address, one of
socketserver's four kinds or an inherited fd:

=====================  ==================================
``HOST:PORT``          TCP (also ``tcp://``, ``[IPV6]:PORT``, ``:PORT``)
``tls://HOST:PORT``    TCP, served over TLS
``udp://HOST:PORT``    UDP
``unix:/path``         unix stream socket
``unix-dgram:/path``   unix datagram socket
``fd://N``             a socket already open on fd N
=====================  ==================================

:func:`bind` turns it into a :class:`Listener`: a non-blocking socket
(listening, for a stream) with ``SO_REUSEADDR`` set, which every worker
inherits across ``fork``.  A unix socket file nobody listens on is a
crash's leftover and is replaced; one a live process listens on is a
bind error.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Tuple

from .errors import BindError, ConfigError


STREAM, DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM


@dataclass(frozen=True)
class BindSpec:
    """One address to listen on, as the operator wrote it and as parsed."""

    text: str
    family: int
    host: str
    port: int
    type: int = STREAM
    path: str = ""       # unix sockets
    fd: int = -1         # fd://N
    tls: bool = False    # tls://: the worker speaks TLS on it

    @property
    def inet(self) -> bool:
        return self.family in (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True)
class BindOptions:
    """How the master binds: the settings that apply to every address."""

    backlog: int = 2048
    reuse_port: bool = False
    unix_mode: Optional[int] = None            # chmod of unix socket files
    unix_owner: Optional[Tuple[int, int]] = None   # chown (uid, gid), -1 = unchanged


@dataclass
class Listener:
    """A bound, listening socket and the spec it came from."""

    spec: BindSpec
    sock: socket.socket

    @property
    def address(self) -> tuple:
        return self.sock.getsockname()

    @property
    def datagram(self) -> bool:
        return self.sock.type == DGRAM

    @property
    def name(self) -> str:
        if self.sock.family == socket.AF_UNIX:
            return f"{'unix-dgram' if self.datagram else 'unix'}:{self.address}"
        host, port = self.address[:2]
        if not port:    # reuse_port UDP: the master holds no bound socket, its workers do
            host, port = self.spec.host, self.spec.port
        where = f"[{host}]:{port}" if self.sock.family == socket.AF_INET6 else f"{host}:{port}"
        if self.datagram:
            return f"udp://{where}"
        return f"tls://{where}" if self.spec.tls else where

    def close(self, unlink: bool = False) -> None:
        """Close; with ``unlink``, also remove a unix socket's file (the master, at the end)."""
        self.sock.close()
        if unlink and self.spec.path:
            try:
                os.unlink(self.spec.path)
            except FileNotFoundError:
                pass


def parse(text: str) -> BindSpec:
    """Parse one bind address; see the module docstring for the forms."""
    for prefix, kind in (("unix:", STREAM), ("unix-dgram:", DGRAM)):
        if text.startswith(prefix):
            if not text[len(prefix):]:
                raise ConfigError(f"bind address {text!r}: no path after {prefix!r}")
            return BindSpec(text, socket.AF_UNIX, "", 0, kind,
                            path=os.path.abspath(text[len(prefix):]))
    if text.startswith("fd://"):
        number = text[len("fd://"):]
        if not (number.isascii() and number.isdigit()):
            raise ConfigError(f"bind address {text!r}: expected fd://N, N a file descriptor")
        return BindSpec(text, 0, "", 0, 0, fd=int(number))
    kind, rest = STREAM, text
    if text.startswith("udp://"):
        kind, rest = DGRAM, text[len("udp://"):]
    elif text.startswith("tcp://"):
        rest = text[len("tcp://"):]
    elif text.startswith("tls://"):
        rest = text[len("tls://"):]
    family, host, port = _host_port(text, rest)
    return BindSpec(text, family, host, port, kind, tls=text.startswith("tls://"))


def _host_port(text: str, rest: str) -> Tuple[int, str, int]:
    host, sep, port_text = rest.rpartition(":")
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
    return family, host, port


def parse_all(texts: Iterable[str]) -> List[BindSpec]:
    """Parse every address; the same address given twice is bound once."""
    specs: List[BindSpec] = []
    for text in texts:
        spec = parse(text)
        if spec not in specs:
            specs.append(spec)
    return specs


def resolve(spec: BindSpec) -> tuple:
    """(family, type, proto, sockaddr) for ``spec``; BindError if the name does not resolve."""
    if spec.family == socket.AF_UNIX:
        return socket.AF_UNIX, spec.type, 0, spec.path
    try:
        infos = socket.getaddrinfo(spec.host, spec.port, spec.family, spec.type,
                                   0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot bind {spec.text}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    return family, kind, proto, sockaddr


_REASONS = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied",
            errno.EADDRNOTAVAIL: "address not available on this host"}


def bind(spec: BindSpec, options: BindOptions = BindOptions(), listen: bool = True) -> Listener:
    """Create, bind and (for a stream) listen; BindError naming the address on failure.

    ``listen=False`` only binds: with reuse_port the master holds the address
    but must not be one of the sockets the kernel hands connections to.
    """
    if spec.fd >= 0:    # the spec stays the one asked for: listeners are kept by spec
        return Listener(spec, from_fd(spec.fd, spec.text, options.backlog).sock)
    if spec.path:
        remove_stale_socket(spec.path, f"cannot bind {spec.text}: file")
    family, kind, proto, sockaddr = resolve(spec)
    sock = socket.socket(family, kind, proto)
    try:
        if spec.inet:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if options.reuse_port and spec.inet:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # Lets [::]:P and 0.0.0.0:P be bound side by side, as operators expect.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        if spec.path:
            _set_file_access(spec.path, options)
        if kind == STREAM and listen:
            sock.listen(options.backlog)
        sock.setblocking(False)
        set_nodelay(sock)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind {spec.text}: "
                        f"{_REASONS.get(exc.errno, exc.strerror)}") from None
    return Listener(spec, sock)


def _set_file_access(path: str, options: BindOptions) -> None:
    if options.unix_mode is not None:
        os.chmod(path, options.unix_mode)
    if options.unix_owner is not None:
        os.chown(path, *options.unix_owner)


def remove_stale_socket(path: str, what: str) -> None:
    """A socket file nobody listens on is left by a crash: remove it; a live one is an error."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"{what} {path} exists and is not a socket")
    if _in_use(path, what):
        raise BindError(f"{what} {path} is in use by a running process")
    os.unlink(path)


def _in_use(path: str, what: str) -> bool:
    for kind in (STREAM, DGRAM):    # a stream probe cannot reach a datagram socket
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                return False
            except OSError as exc:
                if exc.errno == errno.EPROTOTYPE:
                    continue
                raise BindError(f"{what} {path}: {exc.strerror}") from None
            return True
    return False


def same_address(sock: socket.socket, wanted: str) -> bool:
    """Whether ``sock`` is bound where ``wanted`` (a path, or HOST:PORT) says."""
    if sock.family == socket.AF_UNIX:
        return sock.getsockname() == os.path.abspath(wanted)
    try:
        family, _, _, sockaddr = resolve(parse(wanted))
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


def accepter(listener: socket.socket) -> Callable[[], Tuple[socket.socket, Any]]:
    """``listener.accept``, less its per-call overhead.

    ``socket.accept()`` turns the listener's family and type into enums and
    builds the new socket through them on every call: a few microseconds,
    which count when each request is a new connection.  They never change,
    so they are read once.  Same result: a socket with the default timeout.
    """
    raw_accept = getattr(listener, "_accept", None)
    if raw_accept is None:     # not CPython's socket class
        return listener.accept
    family, kind, proto = int(listener.family), int(listener.type), listener.proto
    make = socket.socket

    def accept() -> Tuple[socket.socket, Any]:
        fd, address = raw_accept()
        return make(family, kind, proto, fd), address

    return accept


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY: a response leaves when written, not after a delayed ACK (~40 ms).

    Set on a listener, Linux passes it on to every accepted connection, which
    saves a syscall per connection.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


SD_LISTEN_FDS_START = 3


def from_fd(fd: int, label: str, backlog: int = 2048) -> Listener:
    """A Listener for a socket already open on ``fd`` (fd://N, socket activation, an
    upgrade); a stream socket that is bound but not listening yet is made to listen."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise BindError(f"cannot use {label}: fd {fd} is not a socket")
    except OSError as exc:
        raise BindError(f"cannot use {label}: fd {fd}: {exc.strerror}") from None
    sock = socket.socket(fileno=fd)
    if sock.type == STREAM and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(backlog)
    sock.setblocking(False)
    set_nodelay(sock)
    address = sock.getsockname()
    host, port = (str(address[0]), address[1]) if isinstance(address, tuple) else ("", 0)
    # No path even for a unix socket: its file is not ours to remove.
    return Listener(BindSpec(label, sock.family, host, port, sock.type, fd=fd), sock)


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
