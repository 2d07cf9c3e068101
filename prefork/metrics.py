"""The status snapshot as Prometheus text exposition format 0.0.4.

:func:`render` is pure: it turns the dict of
:func:`prefork.supervisor.status.snapshot` (or the smaller one ``prefork
status`` builds from /proc) into text.  The master serves it at
``metrics_bind``; ``prefork status --format prometheus`` prints it.

Per-listener series (the accept queue and its backlog) carry a
``listener`` label, the name the master logs; a listener whose queue the
master cannot read (datagram, reuse_port) has none.

Per-worker series carry ``pid`` and ``generation`` labels.  A replaced
worker's series ends and its replacement's starts at 0: Prometheus treats
that like any counter reset, so ``sum(rate(...))`` over the pool is right.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Exit reasons emitted even at 0, so that rate() and increase() see the series
# from the first scrape, not only after the first such exit.
RESTART_REASONS = ("max_requests", "max_rss", "timeout", "request_timeout", "crash",
                   "boot_failure", "reload", "scale")

Labels = Mapping[str, object]
Sample = Tuple[Labels, float]


class Exposition:
    """Accumulates metric families; each is a HELP line, a TYPE line and its samples."""

    def __init__(self) -> None:
        self._lines: List[str] = []

    def add(self, name: str, kind: str, help_text: str,
            samples: Iterable[Sample]) -> None:
        lines = [f"{name} {_value(value)}" if not labels else
                 f"{name}{{{_labels(labels)}}} {_value(value)}"
                 for labels, value in samples if value is not None]
        if not lines:
            return    # a family with no sample says nothing; leave it out
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        self._lines.extend(lines)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n" if self._lines else ""


def render(report: Mapping[str, Any]) -> str:
    """Prometheus text for one status report; fields the report lacks are left out."""
    out = Exposition()
    workers: List[Dict[str, Any]] = list(report.get("workers", ()))
    # A report without the master's phase was read from /proc (no control
    # socket): it knows processes and memory, not states or activity.
    from_master = "phase" in report

    out.add("prefork_master_info", "gauge", "The master's PID and target; always 1.",
            [({"pid": report.get("pid"), "target": report.get("target", "")}, 1)])
    out.add("prefork_master_start_time_seconds", "gauge",
            "When the master started, in seconds since the Unix epoch.",
            [({}, report.get("started") or None)])
    out.add("prefork_master_rss_bytes", "gauge", "Resident memory of the master.",
            [({}, report.get("rss"))])
    out.add("prefork_generation", "gauge",
            "The current worker generation (1 at start, one more per reload).",
            [({}, report.get("generation"))])
    out.add("prefork_reloads_total", "counter", "Reloads started since the master started.",
            [({}, report.get("reloads"))])
    out.add("prefork_workers_wanted", "gauge", "The pool size the master keeps.",
            [({}, report.get("workers_wanted"))])
    if report.get("workers_max"):
        out.add("prefork_workers_floor", "gauge",
                "The adaptive pool's floor (-w, moved by TTIN/TTOU and scale).",
                [({}, report.get("workers_floor"))])
        out.add("prefork_workers_max", "gauge", "The adaptive pool's ceiling (max_workers).",
                [({}, report.get("workers_max"))])
        steps = report.get("pool_steps") or {}
        out.add("prefork_pool_steps_total", "counter",
                "Steps the adaptive pool took, by direction (grow, shrink).",
                [({"direction": d}, steps.get(d, 0)) for d in ("grow", "shrink")])
    out.add("prefork_workers_alive", "gauge", "Worker processes running.",
            [({}, len(workers))])
    if from_master:
        out.add("prefork_workers_ready", "gauge", "Workers ready and serving.",
                [({}, sum(1 for w in workers if w.get("state") == "ready"))])
        out.add("prefork_workers_busy", "gauge", "Workers with a request in progress.",
                [({}, sum(1 for w in workers if w.get("busy")))])
    restarts = report.get("restarts")
    if restarts is not None:
        reasons = dict.fromkeys(RESTART_REASONS, 0)
        reasons.update(restarts)
        out.add("prefork_worker_restarts_total", "counter",
                "Workers that exited while the pool kept running, by reason.",
                [({"reason": reason}, count) for reason, count in reasons.items()])

    def per_worker(key: str) -> List[Sample]:
        return [({"pid": w["pid"], "generation": _or_empty(w.get("generation"))}, w.get(key))
                for w in workers]

    out.add("prefork_worker_requests_total", "counter",
            "Requests (connections, for handler classes) a worker has finished.",
            per_worker("requests"))
    out.add("prefork_worker_busy_seconds_total", "counter",
            "Time a worker spent with at least one request in progress.",
            per_worker("busy_seconds"))
    out.add("prefork_worker_rss_bytes", "gauge", "Resident memory of a worker.",
            per_worker("rss"))
    listeners: List[Dict[str, Any]] = list(report.get("listeners", ()))
    out.add("prefork_listen_queue_length", "gauge",
            "Connections waiting in a listener's accept queue, not yet taken by a worker.",
            [({"listener": l["name"]}, l.get("queue")) for l in listeners])
    out.add("prefork_listen_queue_backlog", "gauge",
            "A listener's backlog: the accept queue length at which the kernel "
            "stops taking new connections.",
            [({"listener": l["name"]}, l.get("backlog")) for l in listeners])
    return out.text()


def _or_empty(value: Optional[object]) -> object:
    return "" if value is None else value


def _labels(labels: Labels) -> str:
    return ",".join(f'{name}="{_escape_label(str(value))}"' for name, value in labels.items())


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
