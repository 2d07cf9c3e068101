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


# struct tcp_info: 8 one-byte fields (tcpi_state first), then u32 rto, ato,
# snd_mss, rcv_mss, unacked, sacked.  For a listening socket Linux reports its
# accept queue length in tcpi_unacked (what `ss -l` shows as Recv-Q) and its
# backlog, as clamped by net.core.somaxconn, in tcpi_sacked (Send-Q).
_TCP_INFO_UNACKED, _TCP_LISTEN = 24, 10


def accept_queue_length(sock: socket.socket) -> Optional[int]:
    """Connections waiting in a TCP ``sock``'s accept queue, where the OS tells."""
    if sock.family == socket.AF_UNIX:
        return None     # a worker's graceful stop drains unix listeners as it always did
    queue = listen_queue(sock)
    return None if queue is None else queue[0]


def listen_queue(sock: socket.socket) -> Optional[Tuple[int, int]]:
    """(connections waiting to be accepted, backlog) of a listening stream socket:
    TCP through TCP_INFO, unix through sock_diag; None where the OS does not tell
    or the socket does not listen (a datagram socket, reuse_port's master socket)."""
    if sock.family == socket.AF_UNIX:
        return _unix_listen_queue(sock)
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCP_INFO_UNACKED + 8 or info[0] != _TCP_LISTEN:
        return None
    queued, backlog = struct.unpack_from("=II", info, _TCP_INFO_UNACKED)
    return queued, backlog


# sock_diag (what `ss -x` asks): a unix_diag_req for one inode with
# UDIAG_SHOW_RQLEN answers, for a listening socket, the connections waiting
# (udiag_rqueue) and the backlog (udiag_wqueue).
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST = 4, 20, 1
_UDIAG_SHOW_RQLEN, _UNIX_DIAG_RQLEN, _NLMSG_ERROR = 0x10, 4, 2


def _unix_listen_queue(sock: socket.socket) -> Optional[Tuple[int, int]]:
    try:
        if sock.type != STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return None
        inode = os.fstat(sock.fileno()).st_ino
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, inode,
                                  _UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF)   # no cookie
            nl.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY,
                                _NLM_F_REQUEST, 1, 0) + request)
            reply = nl.recv(8192)
    except (OSError, AttributeError):   # no AF_NETLINK (not Linux), no unix_diag module
        return None
    if len(reply) < 32 or struct.unpack_from("=H", reply, 4)[0] == _NLMSG_ERROR:
        return None
    end, at = min(len(reply), struct.unpack_from("=I", reply)[0]), 32   # nlmsghdr + msg
    while at + 4 <= end:    # the rtattrs after the unix_diag_msg
        length, kind = struct.unpack_from("=HH", reply, at)
        if length < 4:
            break
        if kind == _UNIX_DIAG_RQLEN and length >= 12:
            queued, backlog = struct.unpack_from("=II", reply, at + 4)
            return queued, backlog
        at += (length + 3) & ~3
    return None


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
