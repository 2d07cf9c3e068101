"""ASGI without a socket: target detection, worker kinds, the http scope, response framing."""

import functools

import pytest

from prefork import config, target
from prefork.errors import ConfigError, TargetError
from prefork.servers.asgi.response import frame, parse_start, trailer_block
from prefork.servers.asgi.scope import base_scope, http_scope, wants_websocket
from prefork.servers.http.parser import Request

SPEC = target.parse("mod:app")


# -- detection -----------------------------------------------------------------

async def asgi_function(scope, receive, send):
    pass


class AsgiInstance:
    async def __call__(self, scope, receive, send):
        pass


class SyncInstance:
    def __call__(self, environ, start_response):
        return []


def wsgi_function(environ, start_response):
    return []


class AsgiClass:
    """ASGI 2's shape: calling the class builds an instance."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        pass


@pytest.mark.parametrize("obj", [asgi_function, AsgiInstance(),
                                 functools.partial(asgi_function, {})])
def test_asgi_apps_are_recognised(obj):
    assert target.is_asgi_app(obj)
    assert target.describe(obj) == "an ASGI 3 application"
    assert target.worker_kind(SPEC, obj, "auto") == "asyncio"
    assert target.worker_kind(SPEC, obj, "asyncio") == "asyncio"


@pytest.mark.parametrize("obj", [wsgi_function, SyncInstance(), AsgiClass, AsgiInstance,
                                 "text", None, 42])
def test_other_things_are_not_asgi(obj):
    assert not target.is_asgi_app(obj)


def test_auto_picks_by_shape():
    import socketserver
    assert target.worker_kind(SPEC, wsgi_function, "auto") == "sync"
    assert target.worker_kind(SPEC, socketserver.StreamRequestHandler, "auto") == "thread"
    assert target.worker_kind(SPEC, wsgi_function, "thread") == "thread"


def test_asyncio_on_a_wsgi_app_is_refused_clearly():
    with pytest.raises(TargetError) as info:
        target.worker_kind(SPEC, wsgi_function, "asyncio")
    assert info.value.status == 3
    assert "'mod:app' is a WSGI application, not an ASGI 3 application" in str(info.value)
    assert "-k asyncio serves ASGI apps" in str(info.value)


@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_a_selector_kind_on_an_asgi_app_is_refused(kind):
    with pytest.raises(TargetError, match=f"ASGI 3 application: -k {kind} serves WSGI"):
        target.worker_kind(SPEC, asgi_function, kind)


def test_an_asgi_app_needs_a_stream_socket():
    with pytest.raises(TargetError, match="an ASGI 3 application needs a stream socket"):
        target.check_kinds(SPEC, asgi_function, [("udp://127.0.0.1:9", True)])


def test_a_factory_returning_an_asgi_app(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "prefork_t_asgi_factory.py").write_text(
        "async def app(scope, receive, send):\n    pass\n\ndef make():\n    return app\n")
    obj = target.load(target.parse("prefork_t_asgi_factory:make()"))
    assert target.worker_kind(target.parse("prefork_t_asgi_factory:make()"), obj,
                              "auto") == "asyncio"


# -- settings ----------------------------------------------------------------------

def test_lifespan_and_loop_settings():
    c = config.build({}, {"target": "m:a"})
    assert (c.lifespan, c.loop, c.worker_class) == ("auto", "auto", "auto")
    c = config.build({"lifespan": "on", "loop": "asyncio", "worker_class": "asyncio"},
                     {"target": "m:a"})
    assert (c.lifespan, c.loop, c.worker_class) == ("on", "asyncio", "asyncio")
    with pytest.raises(ConfigError, match="'lifespan': 'maybe' is not one of auto, on, off"):
        config.build({"lifespan": "maybe"}, {})
    with pytest.raises(ConfigError, match="'loop': 'trio' is not one of"):
        config.build({"loop": "trio"}, {})


# -- the http scope --------------------------------------------------------------------

def request(target_="/", method="GET", headers=(("Host", "example.com"),),
            version="HTTP/1.1"):
    return Request(method, target_, version, list(headers))


def test_scope_of_a_request():
    base = base_scope(("127.0.0.1", 8000), "")
    r = request("/caf%C3%A9/a%2Fb?x=1&y=%20", "POST",
                [("Host", "h"), ("X-Thing", "A"), ("x-thing", "B")])
    scope = http_scope(base, r, ("10.0.0.1", 5555), {"db": 1})
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert scope["headers"] == [(b"host", b"h"), (b"x-thing", b"A"), (b"x-thing", b"B")]
    assert scope["client"] == ("10.0.0.1", 5555)
    assert scope["server"] == ("127.0.0.1", 8000)
    assert scope["state"] == {"db": 1}
    assert "http.response.pathsend" in scope["extensions"]


def test_underscored_names_are_dropped_and_absolute_form_sets_host():
    r = request("http://real.example:8080/p?q", headers=[("Host", "other"), ("X_Forwarded_For",
                                                                              "1.2.3.4"),
                                                         ("Accept", "*/*")])
    scope = http_scope(base_scope(("127.0.0.1", 80), ""), r, None)
    assert scope["headers"] == [(b"host", b"real.example:8080"), (b"accept", b"*/*")]
    assert (scope["path"], scope["query_string"]) == ("/p", b"q")


def test_state_is_a_copy_per_request():
    state = {"db": 1}
    scope = http_scope(base_scope(("127.0.0.1", 80), ""), request(), None, state)
    scope["state"]["db"] = 2
    assert state == {"db": 1}


@pytest.mark.parametrize("sent, path, raw", [
    ("/api/items", "/api/items", b"/api/items"),   # the proxy kept the prefix
    ("/items", "/api/items", b"/api/items"),       # it stripped it
    ("/api", "/api", b"/api"),
    ("/apix", "/api/apix", b"/api/apix"),          # not under the root: a segment apart
])
def test_root_path_is_a_prefix_of_path(sent, path, raw):
    scope = http_scope(base_scope(("127.0.0.1", 80), "/api/"), request(sent), None)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api", path, raw)


def test_http_10_unix_socket_and_absolute_form():
    base = base_scope("/run/app.sock", "")
    scope = http_scope(base, request("http://example.com/p?q", version="HTTP/1.0"), "")
    assert scope["http_version"] == "1.0"
    assert (scope["path"], scope["query_string"]) == ("/p", b"q")
    assert scope["server"] == ("/run/app.sock", None)
    assert scope["client"] is None
    assert "state" not in scope


def test_websocket_requests_are_told():
    ws = request("/ws", headers=[("Host", "h"), ("Upgrade", "websocket"),
                                 ("Connection", "keep-alive, Upgrade")])
    ws.upgrade = True
    assert wants_websocket(ws)
    h2c = request("/", headers=[("Upgrade", "h2c"), ("Connection", "Upgrade")])
    h2c.upgrade = True
    assert not wants_websocket(h2c)
    post = request("/ws", "POST", ws.headers)
    post.upgrade = True
    assert not wants_websocket(post)


# -- response framing ---------------------------------------------------------------------

def start(status=200, headers=(), trailers=False):
    return parse_start({"type": "http.response.start", "status": status,
                        "headers": list(headers), "trailers": trailers})


def test_a_whole_body_gets_a_length():
    f = frame(start(200, [(b"content-type", b"text/plain")]), request(), True, 5)
    assert f.head.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n")
    assert b"Content-Length: 5\r\n" in f.head and f.head.endswith(b"\r\n\r\n")
    assert (f.chunked, f.length, f.keep_alive, f.no_body) == (False, 5, True, False)


def test_an_unknown_length_is_chunked_or_closed():
    f = frame(start(), request(), True, None)
    assert f.chunked and b"Transfer-Encoding: chunked\r\n" in f.head
    f = frame(start(), request(version="HTTP/1.0"), True, None)
    assert not f.chunked and not f.keep_alive and b"Connection: close\r\n" in f.head


def test_declared_length_connection_close_and_no_body_statuses():
    f = frame(start(200, [(b"Content-Length", b"10"), (b"connection", b"close"),
                          (b"transfer-encoding", b"chunked")]), request(), True, None)
    assert (f.length, f.keep_alive, f.chunked) == (10, False, False)
    assert b"transfer-encoding" not in f.head.lower().replace(b"\r\n\r\n", b"")
    f = frame(start(204, [(b"content-length", b"3")]), request(), True, 0)
    assert b"content-length" not in f.head.lower() and f.no_body
    f = frame(start(200), request(method="HEAD"), True, 42)
    assert f.no_body and b"Content-Length: 42\r\n" in f.head


@pytest.mark.parametrize("headers", [[(b"x", "str")], [(b"bad name", b"v")],
                                     [(b"x", b"a\r\nInjected: 1")], [(b"content-length", b"x")]])
def test_bad_heads_are_refused(headers):
    with pytest.raises((TypeError, ValueError)):
        start(200, headers)


def test_trailers_force_chunked_and_are_checked():
    f = frame(start(200, [(b"content-length", b"5")], trailers=True), request(), True, 5)
    assert f.chunked and f.length is None
    assert trailer_block([(b"x-sum", b"1")]) == b"0\r\nx-sum: 1\r\n\r\n"
    with pytest.raises(ValueError):
        trailer_block([(b"x", b"\n")])
