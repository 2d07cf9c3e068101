"""A WSGI app with well-behaved and faulty routes, for tests/reliability/test_faults.py.

- ``/ok`` (and anything else): a small 200, what the load generator asks for.
- ``/leak?mib=N``: keeps N MiB more for the life of the worker (written, so
  resident), then answers ``{"pid": ..., "rss": ...}``: RSS grows with
  every request, until max_rss recycles the worker.
- ``/loop``: says ``loop: start PID`` on stderr, then spins forever in pure
  Python (no sleep, no I/O, no C call that releases anything), until the
  master's ``timeout`` aborts the worker.
"""

import json
import os
import sys

OK = b"ok\n"
_hoard = []     # what /leak keeps, for the life of the worker


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def leak(environ, start_response):
    query = environ.get("QUERY_STRING", "")
    mib = int(query[4:]) if query.startswith("mib=") else 1
    _hoard.append(b"\x01" * (mib << 20))
    body = json.dumps({"pid": os.getpid(), "rss": rss()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def loop(environ, start_response):
    sys.stderr.write(f"loop: start {os.getpid()}\n")
    sys.stderr.flush()
    n = 0
    while True:
        n += 1


def ok(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(OK)))])
    return [OK]


ROUTES = {"/leak": leak, "/loop": loop}


def app(environ, start_response):
    return ROUTES.get(environ.get("PATH_INFO", ""), ok)(environ, start_response)
