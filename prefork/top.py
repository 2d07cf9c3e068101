"""``prefork top``, the part without a terminal: status reports in, lines of text out.

:class:`Top` keeps the last two reports the master gave (the same report
``prefork status --json`` prints) and the operator's sort choice.  Rates
are differences between the two: requests per second from each worker's
``requests``, busy % from its ``busy_seconds`` plus the request in flight
(``busy_seconds`` grows only when a request ends).  :meth:`Top.lines`
lays it out for a screen of a given size; the curses loop is in
:mod:`prefork.top_screen`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

Report = Dict[str, Any]

# The sort keys, in the order the ``s`` key cycles through them.
SORTS = ("pid", "req/s", "busy", "rss", "requests")
KEYS = "q quit  s sort  r reverse"


@dataclass(frozen=True)
class Row:
    """One worker's line, as values (None where the report cannot tell)."""

    pid: int
    generation: Optional[int]
    state: str
    requests: Optional[int]
    rate: Optional[float]       # requests per second since the last report
    busy: Optional[float]       # % of the time since the last report with a request in flight
    rss: int
    activity: str               # "busy 3s", "idle 40s" or "-"
    doing: str                  # the request in progress, where the master knows it


def busy_total(worker: Dict[str, Any]) -> Optional[float]:
    """Seconds ``worker`` spent with a request in flight, counting the one running now."""
    done = worker.get("busy_seconds")
    if done is None:
        return None
    return float(done) + (float(worker.get("for") or 0.0) if worker.get("busy") else 0.0)


def rows(previous: Optional[Report], current: Report, elapsed: float) -> List[Row]:
    """The workers of ``current``, with rates over the ``elapsed`` seconds since ``previous``."""
    before = {w["pid"]: w for w in (previous or {}).get("workers", ())}
    found = []
    for w in current.get("workers", ()):
        old = before.get(w["pid"])
        rate = busy = None
        if old is not None and elapsed > 0:
            if w.get("requests") is not None and old.get("requests") is not None:
                rate = max(0, w["requests"] - old["requests"]) / elapsed
            now_busy, then_busy = busy_total(w), busy_total(old)
            if now_busy is not None and then_busy is not None:
                busy = min(100.0, max(0.0, (now_busy - then_busy) / elapsed * 100))
        if w.get("busy") is None:
            activity = "-"
        else:
            activity = f"{'busy' if w['busy'] else 'idle'} {duration(w.get('for'))}"
        doing = str(w.get("doing") or "")
        if doing and w.get("doing_for") is not None:
            doing = f"{duration(w['doing_for'])} {doing}"
        found.append(Row(w["pid"], w.get("generation"), str(w.get("state", "?")),
                         w.get("requests"), rate, busy, int(w.get("rss") or 0), activity,
                         doing))
    return found


def sort_rows(found: Sequence[Row], key: str, reverse: bool = False) -> List[Row]:
    """By ``key`` (one of :data:`SORTS`): PIDs ascending, the others largest first;
    ``reverse`` flips that.  Unknown values (None) go last either way."""
    attribute = {"pid": "pid", "req/s": "rate", "busy": "busy", "rss": "rss",
                 "requests": "requests"}[key]
    descending = (key != "pid") != reverse
    known = [r for r in found if getattr(r, attribute) is not None]
    unknown = [r for r in found if getattr(r, attribute) is None]
    known.sort(key=lambda r: (getattr(r, attribute), -r.pid if descending else r.pid),
               reverse=descending)
    return known + sorted(unknown, key=lambda r: r.pid)


# (title, width, sort key it shows); the last column takes what is left.
COLUMNS = (("PID", 8, "pid"), ("GEN", 4, None), ("STATE", 9, None),
           ("REQS", 9, "requests"), ("REQ/S", 8, "req/s"), ("BUSY%", 6, "busy"),
           ("RSS", 8, "rss"), ("ACTIVITY", 11, None), ("REQUEST", 0, None))


