"""The WSGI app for tests/reliability/test_hostile_clients.py.

``/big/?size=N``: N bytes (Content-Length) from one block shared by every
request, so that hundreds of slow readers each holding an unfinished large
response cost the worker no memory of their own beyond what waits to be
sent.  Everything else goes to :func:`wsgiapps.router` (``/hello/`` is the
well-behaved client's request).
"""

import wsgiapps

BLOCK = bytes(range(256)) * 256     # 64 KiB


def big(environ, start_response):
    size = int(wsgiapps.query(environ).get("size", str(64 << 20)))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    full, rest = divmod(size, len(BLOCK))

    def body():
        for _ in range(full):
            yield BLOCK
        if rest:
            yield BLOCK[:rest]
    return body()


def router(environ, start_response):
    if environ.get("PATH_INFO", "").startswith("/big/"):
        return big(environ, start_response)
    return wsgiapps.router(environ, start_response)
