"""ASGI 3 ``http`` scopes from parsed requests: pure functions, no I/O.

The constant part (``asgi``, ``scheme``, ``server``, ``root_path``, the
extensions) is built once per listener by :func:`base_scope`;
:func:`http_scope` adds what belongs to one request.

``path`` includes ``root_path`` (the ASGI spec; Starlette and uvicorn read
it so): a request whose path starts with the root path is passed as it
came, one that does not (a proxy stripped the prefix) gets it prepended,
so ``root_path`` is always a prefix of ``path``, as SCRIPT_NAME is of the
WSGI side's full path.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

from ..http.environ import split_target
from ..http.parser import Request

ASGI = {"version": "3.0", "spec_version": "2.4"}
HTTP_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}
Headers = List[Tuple[bytes, bytes]]

# Header names repeat endlessly: their lowercase bytes are memoized (bounded);
# None marks a name that is dropped.
_NAMES: Dict[str, Optional[bytes]] = {}
_MAX_NAMES = 4096


def address_pair(address: Any) -> Optional[Tuple[str, Optional[int]]]:
    """An ASGI ``client``/``server`` value: (host, port), (path, None) for a unix
    socket, None when unknown (an unnamed unix client)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    if isinstance(address, (str, bytes)) and address:
        return (address.decode() if isinstance(address, bytes) else address, None)
    return None


def base_scope(server_address: Any, root_path: str) -> Dict[str, Any]:
    """What every request on one listener shares."""
    return {
        "type": "http",
        "asgi": ASGI,
        "scheme": "http",
        "server": address_pair(server_address),
        "root_path": root_path.rstrip("/"),
        "extensions": {"http.response.pathsend": {}, "http.response.trailers": {}},
    }


def header_list(request: Request, authority: Optional[str] = None) -> Headers:
    """The request's fields as ASGI wants them: lowercase names, bytes, in order.

    A name with an underscore is dropped, as on the WSGI side: frameworks that
    map names to WSGI-style keys (Django's ASGI handler) would take
    X_Forwarded_For for the X-Forwarded-For a proxy vouches for.  An
    absolute-form target's ``authority`` replaces Host (RFC 9112 3.2.2).
    """
    names = _NAMES
    out = []
    for name, value in request.headers:
        lower = names.get(name, b"")
        if lower == b"":
            lower = None if "_" in name else name.lower().encode("latin-1")
            if len(names) < _MAX_NAMES:
                names[name] = lower
        if lower is None or (authority is not None and lower == b"host"):
            continue
        out.append((lower, value.encode("latin-1")))
    if authority is not None:
        out.insert(0, (b"host", authority.encode("latin-1")))
    return out


def http_scope(base: Dict[str, Any], request: Request, client: Any,
               state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The ``http`` scope of one request; ``state``: the lifespan state, copied."""
    scope = base.copy()
    path, query, authority = split_target(request.target)
    raw = path.encode("latin-1")
    root = scope["root_path"]
    if root and not (path == root or path.startswith(root + "/")):
        raw = root.encode("utf-8") + raw
    if b"%" in raw:
        decoded = unquote_to_bytes(raw).decode("utf-8", "replace")
    else:
        decoded = raw.decode("utf-8", "replace")
    scope["http_version"] = HTTP_VERSIONS.get(request.version, "1.1")
    scope["method"] = request.method
    scope["path"] = decoded
    scope["raw_path"] = raw
    scope["query_string"] = query.encode("latin-1")
    scope["headers"] = header_list(request, authority)
    scope["client"] = address_pair(client)
    if state is not None:
        scope["state"] = state.copy()
    return scope


def wants_websocket(request: Request) -> bool:
    """A GET asking to switch to the WebSocket protocol (RFC 6455 4.1)."""
    if request.method != "GET" or not request.upgrade:
        return False
    upgrade = connection = ""
    for name, value in request.headers:
        lower = name.lower()
        if lower == "upgrade":
            upgrade += "," + value.lower()
        elif lower == "connection":
            connection += "," + value.lower()
    return ("websocket" in [t.strip() for t in upgrade.split(",")]
            and "upgrade" in [t.strip() for t in connection.split(",")])
