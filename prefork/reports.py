"""Worker -> master messages on one shared pipe.

A message is a kind byte, the worker PID and an optional short text (why a
worker could not boot), at most PIPE_BUF bytes in all, so concurrent writers
never interleave.  The pipe only carries what the master must act on
promptly (ready, recycle, boot error); everything else is in the scoreboard.
"""

from __future__ import annotations

import os
import struct
from typing import List, Tuple

READY = b"R"
RECYCLE = b"M"
BOOT_ERROR = b"E"
_HEADER = struct.Struct("=cIH")     # kind, pid, text length
MAX_TEXT = 2048                     # well under PIPE_BUF (4096 on Linux)


class ReportPipe:
    """Created by the master before the first fork; workers hold the write end."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._partial = b""

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
