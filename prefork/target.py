"""TARGET strings: ``package.module:name`` or ``package.module:factory()``.

:func:`parse` checks the shape (a config error, exit 2) in the master;
:func:`load` imports it (exit 3 on failure) in the worker, so the master
never holds application code and every reload imports it afresh.  For the
same reason :func:`check_kinds` (a target that cannot serve one of the bind
addresses, e.g. a WSGI app on ``udp://``) runs where the target is loaded:
in the worker, whose failure at the first start makes the master exit 3,
and in ``prefork check``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import socketserver
import traceback
from dataclasses import dataclass
from typing import Iterable, Tuple

from .errors import ConfigError, TargetError

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_SHAPE = re.compile(rf"^(?P<module>{_DOTTED}):(?P<name>{_DOTTED})(?P<call>\(\))?$")


@dataclass(frozen=True)
class TargetSpec:
    text: str
    module: str
    name: str
    call: bool


def parse(text: str) -> TargetSpec:
    match = _SHAPE.match(text.strip())
    if not match:
        raise ConfigError(f"target {text!r}: expected 'package.module:name' or "
                          "'package.module:factory()'")
    return TargetSpec(text, match["module"], match["name"], bool(match["call"]))


def import_failure(module: str, exc: BaseException) -> str:
    """Why ``module`` did not import, for an operator: the error, and unless the
    module simply does not exist, the traceback that names the file and line."""
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    text = f"cannot import module {module!r}: {detail}"
    if isinstance(exc, ModuleNotFoundError) and exc.name == module.split(".")[0]:
        return text
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return f"{text}\n{trace}"


def load(spec: TargetSpec) -> object:
    """Import the module and return the named object (called, for a factory)."""
    try:
        obj = importlib.import_module(spec.module)
    except (Exception, SystemExit) as exc:   # a module may sys.exit() at import
        raise TargetError(import_failure(spec.module, exc)) from None
    for part in spec.name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {spec.module!r} has no attribute {spec.name!r}") from None
    if spec.call:
        try:
            obj = obj()
        except (Exception, SystemExit):
            raise TargetError(f"factory {spec.text!r} raised:\n"
                              f"{traceback.format_exc().rstrip()}") from None
    return obj


def is_handler_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, socketserver.BaseRequestHandler)


def is_asgi_app(obj: object) -> bool:
    """An ASGI 3 application: ``async def app(scope, receive, send)``, or an object
    whose ``__call__`` is a coroutine function (Starlette, FastAPI, Django's handler).

    A class is never one: calling it builds an instance (ASGI 2's shape).  An
    app whose call returns an awaitable without being a coroutine function
    cannot be told from a WSGI app; ``-k asyncio`` cannot rescue it either.
    """
    if isinstance(obj, type) or not callable(obj):
        return False
    if inspect.iscoroutinefunction(obj):
        return True
    return inspect.iscoroutinefunction(getattr(obj, "__call__", None))


def describe(obj: object) -> str:
    """What prefork takes ``obj`` for, in words."""
    if is_handler_class(obj):
        return "a socketserver handler class"
    return "an ASGI 3 application" if is_asgi_app(obj) else "a WSGI application"


def worker_kind(spec: TargetSpec, obj: object, wanted: str) -> str:
    """The worker kind that serves ``obj``: ``wanted``, or for ``auto`` the kind its
    shape calls for; TargetError (exit 3) if ``wanted`` cannot serve it."""
    asgi = is_asgi_app(obj)
    if wanted == "auto":
        return "asyncio" if asgi else "thread" if is_handler_class(obj) else "sync"
    if wanted == "asyncio" and not asgi:
        raise TargetError(
            f"target {spec.text!r} is {describe(obj)}, not an ASGI 3 application "
            "(async def app(scope, receive, send)): -k asyncio serves ASGI apps; "
            "use -k sync or -k thread, or -k auto")
    if wanted != "asyncio" and asgi:
        raise TargetError(f"target {spec.text!r} is an ASGI 3 application: -k {wanted} "
                          "serves WSGI apps and handler classes; use -k asyncio or -k auto")
    return wanted


def load_servable(spec: TargetSpec) -> object:
    """:func:`load`, then make sure it is something prefork can serve (exit 3 if not)."""
    obj = load(spec)
    if not is_handler_class(obj) and not callable(obj):
        raise TargetError(f"target {spec.text!r} is {obj!r}: neither a "
                          "socketserver.BaseRequestHandler subclass nor a WSGI callable")
    return obj


def check_kinds(spec: TargetSpec, obj: object, binds: Iterable[Tuple[str, bool]]) -> None:
    """TargetError (exit 3) naming the address if ``obj`` cannot serve one of ``binds``.

    ``binds``: (address as the operator wrote it, whether it is a datagram
    socket).  WSGI speaks HTTP over a stream; a StreamRequestHandler reads a
    connection and a DatagramRequestHandler a packet; a plain
    BaseRequestHandler may serve both (``isinstance(self.request, tuple)``
    tells a datagram).
    """
    for address, datagram in binds:
        why = _mismatch(obj, datagram)
        if why:
            raise TargetError(f"target {spec.text!r} cannot serve {address}: {why}")


def _mismatch(obj: object, datagram: bool) -> str:
    if not is_handler_class(obj):
        return (f"{describe(obj)} needs a stream socket (HOST:PORT or unix:), "
                "not a datagram one") if datagram else ""
    if datagram and issubclass(obj, socketserver.StreamRequestHandler):
        return (f"{obj.__name__} is a socketserver.StreamRequestHandler, which reads a "
                "connection, not datagrams (subclass DatagramRequestHandler, or "
                "BaseRequestHandler to serve both)")
    if not datagram and issubclass(obj, socketserver.DatagramRequestHandler):
        return (f"{obj.__name__} is a socketserver.DatagramRequestHandler, which reads "
                "datagrams (udp:// or unix-dgram:), not a stream socket")
    return ""
