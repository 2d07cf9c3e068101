"""Signals as bytes on a pipe, so they are handled in a loop, never in a handler.

Python's C-level handler writes each signal number to the wakeup fd; the
Python-level handlers installed here do no work (logging, fork, I/O of the
program's own), so nothing ever happens inside a handler that the loop
should do.  The loop selects on :attr:`fileno` and calls :meth:`read` to
learn which signals arrived, in order.

One exception is the handler's to make: an event loop (uvloop) points the
wakeup fd at a pipe of its own when it starts running, and the asyncio
worker points it back (:meth:`rearm`) on the loop's first pass.  A signal
in between would have its byte written to the other pipe and be lost; the
handler, which runs in any case, sees the wakeup fd is not this pipe's,
points it back and writes the byte here itself.
"""

from __future__ import annotations

import os
import signal
from typing import Iterable, List


class SignalPipe:
    """Route ``signals`` to a non-blocking pipe read by the owner's loop."""

    def __init__(self, signals: Iterable[int]) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._open = True
        self.signals = tuple(signals)
        for sig in self.signals:
            signal.signal(sig, self._in_handler)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def _in_handler(self, signum: int, frame: object) -> None:
        """Installed so the C-level handler writes the byte; the loop does the work.

        Only if the byte went to another pipe (see the module docstring) is it
        written here, once the wakeup fd points back.
        """
        if not self._open:
            return           # a forked child, before its own pipe: nothing listens
        if signal.set_wakeup_fd(self._w, warn_on_full_buffer=False) != self._w:
            try:
                os.write(self._w, bytes((signum,)))
            except BlockingIOError:
                pass         # full: the loop has bytes to read and will wake anyway

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
        self._open = False
        signal.set_wakeup_fd(-1)
        for sig in self.signals:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self._r)
        os.close(self._w)

    def close_fds_in_child(self) -> None:
        """In a fresh child: stop writing wakeups here and close the inherited fds."""
        self._open = False
        signal.set_wakeup_fd(-1)
        os.close(self._r)
        os.close(self._w)
