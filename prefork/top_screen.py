"""``prefork top``'s terminal loop: curses, a report every interval, keys between.

All that is shown is computed by :class:`prefork.top.Top`; this module only
fetches (through the callable the command passes, the same road ``prefork
status`` takes), reads keys and paints lines.
"""

from __future__ import annotations

import curses
import locale
import time
from typing import Any, Callable, Dict

from .errors import EXIT_FAILURE, EXIT_OK, PreforkError
from .top import Top

Fetch = Callable[[], Dict[str, Any]]

# Once the master is gone, the last screen stays this long (or until q), then exit 1.
GONE_LINGER = 3.0
KEY_WAIT_MS = 100


def run(fetch: Fetch, interval: float) -> int:
    """Show the pool until ``q`` (exit 0) or until the master is gone (exit 1)."""
    top = Top(interval)
    top.update(fetch(), time.monotonic())   # no master at all: the error, before any screen
    locale.setlocale(locale.LC_ALL, "")
    return curses.wrapper(_loop, top, fetch)


def _loop(screen: Any, top: Top, fetch: Fetch) -> int:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    screen.timeout(KEY_WAIT_MS)
    next_fetch = time.monotonic() + top.interval
    gone_at = 0.0
    _paint(screen, top)
    while True:
        key = screen.getch()
        if key != -1:
            if 0 <= key < 256 and top.key(chr(key)):
                return EXIT_FAILURE if top.gone else EXIT_OK
            _paint(screen, top)
        now = time.monotonic()
        if top.gone:
            if now - gone_at >= GONE_LINGER:
                return EXIT_FAILURE
            continue
        if now >= next_fetch:
            next_fetch = max(next_fetch + top.interval, now)
            try:
                top.update(fetch(), time.monotonic())
            except PreforkError as exc:
                top.lost(str(exc))
                gone_at = now
            _paint(screen, top)


def _paint(screen: Any, top: Top) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    # The bottom-right cell cannot be written without an error: one column short.
    for y, line in enumerate(top.lines(width - 1, height)):
        try:
            screen.addstr(y, 0, line)
        except curses.error:
            pass
    screen.refresh()
