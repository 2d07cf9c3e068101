"""``GET /status`` at ``metrics_bind``: one status report and the request-rate history in,
one self-contained HTML page out (inline CSS and SVG, no script, no external resource).

:class:`History` is the master's small ring of (time, requests served so far)
samples, one every :data:`STEP` seconds for the last :data:`SPAN` seconds,
taken in its loop; it also keeps the last reports it sampled, so the page can
show per-worker req/s and busy % the way ``prefork top`` does (with
:func:`prefork.top.rows`).  :func:`render` is pure: report + history -> str.
Every string from the report is HTML-escaped (a request in progress can be
anything a client sent).
"""

from __future__ import annotations

import collections
import json
from html import escape
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from .top import Report, duration, row_cells, rows

CONTENT_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
STEP = 5.0          # seconds between two samples
SPAN = 600.0        # seconds of history kept (and drawn)
REFRESH = 5         # the page reloads itself every REFRESH seconds
CHART_W, CHART_H = 720, 140

Sample = Tuple[float, int]      # (monotonic time, requests the pool finished so far)


class History:
    """The pool's request count over time, sampled at most every ``step`` seconds."""

    def __init__(self, step: float = STEP, span: float = SPAN) -> None:
        self.step = step
        self.span = span
        self.samples: Deque[Sample] = collections.deque(maxlen=int(span // step) + 1)
        self.reports: Deque[Tuple[float, Report]] = collections.deque(maxlen=2)
        self._seen: Dict[int, int] = {}     # pid -> its requests at the last sample
        self._total = 0

    def resume(self, samples: Sequence[Sequence[float]]) -> None:
        """Go on from the samples of the master this one replaced (USR2), so the
        chart keeps its past; this master's workers count from 0 on top of them."""
        for taken, total in list(samples)[-(self.samples.maxlen or 1):]:
            self.samples.append((float(taken), int(total)))
        if self.samples:
            self._total = self.samples[-1][1]

    def due(self, now: float) -> bool:
        return not self.samples or now - self.samples[-1][0] >= self.step

    def add(self, now: float, report: Report) -> None:
        """Count what each worker finished since the last sample (a new one from 0):
        the total goes on across worker replacements."""
        counts = {w["pid"]: int(w.get("requests") or 0) for w in report.get("workers", ())}
        for pid, count in counts.items():
            self._total += max(0, count - self._seen.get(pid, 0))
        self._seen = counts
        self.samples.append((now, self._total))
        self.reports.append((now, report))

    def previous(self, now: float, min_age: float = 1.0) -> Optional[Tuple[float, Report]]:
        """The newest report sampled at least ``min_age`` seconds before ``now``."""
        for taken, report in reversed(self.reports):
            if now - taken >= min_age:
                return taken, report
        return None


def rates(samples: Sequence[Sample]) -> List[Tuple[float, float, float]]:
    """(start, end, requests per second) between each two consecutive samples."""
    found = []
    for (t0, n0), (t1, n1) in zip(samples, samples[1:]):
        if t1 > t0:
            found.append((t0, t1, max(0, n1 - n0) / (t1 - t0)))
    return found


def to_json(report: Report) -> str:
    """``/status.json``: the report as ``prefork status --json`` prints it."""
    return json.dumps(report, indent=2) + "\n"


def render(report: Report, samples: Sequence[Sample], now: float,
           previous: Optional[Tuple[float, Report]] = None,
           span: float = SPAN, refresh: int = REFRESH) -> str:
    """The page for ``report``; ``samples`` from :class:`History`, ``now`` on their clock;
    ``previous`` (time, report) gives per-worker rates over ``now - time``."""
    before, elapsed = (previous[1], now - previous[0]) if previous else (None, 0.0)
    title = f"prefork {report.get('pid', '?')} status"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else "",
        f"<title>{_e(title)}</title>", f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _summary(report),
        _listeners(report),
        f"<h2>Requests per second, last {duration(span)}</h2>",
        chart(samples, now, span),
        "<h2>Workers</h2>",
        _workers(report, before, elapsed),
        f'<p class="foot">refreshed every {int(refresh)} s; '
        '<a href="/status.json">/status.json</a> &middot; <a href="/metrics">/metrics</a></p>',
        "</body></html>", "",
    ]
    return "\n".join(p for p in parts if p is not None)


STYLE = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:20px;margin:0 0 .5em}h2{font-size:16px;margin:1.2em 0 .4em}"
    "table{border-collapse:collapse;background:#fff}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-variant-numeric:"
    "tabular-nums}th{background:#e8eef6;white-space:nowrap}td.n{text-align:right}"
    "tr.busy td{background:#fff4d6}dl{display:grid;grid-template-columns:max-content auto;"
    "gap:2px 14px;margin:0}dt{color:#555}dd{margin:0;font-weight:600}"
    "svg{background:#fff;border:1px solid #ccc}.foot{color:#666;font-size:12px}"
    "code{word-break:break-all}"
)


