"""A target module whose import fails (the --preload start-up error test)."""

raise RuntimeError("brokenapp cannot be imported (on purpose)")


def app(environ, start_response):  # pragma: no cover - never reached
    start_response("200 OK", [])
    return [b""]
