"""Worker -> master messages on one shared pipe.

Each message is 5 bytes (a kind byte and the worker PID), far below
PIPE_BUF, so concurrent writers never interleave.  The pipe only carries
events the master must act on promptly (ready, recycle); everything else
lives in the scoreboard.
"""

from __future__ import annotations

import os
import struct
from typing import List, Tuple

READY = b"R"
RECYCLE = b"M"
_MESSAGE = struct.Struct("=cI")


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

    def read(self) -> List[Tuple[bytes, int]]:
        data = self._partial
        while True:
            try:
                chunk = os.read(self._r, 64 * _MESSAGE.size)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        whole = len(data) - len(data) % _MESSAGE.size
        self._partial = data[whole:]
        return [_MESSAGE.unpack_from(data, i) for i in range(0, whole, _MESSAGE.size)]

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)

    # -- worker side ---------------------------------------------------------

    def close_read_end_in_child(self) -> None:
        os.close(self._r)

    def send(self, kind: bytes, pid: int) -> None:
        try:
            os.write(self._w, _MESSAGE.pack(kind, pid))
        except (BlockingIOError, BrokenPipeError):
            pass  # the master is gone or far behind; the scoreboard still tells