def _e(value: Any) -> str:
    return escape("-" if value is None else str(value), quote=True)


def _summary(report: Report) -> str:
    workers = report.get("workers", ())
    busy = sum(1 for w in workers if w.get("busy"))
    restarts = report.get("restarts") or {}
    items = [
        ("master", report.get("pid")), ("target", report.get("target")),
        ("generation", report.get("generation")),
        ("phase", f"{report.get('phase', '?')}"
                  f"{' (reloading)' if report.get('reloading') else ''}"),
        ("workers", f"{len(workers)} running / {report.get('workers_wanted', '?')} wanted, "
                    f"{busy} busy"),
        ("reloads", report.get("reloads")),
        ("restarts", ", ".join(f"{k} {v}" for k, v in sorted(restarts.items())) or "none"),
    ]
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<dl class="summary">{body}</dl>'


def _listeners(report: Report) -> str:
    listeners = report.get("listeners") or ()
    if not listeners:
        return ""
    lines = "".join(
        f"<tr><td>{_e(l.get('name'))}</td><td class=n>{_e(l.get('queue'))}</td>"
        f"<td class=n>{_e(l.get('backlog'))}</td></tr>" for l in listeners)
    return ("<h2>Listeners</h2><table><tr><th>listener</th><th>listen queue</th>"
            f"<th>backlog</th></tr>{lines}</table>")


WORKER_TITLES = ("PID", "generation", "state", "requests", "req/s", "busy %", "RSS",
                 "activity", "request in progress")


def _workers(report: Report, before: Optional[Report], elapsed: float) -> str:
    found = rows(before, report, elapsed)
    if not found:
        return "<p>no workers</p>"
    head = "".join(f"<th>{_e(t)}</th>" for t in WORKER_TITLES)
    lines = []
    for row in found:
        cells = row_cells(row)
        numeric = (0, 1, 3, 4, 5, 6)
        tds = "".join(
            f"<td class=n>{_e(c)}</td>" if i in numeric else
            f"<td><code>{_e(c)}</code></td>" if i == len(cells) - 1 and c != "-" else
            f"<td>{_e(c)}</td>" for i, c in enumerate(cells))
        busy = ' class="busy"' if row.activity.startswith("busy") else ""
        lines.append(f"<tr{busy}>{tds}</tr>")
    return f'<table class="workers"><tr>{head}</tr>{"".join(lines)}</table>'


def chart(samples: Sequence[Sample], now: float, span: float = SPAN) -> str:
    """An inline SVG bar chart of the request rate over the ``span`` seconds before ``now``."""
    w, h, top = CHART_W, CHART_H, 16
    found = [(a, b, r) for a, b, r in rates(samples) if b > now - span]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 18}" '
           f'viewBox="0 0 {w} {h + 18}" role="img" class="chart" '
           f'data-samples="{len(samples)}">']
    out.append(f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#888"/>')
    if not found:
        why = ("no samples yet" if not samples else
               f"{len(samples)} sample so far; a rate needs two")
        out.append(f'<text x="{w / 2:.0f}" y="{h / 2:.0f}" text-anchor="middle" '
                   f'fill="#777">{_e(why)} (one every few seconds)</text>')
    else:
        peak = max(r for _, _, r in found)
        scale = (h - top) / peak if peak > 0 else 0.0
        start = now - span
        for a, b, r in found:
            x0 = max(0.0, (a - start) / span * w)
            x1 = min(float(w), (b - start) / span * w)
            height = r * scale
            out.append(f'<rect x="{x0:.1f}" y="{h - height:.1f}" '
                       f'width="{max(1.0, x1 - x0 - 1):.1f}" height="{height:.1f}" '
                       f'fill="#3b7dd8"><title>{r:.1f} req/s</title></rect>')
        out.append(f'<text x="4" y="12" fill="#333" font-size="12">peak {peak:.1f} req/s, '
                   f'last {found[-1][2]:.1f} req/s</text>')
    out.append(f'<text x="2" y="{h + 14}" fill="#555" font-size="11">-{_e(duration(span))}'
               '</text>')
    out.append(f'<text x="{w - 2}" y="{h + 14}" fill="#555" font-size="11" '
               'text-anchor="end">now</text>')
    out.append("</svg>")
    return "".join(out)
