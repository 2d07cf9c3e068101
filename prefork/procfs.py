"""What Linux's /proc says about a process: one reader for the master and the commands.

Every function answers for a process that may have just exited: a value
that cannot be read is 0, an empty list, or None, never an exception.
"""

from __future__ import annotations

import os
from typing import List, Optional

_PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> Optional[List[bytes]]:
    """/proc/PID/stat's fields after the command name, field 3 (state) first.

    The name is in parentheses and may itself hold spaces and ')', so the
    split is made after the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def state(pid: int) -> Optional[str]:
    """The one-letter state (R, S, Z...), None if there is no such process."""
    fields = stat_fields(pid)
    return fields[0].decode() if fields else None


def start_ticks(pid: int) -> Optional[int]:
    """When ``pid`` started, in clock ticks since boot."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def boot_time() -> Optional[int]:
    try:
        with open("/proc/stat", "rb") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def start_time(pid: int) -> float:
    """When ``pid`` started, in seconds since the Unix epoch (0.0 if /proc cannot tell).

    /proc/PID/stat gives it in clock ticks since boot; /proc/stat's btime is
    the boot time, which is how process exporters compute it too.
    """
    ticks, boot = start_ticks(pid), boot_time()
    if ticks is None or boot is None:
        return 0.0
    return boot + ticks / TICKS


def uptime() -> float:
    """Seconds since boot."""
    with open("/proc/uptime", "rb") as f:
        return float(f.read().split()[0])


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``, 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            return [int(child) for child in f.read().split()]
    except (OSError, ValueError):
        return []


def command_line(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None


def signal_pending(pid: int, sig: int) -> Optional[bool]:
    """Whether ``sig`` waits to be taken by ``pid`` (ShdPnd), None if unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"ShdPnd:"):
                    return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    except (OSError, ValueError, IndexError):
        pass
    return None
