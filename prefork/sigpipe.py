"""Signals as bytes on a pipe, so they are handled in a loop, never in a handler.

Python's C-level handler writes each signal number to the wakeup fd; the
Python-level handlers installed here do nothing, so no work (logging, fork,
I/O) ever happens inside a handler.  The loop selects on :attr:`fileno` and
calls :meth:`read` to learn which signals arrived, in order.
"""

from __future__ import annotations

import os
import signal
from typing import Iterable, List


def _ignore_in_handler(signum: int, frame: object) -> None:
    """Installed so the wakeup fd gets the byte; the loop does the work."""


class SignalPipe:
    """Route ``signals`` to a non-blocking pipe read by the owner's loop."""

    def __init__(self, signals: Iterable[int]) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.signals = tuple(signals)
        for sig in self.signals:
            signal.signal(sig, _ignore_in_handler)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def fileno(self) -> int:
        return self._r

    def rearm(self) -> None:
        """Point the wakeup fd back here, after an event loop (uvloop) took it over."""
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def read(self) -> List[int]:
        received: List[int] = []
        while True:
            try:
                data = os.read(self._r, 512)
            except BlockingIOError:
                return received
            if not data:
                return received
            received.extend(data)

    def close(self) -> None:
        """Detach from the signal machinery and close both ends."""
        signal.set_wakeup_fd(-1)
        for sig in self.signals:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self._r)
        os.close(self._w)

    def close_fds_in_child(self) -> None:
        """In a fresh child: stop writing wakeups here and close the inherited fds."""
        signal.set_wakeup_fd(-1)
        os.close(self._r)
        os.close(self._w)
