"""The response heads a WSGI app's start_response describes: validated once, then cached.

Most apps send the same few (status, headers) pairs again and again, so an
:class:`AppHead` (the status line and the app's fields, serialized, with
what the framing needs to know) is computed once per distinct pair; the
exchange only adds Server, Date and the framing lines per response.
"""

from __future__ import annotations

from typing import Dict, Final, List, Optional, Tuple

from .response import HOP_BY_HOP, SERVER, check_headers, status_code


class AppHead:
    """What start_response's (status, headers) mean for the head: built by
    :func:`read_head`, which validates them, and cached by :func:`app_head`.

    ``prefix`` is the status line and the app's fields, serialized;
    ``declared`` the app's Content-Length (None if it gave none), whose digits
    sit at ``length_span`` in the prefix; ``close``: the app asked for it;
    ``server``: the Server line the head still needs (b"" if the app gave one).
    """

    __slots__ = ("code", "prefix", "has_server", "has_date", "declared", "close", "server",
                 "length_span", "last_length")

    def __init__(self, code: int, prefix: bytes, declared: Optional[int],
                 length_span: Tuple[int, int], close: bool, has_server: bool,
                 has_date: bool) -> None:
        self.code = code
        self.prefix = prefix
        self.declared = declared
        self.length_span = length_span
        self.close = close
        self.has_server = has_server
        self.has_date = has_date
        self.server = b"" if has_server else SERVER
        self.last_length: Optional[str] = None     # see app_head's caches

    def with_length(self, value: str) -> "AppHead":
        """This head with another Content-Length value (a digit string)."""
        start, end = self.length_span
        return AppHead(self.code, self.prefix[:start] + value.encode("ascii") + self.prefix[end:],
                       int(value), (start, start + len(value)), self.close, self.has_server,
                       self.has_date)


def read_head(status: str, headers: List[Tuple[str, str]]) -> AppHead:
    """Validate and serialize what an app gave start_response (ValueError if it is wrong)."""
    code = status_code(status)
    check_headers(headers)
    kept = []
    names = set()
    declared: Optional[int] = None
    close = False
    length_span = (0, 0)
    size = len(status) + 11       # "HTTP/1.1 " + status + CRLF
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == "connection" and "close" in value.lower():
                close = True
            continue
        line = f"{name}: {value}\r\n"
        if lower == "content-length":
            if declared is not None or not value.isdigit():
                raise ValueError(f"bad or repeated Content-Length {value!r} from the app")
            declared = int(value)
            start = size + len(name) + 2
            length_span = (start, start + len(value))
        names.add(lower)
        kept.append(line)
        size += len(line)
    prefix = (f"HTTP/1.1 {status}\r\n" + "".join(kept)).encode("latin-1")
    return AppHead(code, prefix, declared, length_span, close, "server" in names,
                   "date" in names)


def without_length(app: AppHead) -> AppHead:
    """``app`` without its Content-Length line (RFC 9110 8.6: none on 1xx or 204)."""
    lines = app.prefix.split(b"\r\n")
    kept = [l for l in lines if not l.lower().startswith(b"content-length:")]
    return AppHead(app.code, b"\r\n".join(kept), None, (0, 0), app.close, app.has_server,
                   app.has_date)


# Two bounded caches of heads.  _HEADS is keyed by the exact (status, headers):
# one lookup for an app that repeats itself.  A head with a Content-Length is
# also kept in _SHAPES, keyed with that value left out: responses that differ
# only in their length (any dynamic page) share one validated head there and
# get their own by splicing the digits in, and they enter _HEADS only when the
# same length comes twice in a row (a constant length, as in a fixed reply),
# so one-off lengths never crowd it.  Values that vary otherwise (an ETag, a
# cookie) still make one-off entries; when a cache is full its oldest entry
# leaves (insertion order), so no run of one-offs keeps a head that becomes
# common later out for good, and a common head that was pushed out comes back
# at its next use.
_HEADS: Dict[tuple, AppHead] = {}
_SHAPES: Dict[tuple, AppHead] = {}
_MAX_HEADS: Final = 512


def _remember(cache: Dict[tuple, AppHead], key: tuple, head: AppHead) -> None:
    if len(cache) >= _MAX_HEADS:
        try:
            del cache[next(iter(cache))]
        except (KeyError, RuntimeError, StopIteration):
            pass    # another thread changed the cache meanwhile: it made room, or will
    cache[key] = head


def _length_at(headers: tuple) -> int:
    """Index of the one well-formed Content-Length field, or -1."""
    at = -1
    for i, item in enumerate(headers):
        if type(item) is tuple and len(item) == 2 and type(item[0]) is str \
                and item[0].lower() == "content-length":
            value = item[1]
            if at >= 0 or type(value) is not str or not (value.isdigit() and value.isascii()):
                return -1
            at = i
    return at


def app_head(status: str, headers: List[Tuple[str, str]]) -> AppHead:
    try:
        key = (status, tuple(headers))
        head = _HEADS.get(key)
    except TypeError:            # an unhashable item: read_head says what is wrong
        return read_head(status, headers)
    if head is not None:
        return head
    fields = key[1]
    at = _length_at(fields)
    if at < 0:
        head = read_head(status, headers)
        _remember(_HEADS, key, head)
        return head
    name, value = fields[at]
    shape = (status, fields[:at] + ((name, None),) + fields[at + 1:])
    template = _SHAPES.get(shape)
    if template is None:
        head = template = read_head(status, headers)
        _remember(_SHAPES, shape, template)
    else:
        head = template.with_length(value)
    if value == template.last_length:
        _remember(_HEADS, key, head)
    template.last_length = value
    return head
