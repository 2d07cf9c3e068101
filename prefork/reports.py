"""Worker -> master messages on one shared pipe.

A message is a kind byte, the worker PID and an optional short text (why a
worker could not boot), at most PIPE_BUF bytes in all, so concurrent writers
never interleave.  The pipe only carries what the master must act on
promptly (ready, recycle, boot error); everything else is in the scoreboard.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import sysconfig
from typing import Iterable, List, Tuple

READY = b"R"
RECYCLE = b"M"
BOOT_ERROR = b"E"
_HEADER = struct.Struct("=cIH")     # kind, pid, text length
MAX_TEXT = 2048                     # well under PIPE_BUF (4096 on Linux)
_TRACED_FILE = re.compile(r'File "([^"<>]+)", line')


class ReportPipe:
    """Created by the master before the first fork; workers hold the write end."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._partial = b""
        # --reload: where each worker writes the files of its modules (set by the master).
        self.modules_dir = ""

    # -- master side ---------------------------------------------------------

    def fileno(self) -> int:
        return self._r

    def read(self) -> List[Tuple[bytes, int, str]]:
        """Whole messages received so far: (kind, pid, text)."""
        data = self._partial
        while True:
            try:
                chunk = os.read(self._r, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        messages = []
        offset = 0
        while len(data) - offset >= _HEADER.size:
            kind, pid, length = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            if end > len(data):
                break
            text = data[offset + _HEADER.size:end].decode("utf-8", "replace")
            messages.append((kind, pid, text))
            offset = end
        self._partial = data[offset:]
        return messages

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)

    # -- worker side ---------------------------------------------------------

    def close_read_end_in_child(self) -> None:
        os.close(self._r)

    def send(self, kind: bytes, pid: int, text: str = "") -> None:
        payload = text.encode("utf-8", "replace")[:MAX_TEXT]
        try:
            os.write(self._w, _HEADER.pack(kind, pid, len(payload)) + payload)
        except (BlockingIOError, BrokenPipeError):
            pass  # the master is gone or far behind; the scoreboard still tells

    def report_modules(self, pid: int, error: str = "") -> None:
        """--reload: write the source files of the modules loaded (and the files a
        boot error's traceback names) where the master reads them; else nothing."""
        if not self.modules_dir:
            return
        files = module_files(sys.modules.values(), _TRACED_FILE.findall(error))
        path = os.path.join(self.modules_dir, str(pid))
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as out:
                out.write("\n".join(files))
            os.replace(path + ".tmp", path)
        except OSError:
            pass    # no reload on change of these files: not worth a failed worker


def module_files(modules: Iterable[object], extra: Iterable[str] = ()) -> List[str]:
    """The application's own source files among ``modules``' (and ``extra``):
    not the standard library's, not installed packages', not prefork's own."""
    skipped = {os.path.realpath(sysconfig.get_paths()[k]) + os.sep
               for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    skipped.add(os.path.dirname(os.path.realpath(__file__)) + os.sep)
    found = set()
    names = [getattr(m, "__file__", None) for m in modules] + list(extra)
    for name in names:
        if not isinstance(name, str) or not name.endswith((".py", ".pyw")):
            continue
        path = os.path.realpath(name)
        if path.startswith(tuple(skipped)) or os.sep + "site-packages" + os.sep in path \
                or os.sep + "dist-packages" + os.sep in path or not os.path.isfile(path):
            continue
        found.add(path)
    return sorted(found)
