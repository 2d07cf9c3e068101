"""PEP 3333 environ from a parsed request.

The constant part (server name and port, ``wsgi.*`` flags, SCRIPT_NAME) is
built once per listener by :func:`base_environ`; :func:`build_environ` adds
what belongs to one request.  A connection adds its client's fields to the
base once (:func:`client_fields`) and builds each request's environ with
:func:`request_environ`.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Final, IO, Optional
from urllib.parse import unquote_to_bytes

from .parser import Request

# "X-Forwarded-For" -> "HTTP_X_FORWARDED_FOR", memoized: names repeat endlessly.
_KEYS: Dict[str, Optional[str]] = {}
_MAX_KEYS: Final = 4096


def _environ_key(name: str) -> Optional[str]:
    key = _KEYS.get(name)
    if key is None and name not in _KEYS:
        upper = name.upper()
        if "_" in name:
            # X_Forwarded_For would arrive as HTTP_X_FORWARDED_FOR like the
            # real X-Forwarded-For and could spoof it behind a proxy: dropped.
            key = None
        elif upper == "CONTENT-TYPE":
            key = "CONTENT_TYPE"
        elif upper == "CONTENT-LENGTH":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + upper.replace("-", "_")
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


def base_environ(server_address: Any, multithread: bool, root_path: str,
                 file_wrapper: Any) -> Dict[str, Any]:
    if isinstance(server_address, tuple):
        name, port = str(server_address[0]), str(server_address[1])
    else:
        name, port = str(server_address or "localhost"), ""
    return {
        "SERVER_NAME": name,
        "SERVER_PORT": port,
        "SCRIPT_NAME": root_path,
        "SERVER_SOFTWARE": "prefork",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": file_wrapper,
    }


def split_target(target: str) -> tuple:
    """(path, query, authority) of a request-target in any of its forms (RFC 9112 3.2).

    ``authority`` is only set for absolute-form, where it replaces Host.
    """
    if "#" in target:
        target = target.partition("#")[0]   # a fragment is the client's business
    path, _, query = target.partition("?")
    if path.startswith("/"):
        return path, query, None
    if "://" in path:                    # absolute-form
        rest = path.split("://", 1)[1]
        slash = rest.find("/")
        authority = rest if slash < 0 else rest[:slash]
        authority = authority.rpartition("@")[2]    # userinfo is not part of Host
        return (rest[slash:] if slash >= 0 else "/"), query, authority
    return "", query, None               # authority-form (CONNECT) or "*"


# The keys request_environ sets on every request.
REQUEST_KEYS: Final = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "REQUEST_URI",
                       "SERVER_PROTOCOL", "wsgi.input")
_ROOM: Final = "prefork.room"


def connection_base(base: Dict[str, Any], client_address: Any,
                    extra: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The environ base of one connection: the listener's ``base``, the client's
    fields and ``extra`` (TLS), and a placeholder for each of REQUEST_KEYS.  Each
    request's copy then overwrites those instead of inserting them."""
    environ = dict(base)
    client_fields(environ, client_address)
    if extra:
        environ.update(extra)
    for key in REQUEST_KEYS:
        environ[key] = None
    # A dict's copy keeps the size of its table.  Grown past the next resize
    # and trimmed back, the base gives each request's copy room for its
    # header fields: else the first one (Host) would resize every copy.
    environ[_ROOM] = None
    del environ[_ROOM]
    return environ


def client_fields(environ: Dict[str, Any], client_address: Any) -> None:
    """REMOTE_ADDR and REMOTE_PORT (a TCP client's) into ``environ``."""
    if isinstance(client_address, tuple):
        environ["REMOTE_ADDR"] = client_address[0]
        environ["REMOTE_PORT"] = str(client_address[1])
    else:
        environ.pop("REMOTE_PORT", None)
        environ["REMOTE_ADDR"] = str(client_address or "")


def build_environ(base: Dict[str, Any], request: Request, body: IO[bytes], body_length: int,
                  client_address: Any) -> Dict[str, Any]:
    environ = request_environ(base, request, body, body_length)
    client_fields(environ, client_address)
    return environ


def request_environ(base: Dict[str, Any], request: Request, body: IO[bytes],
                    body_length: int) -> Dict[str, Any]:
    """The environ of one request: ``base`` (which may hold the client's fields
    already, see :func:`client_fields`) and what the request says."""
    environ = base.copy()
    path, query, authority = split_target(request.target)
    if "%" in path:
        path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
    root = environ["SCRIPT_NAME"]
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query
    environ["RAW_URI"] = environ["REQUEST_URI"] = request.target
    environ["SERVER_PROTOCOL"] = request.version
    for name, value in request.headers:
        key = _environ_key(name)
        if key is None:
            continue
        if key in environ and key.startswith("HTTP_"):
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    if authority is not None:
        environ["HTTP_HOST"] = authority   # RFC 9112 3.2.2: the target's authority wins
    if body_length or request.chunked or "CONTENT_LENGTH" in environ:
        # The whole body is read before the app runs, so its length is known
        # even when it came chunked.
        environ["CONTENT_LENGTH"] = str(body_length)
    environ["wsgi.input"] = body
    return environ
