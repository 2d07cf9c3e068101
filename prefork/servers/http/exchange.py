"""One request's trip through a WSGI application (PEP 3333), as response bytes.

:class:`Exchange` never touches the socket.  Its jobs, :meth:`run` (call the
app, start iterating) and :meth:`pump` (iterate further), run on the worker's
dispatcher: in the loop's thread for sync workers, on a pool thread for
thread workers.  Each job stops once ``high_water`` bytes are waiting, and
the connection sends them before asking for more: a slow reader leaves the
response parked in the selector, never a blocked worker.

Framing is decided as late as possible: a body that is complete before
``high_water`` bytes gets a Content-Length, only a longer one without a
Content-Length from the app is sent chunked (or, to HTTP/1.0, delimited by
the close).  ``keep_alive`` starts as the protocol allows (:mod:`.protocol`)
and the framing can only take it back; what the connection does after the
response (keep open, linger, close) is the protocol's decision.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any, Callable, Dict, List, Optional, Tuple

from .heads import AppHead, app_head, without_length
from .parser import Request
from .response import LAST_CHUNK, NO_BODY_STATUSES, chunk, date_header, error_response

logger = logging.getLogger("prefork")


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; served with os.sendfile when it can be."""

    def __init__(self, filelike: Any, blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def fileno(self) -> Optional[int]:
        try:
            return self.filelike.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def __iter__(self) -> "FileWrapper":
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class Exchange:
    """The app side of one request; see the module docstring."""

    __slots__ = ("app", "environ", "request", "high_water", "keep_alive", "status", "code",
                 "head", "head_done", "flushed", "no_body", "chunked", "length", "body_bytes",
                 "file", "done", "aborted", "_pending", "_pending_size", "_out", "_out_size",
                 "_result", "_iterator", "_closed")

    def __init__(self, app: Callable, environ: Dict[str, Any], request: Request,
                 high_water: int, keep_alive: Optional[bool] = None) -> None:
        self.app = app
        self.environ = environ
        self.request = request
        self.high_water = high_water
        # May the head promise keep-alive?  The connection's protocol decides
        # (what the request asked, a graceful stop); the framing below can
        # only take it back (the app's Connection: close, a length unknown
        # to HTTP/1.0, a short body, a failure).
        self.keep_alive = request.keep_alive if keep_alive is None else keep_alive
        self.status: Optional[str] = None
        self.code = 0
        self.head: Optional[AppHead] = None
        self.head_done = False      # the head is serialized into the output
        self.flushed = False        # some output was handed to the socket
        self.no_body = False
        self.chunked = False
        self.length: Optional[int] = None
        self.body_bytes = 0         # body bytes produced (for the access log)
        self.file: Optional[Tuple[int, int, int]] = None   # (fd, offset, count) to sendfile
        self.done = False           # nothing more will be produced
        self.aborted = False        # failed after output left: drop the connection
        self._pending: List[bytes] = []
        self._pending_size = 0
        self._out: List[bytes] = []
        self._out_size = 0
        self._result: Any = None
        self._iterator: Any = None
        self._closed = False

    # -- what the app sees -------------------------------------------------

    def start_response(self, status: str, headers: List[Tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_done:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        self.head = app_head(status, headers)
        self.status, self.code = status, self.head.code
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy write() callable: buffered, since it cannot wait for the socket."""
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        self._body(data)

    # -- jobs (dispatcher) ---------------------------------------------------

    def run(self) -> None:
        try:
            self._result = self.app(self.environ, self.start_response)
            if isinstance(self._result, FileWrapper) and self._try_sendfile():
                return
            self._iterator = iter(self._result)
            self.pump()
        except Exception:
            self._fail()

    def pump(self) -> None:
        try:
            for data in self._iterator:
                if type(data) is not bytes:
                    raise TypeError(f"the app yielded {type(data).__name__}, not bytes")
                if data:
                    self._body(data)
                    if self._out_size >= self.high_water:
                        return
            self._finish()
        except Exception:
            self._fail()

    # -- what the connection calls (loop thread) ---------------------------

    def take_output(self) -> bytes:
        out = b"".join(self._out) if len(self._out) != 1 else self._out[0]
        self._out, self._out_size = [], 0
        if self.head_done:
            self.flushed = True
        return out

    def release(self) -> None:
        """The response is sent (or abandoned): close the app's iterable."""
        if self._closed:
            return
        self._closed = True
        result = self._result
        if type(result) is list:    # the usual body: no close(), and no AttributeError raised
            return
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("error closing the response of %s", self._request_line())

    # -- internals ---------------------------------------------------------

    def _body(self, data: bytes) -> None:
        if self.status is None:
            raise AssertionError("response body before start_response()")
        if not self.head_done:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size >= self.high_water:
                self._commit_head(None)
            return
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if self.no_body:
            return
        if self.length is not None:
            room = self.length - self.body_bytes
            if len(data) > room:
                data = data[:room]   # never more than the Content-Length the app declared
            if not data:
                return
        self.body_bytes += len(data)
        if self.chunked:
            data = chunk(data)
        self._out.append(data)
        self._out_size += len(data)

    def _commit_head(self, total: Optional[int]) -> None:
        request, code, app = self.request, self.code, self.head
        assert app is not None      # start_response ran: run() checks before any body
        self.no_body = request.method == "HEAD" or code in NO_BODY_STATUSES or code < 200
        if app.close:
            self.keep_alive = False
        if app.declared is not None and (code < 200 or code == 204):
            # RFC 9110 8.6: never a Content-Length on 1xx or 204.
            app = self.head = without_length(app)
        head = app.prefix + app.server
        if not app.has_date:
            head += date_header()
        if app.declared is not None:
            self.length = app.declared
        elif self.no_body:
            if request.method == "HEAD" and total and code not in NO_BODY_STATUSES:
                head += b"Content-Length: %d\r\n" % total
        elif total is not None:
            self.length = total
            head += b"Content-Length: %d\r\n" % total
        elif request.version == "HTTP/1.1":
            self.chunked = True
            head += b"Transfer-Encoding: chunked\r\n"
        else:
            self.keep_alive = False   # HTTP/1.0, length unknown: the close delimits it
        if not self.keep_alive:
            head += b"Connection: close\r\n\r\n"
        elif request.version == "HTTP/1.0":
            head += b"Connection: keep-alive\r\n\r\n"
        else:
            head += b"\r\n"
        self._out.append(head)
        self._out_size += len(head)
        self.head_done = True
        if self._pending:
            pending, self._pending, self._pending_size = self._pending, [], 0
            for data in pending:
                self._emit(data)

    def _finish(self) -> None:
        if not self.head_done:
            if self.status is None:
                raise AssertionError("the app returned without calling start_response()")
            self._commit_head(self._pending_size)
        if self.chunked:
            self._out.append(LAST_CHUNK)
        if self.length is not None and self.body_bytes < self.length and not self.no_body:
            logger.warning("%s: the app sent %d of the %d bytes its Content-Length declared; "
                           "closing the connection", self._request_line(), self.body_bytes,
                           self.length)
            self.keep_alive = False
        self.done = True

    def _try_sendfile(self) -> bool:
        wrapper = self._result
        fd = wrapper.fileno()
        if fd is None or self.status is None or self._pending or self.head_done:
            return False
        try:
            info = os.fstat(fd)
            offset = wrapper.filelike.tell() if hasattr(wrapper.filelike, "tell") else 0
        except (OSError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        count = max(0, info.st_size - offset)
        self._commit_head(count)
        if self.length is not None:
            if count < self.length:
                self.keep_alive = False   # short file: only the close can end the body
            count = min(count, self.length)
        if not self.no_body and count:
            self.file = (fd, offset, count)
            self.body_bytes = count
        self.done = True
        return True

    def _fail(self) -> None:
        logger.exception("error in the WSGI app serving %s", self._request_line())
        self.release()
        self.keep_alive = False
        self.done = True
        if self.flushed:
            self.aborted = True      # part of the response left: only a close can tell
            return
        self.code, self.head_done, self.file = 500, True, None
        self._out = [error_response(500)]
        self._out_size = len(self._out[0])
        self.body_bytes = len(self._out[0])

    def _request_line(self) -> str:
        return f'"{self.request.method} {self.request.target} {self.request.version}"'