def row_cells(row: Row) -> List[str]:
    return [str(row.pid), _or_dash(row.generation), row.state, _or_dash(row.requests),
            "-" if row.rate is None else f"{row.rate:.1f}",
            "-" if row.busy is None else f"{row.busy:.0f}", size(row.rss), row.activity,
            row.doing or "-"]


def header_lines(report: Report, gone: str = "") -> List[str]:
    """The master's summary: who, which generation, pool, reloads, listen queues."""
    workers = report.get("workers", ())
    wanted = report.get("workers_wanted", "?")
    busy = sum(1 for w in workers if w.get("busy"))
    first = (f"master {report.get('pid', '?')}  generation {report.get('generation', '?')}  "
             f"{report.get('phase', '?')}{'  reloading' if report.get('reloading') else ''}"
             f"  workers {len(workers)}/{wanted}  busy {busy}  "
             f"reloads {_or_dash(report.get('reloads'))}")
    queues = []
    for listener in report.get("listeners", ()):
        queue, backlog = listener.get("queue"), listener.get("backlog")
        queues.append(f"{listener.get('name', '?')} queue {_or_dash(queue)}/{_or_dash(backlog)}")
    lines = [first, "listen " + ("  ".join(queues) if queues else "-")]
    if report.get("note"):
        lines.append(str(report["note"]))
    if gone:
        lines.append(f"MASTER GONE: {gone}")
    return lines


class Top:
    """What the screen shows: the last two reports and the sort the operator chose."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.previous: Optional[Report] = None
        self.current: Optional[Report] = None
        self.elapsed = 0.0
        self._taken = 0.0
        self.sort = 0           # index into SORTS
        self.reverse = False
        self.gone = ""          # why the master cannot be reached any more

    def update(self, report: Report, taken: float) -> None:
        """A new report, fetched at ``taken`` (a monotonic time)."""
        if self.current is not None and report.get("pid") != self.current.get("pid"):
            self.current = None     # another master (an upgrade): no rate across it
        self.previous, self.current = self.current, report
        self.elapsed = taken - self._taken if self.previous is not None else 0.0
        self._taken = taken

    def lost(self, why: str) -> None:
        self.gone = why or "the master cannot be reached"

    def key(self, char: str) -> bool:
        """Handle one key press; True means quit."""
        if char in ("q", "Q"):
            return True
        if char == "s":
            self.sort = (self.sort + 1) % len(SORTS)
            self.reverse = False
        elif char == "r":
            self.reverse = not self.reverse
        return False

    def lines(self, width: int, height: int) -> List[str]:
        """The screen: at most ``height`` lines, none wider than ``width``."""
        key = SORTS[self.sort]
        order = "ascending" if (key == "pid") != self.reverse else "descending"
        if self.current is None:
            out = ["waiting for the master..."] + ([f"MASTER GONE: {self.gone}"]
                                                   if self.gone else [])
        else:
            out = header_lines(self.current, self.gone)
        out.append(f"sort {key} {order}  every {self.interval:g}s  keys: {KEYS}")
        out.append("")
        titles = [f"{title}*" if shows == key else title for title, _, shows in COLUMNS]
        out.append(_layout(titles))
        if self.current is not None:
            found = rows(self.previous, self.current, self.elapsed)
            out += [_layout(row_cells(r)) for r in sort_rows(found, key, self.reverse)]
        return [line[:max(0, width)] for line in out[:max(0, height)]]


def _layout(cells: Sequence[str]) -> str:
    parts = []
    for cell, (_, width, _) in zip(cells, COLUMNS):
        parts.append(cell.ljust(width - 1)[:max(width - 1, 0)] + " " if width else cell)
    return "".join(parts).rstrip()


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def duration(seconds: Optional[float]) -> str:
    """3s, 7m, 2h05m, the way ``prefork status`` shows them."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def size(value: int) -> str:
    return f"{value / 1048576:.1f}M" if value else "-"
