"""Whether a worker is healthy, and why one is gone: pure judgements, no I/O.

On each Tick, two kinds of verdict.  A *stuck* worker (no heartbeat for ``timeout``, or one
request running past ``request_timeout``) cannot be trusted to stop by
itself, so the arbiter aborts it (faulthandler dumps its traceback) and
KILLs it.  A worker *over max_rss* is healthy but bloated: it is recycled
like one that reached max_requests, so its requests in flight finish.
When a worker exits, :func:`exit_reason` names why, for the restart counters,
and :func:`backoff_delay` spaces out the boots of a crash loop.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Optional

from .events import Tick
from .worker_record import Worker

MIB = 1 << 20
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class Limits:
    """The config values the checks use; 0 turns request_timeout or max_rss off."""

    timeout: float
    request_timeout: float = 0.0
    max_rss: int = 0            # MiB


@dataclass(frozen=True)
class Verdict:
    reason: str     # "timeout" or "request_timeout" (abort), "max_rss" (recycle)
    text: str       # for the log, naming the worker and what was seen


def stuck(w: Worker, tick: Tick, now: float, limits: Limits) -> Optional[Verdict]:
    """Abort ``w``?  A request past request_timeout is named before a missing heartbeat:
    a sync worker stuck in a request has both, and the request is the useful part."""
    since, what = tick.requests.get(w.pid, (0.0, ""))
    if limits.request_timeout and since and now - since > limits.request_timeout:
        return Verdict("request_timeout",
                       f"{w.label()} exceeded request_timeout ({float(limits.request_timeout)} "
                       f"s): {what or 'a request'} running for {now - since:.1f} s")
    last = max(w.started, tick.heartbeats.get(w.pid, 0.0))
    if now - last > limits.timeout:
        state = "still booting" if not w.ready else "no heartbeat"
        return Verdict("timeout", f"{w.label()} timed out ({state} for {now - last:.1f} s)")
    return None


def over_memory(w: Worker, tick: Tick, limits: Limits) -> Optional[Verdict]:
    """Recycle ``w``?  Only a ready worker not already on its way out: one still
    booting has not settled, and one already replaced must not be replaced twice.

    A worker over the limit before it served anything says the limit is
    below what a fresh worker needs: every replacement would be recycled in
    turn, a churn that only costs.  That verdict is "max_rss_unreachable".
    """
    if not limits.max_rss or not w.ready or w.replaceable:
        return None
    rss = tick.rss.get(w.pid, 0)
    if rss <= limits.max_rss * MIB:
        return None
    if tick.served.get(w.pid) == 0:
        return Verdict("max_rss_unreachable",
                       f"{w.label()} uses {rss / MIB:.1f} MiB before serving any request, "
                       f"over max_rss ({limits.max_rss} MiB): replacements would start as big, "
                       "so max_rss is off until the next reload; raise it")
    return Verdict("max_rss", f"{w.label()} uses {rss / MIB:.1f} MiB, over max_rss "
                              f"({limits.max_rss} MiB); starting its replacement")


def exit_reason(w: Worker, stopping: bool) -> str:
    """Why a worker that just exited had to go; "" for a stop of the whole pool."""
    if stopping or w.why_stopped == "stop":
        return ""
    if w.why_stopped == "retired":
        return w.recycle or ("reload" if w.outgoing else "scale")
    if w.why_stopped:
        return w.why_stopped          # one of ABORTED
    return "crash" if w.ready else "boot_failure"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def backoff_delay(failures: int) -> float:
    """Seconds to wait before the next boot after ``failures`` in a row."""
    if failures <= 1:
        return 0.0
    return min(BACKOFF_MAX, 0.5 * 2 ** (failures - 2))
