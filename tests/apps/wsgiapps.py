"""WSGI applications used only by the HTTP integration tests.

Every app that is reached appends one JSON line ("event": "call") to the file
named by $PREFORK_TEST_CALLS before it answers, keyed by the client's
REMOTE_PORT and an optional ``id`` query parameter.  That is how a test proves
a request it expected to be refused never reached the application, and how
it sees what a HEAD request (whose response has no body) looked like to the
app.  Iterables that have close() add an "event": "close" line when it runs.
"""

import hashlib
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

CALLS_ENV = "PREFORK_TEST_CALLS"
FILE_ENV = "PREFORK_TEST_FILE"
BLOCK = 64 * 1024


def query(environ):
    try:
        parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    except ValueError:
        return {}
    return {name: values[-1] for name, values in parsed.items()}


def record(event, environ=None, **fields):
    path = os.environ.get(CALLS_ENV)
    if not path:
        return
    line = {"event": event, "pid": os.getpid(), "thread": threading.current_thread().name,
            "time": time.time()}
    if environ is not None:
        line["remote_port"] = environ.get("REMOTE_PORT")
        line["id"] = query(environ).get("id", "")
    line.update(fields)
    append_json_line(path, line)


def append_json_line(path, line):
    """One O_APPEND write per line: lines from several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def pattern(size):
    """Deterministic bytes that differ per 64 KiB block, so lost or swapped blocks show."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d" % block).digest() * (BLOCK // 32)
        block += 1
    return bytes(out[:size])


def _read_body(environ):
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH", "")
    if length.isdigit():
        return stream.read(int(length))
    parts = []
    while True:     # PEP 3333 read(size) only: wsgiref.validate refuses read()
        data = stream.read(BLOCK)
        if not data:
            return b"".join(parts)
        parts.append(data)


def describe(environ, body):
    return {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "script_name": environ.get("SCRIPT_NAME", ""),
        "raw_uri": environ.get("RAW_URI", environ.get("REQUEST_URI")),
        "protocol": environ.get("SERVER_PROTOCOL"),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "server": [environ.get("SERVER_NAME"), environ.get("SERVER_PORT")],
        "multithread": environ.get("wsgi.multithread"),
        "headers": {k: v for k, v in environ.items()
                    if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")},
        "body": body.decode("latin-1"),
    }


def echo(environ, start_response):
    """Answer the request as the app saw it, as JSON (and record it)."""
    info = describe(environ, _read_body(environ))
    record("call", environ, **info)
    payload = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(payload)))])
    return [payload]


def hello(environ, start_response):
    record("call", environ, method=environ["REQUEST_METHOD"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]


def stream(environ, start_response):
    """``?chunks=N&size=S``: N pieces of S bytes, no Content-Length (the server frames it)."""
    q = query(environ)
    chunks, size = int(q.get("chunks", "4")), int(q.get("size", "10"))
    record("call", environ, method=environ["REQUEST_METHOD"])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    body = pattern(chunks * size)
    return (body[i * size:(i + 1) * size] for i in range(chunks))


def large(environ, start_response):
    """``?size=N``: N bytes of :func:`pattern`, with Content-Length, produced lazily."""
    size = int(query(environ).get("size", str(4 << 20)))
    record("call", environ, method=environ["REQUEST_METHOD"])
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    body = pattern(size)
    return (body[i:i + BLOCK] for i in range(0, size, BLOCK))


def writer(environ, start_response):
    """The legacy write() callable, then an iterable: the body is both, in order."""
    record("call", environ, method=environ["REQUEST_METHOD"])
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"two,")
    return [b"three,", b"four"]


class ClosingBody:
    """An iterable with close(), which records that it ran (PEP 3333 requires it)."""

    def __init__(self, environ, chunks, size, delay, fail_at):
        self.environ = environ
        self.chunks, self.size, self.delay, self.fail_at = chunks, size, delay, fail_at

    def __iter__(self):
        for n in range(self.chunks):
            if n == self.fail_at:
                raise RuntimeError("boom from ClosingBody mid-iteration")
            if n and self.delay:
                time.sleep(self.delay)
            yield b"x" * self.size

    def close(self):
        record("close", self.environ)


def closing(environ, start_response):
    """``?chunks=N&size=S&delay=D&fail=K``: a ClosingBody; fail=K raises before piece K."""
    q = query(environ)
    record("call", environ, method=environ["REQUEST_METHOD"])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return ClosingBody(environ, int(q.get("chunks", "3")), int(q.get("size", "5")),
                       float(q.get("delay", "0")), int(q.get("fail", "-1")))


def failing(environ, start_response):
    """``?when=before|after|iter``: raise before start_response, after it, or mid-body."""
    when = query(environ).get("when", "before")
    record("call", environ, method=environ["REQUEST_METHOD"], when=when)
    if when == "before":
        raise RuntimeError("boom before start_response")
    if when == "after":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("boom after start_response")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(4 << 20))])

    def body():
        # More than the server's high-water mark, so the head and these bytes
        # leave before the failure: only closing the connection can tell.
        yield b"y" * (1 << 20)
        raise RuntimeError("boom mid-iteration")
    return body()


def sendfile(environ, start_response):
    """The file named by $PREFORK_TEST_FILE through wsgi.file_wrapper."""
    record("call", environ, method=environ["REQUEST_METHOD"])
    f = open(os.environ[FILE_ENV], "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, BLOCK)


def slow(environ, start_response):
    """``?t=S&id=X``: sleep S seconds; says 'slow: start X' on stderr when it begins."""
    q = query(environ)
    seconds = float(q.get("t", "1"))
    record("slow-start", environ)
    sys.stderr.write(f"slow: start {q.get('id', '')}\n")
    sys.stderr.flush()
    time.sleep(seconds)
    record("slow-end", environ)
    body = json.dumps({"pid": os.getpid(), "thread": threading.current_thread().name}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


_hoard = []     # what grow() keeps, for the life of the worker


def hoard(mib):
    """Allocate ``mib`` MiB more and keep it for the life of the process; the RSS after."""
    _hoard.append(b"\x01" * (mib << 20))    # written, so resident, unlike calloc'd zeros
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def grow(environ, start_response):
    """``?mib=N&hold=S``: allocate N MiB more and keep it (max_rss), sleep S seconds;
    answers the PID and RSS."""
    q = query(environ)
    rss = hoard(int(q.get("mib", "0")))
    time.sleep(float(q.get("hold", "0")))
    body = json.dumps({"pid": os.getpid(), "rss": rss}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


validated_echo = validator(echo)
validated_stream = validator(stream)
validated_writer = validator(writer)

ROUTES = {
    "stream": stream, "large": large, "write": writer, "closing": closing, "fail": failing,
    "file": sendfile, "slow": slow, "hello": hello, "grow": grow,
    "v-echo": validated_echo, "v-stream": validated_stream, "v-write": validated_writer,
}


def router(environ, start_response):
    """One server for many tests: /NAME/... goes to the app NAME, anything else to echo."""
    first = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)[0]
    return ROUTES.get(first, echo)(environ, start_response)
