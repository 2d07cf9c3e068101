"""Hello world as a bare PEP 3333 application.

    prefork serve prefork.examples.wsgi:app -b 127.0.0.1:8000
    curl http://127.0.0.1:8000/
"""

from typing import Callable, Iterable

BODY = b"Hello, world!\n"


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
