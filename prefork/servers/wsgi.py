"""Serving a WSGI application inside a worker: one :class:`WSGIServer` per listener.

The server is the shared, read-only part of every connection on its
listener: the app, the limits and timeouts, the constant environ, the
access log.  Connections themselves live in :mod:`.http.connection` (the
selector adapter) around :mod:`.http.protocol` (their rules, sans-IO).

Override in a subclass: :meth:`WSGIServer.environ` to add keys,
:meth:`WSGIServer.log_access` to log differently.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from typing import Any, Callable, Dict, Optional

from .edge import tls_info
from .http.connection import HttpConnection
from .http.environ import base_environ
from .http.exchange import Exchange, FileWrapper
from .http.listener import HttpListener
from .http.parser import Request

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AccessLog:
    """Apache combined format (or JSON lines), one ``os.write`` per line, O_APPEND."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.json = fmt == "json"
        self.fd = 1 if path == "-" else self._open()
        self._stamp_second = -1
        self._stamp = ""

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def reopen(self) -> None:
        if self.path != "-":
            fd = self._open()
            os.dup2(fd, self.fd)
            os.close(fd)

    def _timestamp(self) -> str:
        now = int(time.time())
        if now != self._stamp_second:
            t = time.localtime(now)
            offset = t.tm_gmtoff // 60
            sign = "+" if offset >= 0 else "-"
            self._stamp = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                           f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} "
                           f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}")
            self._stamp_second = now
        return self._stamp

    def write(self, client: Any, request: Optional[Request], status: int, size: int,
              duration: float) -> None:
        host = client[0] if isinstance(client, tuple) else (client or "-")
        headers = {n.lower(): v for n, v in request.headers} if request else {}
        line = (f"{request.method} {request.target} {request.version}" if request else "-")
        if self.json:
            record = {"time": self._timestamp(), "remote_addr": host, "request": line,
                      "status": status, "bytes": size, "duration_ms": round(duration * 1e3, 3),
                      "referer": headers.get("referer", ""),
                      "user_agent": headers.get("user-agent", ""), "pid": os.getpid()}
            text = json.dumps(record) + "\n"
        else:
            referer = headers.get("referer", "-").replace('"', '\\"')
            agent = headers.get("user-agent", "-").replace('"', '\\"')
            text = (f'{host} - - [{self._timestamp()}] "{_escape(line)}" {status} '
                    f'{size or "-"} "{referer}" "{agent}"\n')
        os.write(self.fd, text.encode("utf-8", "backslashreplace"))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class WSGIServer(HttpListener):
    """What connections on one listener share; ``accepted`` makes a connection."""

    def __init__(self, sock: socket.socket, app: Callable, config: Any, multithread: bool,
                 access_log: Optional[AccessLog], tls: bool = False) -> None:
        super().__init__(sock, app, config, access_log)
        self.body_buffer_size = config.body_buffer_size
        self.high_water = 256 * 1024
        # What every request's environ starts from (the connection builds the rest).
        self.environ_base = base_environ(sock.getsockname(), multithread, config.root_path,
                                         FileWrapper)
        if tls:      # its connections come through the edge's handshake (servers/edge/)
            self.environ_base.update({"wsgi.url_scheme": "https", "HTTPS": "on"})

    def accepted(self, conn: socket.socket, address: Any, loop: Any) -> HttpConnection:
        conn.setblocking(False)      # TCP_NODELAY comes from the listener
        return HttpConnection(conn, address, self, loop)

    def tls_environ(self, conn: socket.socket) -> Optional[Dict[str, str]]:
        """What a TLS connection adds to each request's environ (its client
        certificate, protocol, cipher); None for a plain one."""
        if not isinstance(conn, ssl.SSLSocket):
            return None
        return tls_info.wsgi_environ(conn)

    def log_access(self, connection: HttpConnection, request: Request,
                   exchange: Exchange) -> None:
        self._write_access(connection.client, request, exchange.code,
                           exchange.body_bytes, connection.started)
