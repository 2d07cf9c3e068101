"""The master's decisions: a state machine with no I/O.

:meth:`Arbiter.decide` takes an event (see :mod:`.events`) and the current
monotonic time and returns the actions the shell must perform.  It never
forks, signals, sleeps or reads a clock, so every rule of the signal table is
a fast unit test.

The pool is kept by one rule, :meth:`Arbiter._reconcile`, run after every
event: the *current* generation must have ``target`` live workers; workers
marked for replacement (an older generation during a reload, or one that hit
max_requests or max_rss) are retired only once ``target`` current workers are
ready.  A reload and a recycle are therefore the same motion, and capacity
never dips.  Whether a worker is stuck or bloated is judged in :mod:`.health`.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from typing import Dict, List, Optional

from ..errors import EXIT_OK, EXIT_TARGET
from . import health
from .events import (ChildExited, CloseListeners, Exit, Kill, Log, Notify, RecycleWanted,
                     Reload, ReloadFailed, ReopenLogs, Scale, Signal, Spawn, Spawned,
                     SpawnFailed, Start, Tick, WorkerReady)
from .health import ABORTED, backoff_delay, describe_exit

RUNNING, STOPPING = "running", "stopping"
ABORT_GRACE = 2.0       # seconds faulthandler gets to dump a traceback before KILL
FAST_STOP_GRACE = 2.0   # seconds a QUIT worker gets before KILL


@dataclass
class Worker:
    pid: int
    generation: int
    slot: int
    started: float
    ready: bool = False
    outgoing: bool = False      # its generation is being replaced by a reload
    recycle: str = ""           # why it is to be replaced: "max_requests", "max_rss"
    retiring: bool = False      # told to stop (TERM or QUIT): not counted any more
    why_stopped: str = ""       # "retired", "stop", or one of ABORTED: why we signalled it
    escalate_at: Optional[float] = None   # when to KILL if still alive
    dump_first: bool = False    # graceful deadline: SIGABRT (a traceback), then KILL
    dumped: bool = False        # that SIGABRT was sent
    killed: bool = False

    @property
    def replaceable(self) -> bool:
        return self.outgoing or bool(self.recycle)

    def label(self) -> str:
        return f"worker {self.pid} (gen {self.generation})"


class Arbiter:
    """Decides what the master does; see the module docstring.

    ``capacity`` is the number of scoreboard slots; the other keywords are
    the config values of the same names.
    """

    def __init__(self, workers: int, *, capacity: int, timeout: float,
                 graceful_timeout: float, request_timeout: float = 0.0,
                 max_rss: int = 0) -> None:
        self.target = workers
        self.capacity = capacity
        self.limits = health.Limits(timeout, request_timeout, max_rss)
        self.graceful_timeout = graceful_timeout
        self.workers: Dict[int, Worker] = {}
        self.spawning: Dict[int, int] = {}      # slot -> generation, fork under way
        self.generation = 1                     # the generation spawned into now
        self.last_generation = 1
        self.stable = 0                         # last generation that came fully up
        self.phase = RUNNING
        self.exit_status = EXIT_OK
        self.boot_failures = 0
        self.next_spawn_at = 0.0
        self._full_logged = False
        self._request_deadline: Optional[float] = None   # the first request_timeout due
        # Worker exits by reason, for the metrics; see health.exit_reason.
        self.restarts: Dict[str, int] = {}
        self.reloads = 0
        # Pool settings of the stable generation, restored if a reload aborts.
        self._stable_settings = (workers, self.limits, graceful_timeout)

    # -- the one entry point -------------------------------------------------

    def decide(self, event: object, now: float) -> List[object]:
        handler = getattr(self, "_on_" + type(event).__name__)
        actions: List[object] = handler(event, now)
        if self.phase == STOPPING:
            if not self.workers and not self.spawning:
                actions.append(Exit(self.exit_status))
        else:
            actions.extend(self._reconcile(now))
        return actions

    def next_deadline(self) -> Optional[float]:
        """The earliest time a Tick would make a difference, if any."""
        times = [w.escalate_at for w in self.workers.values() if w.escalate_at is not None]
        if self._request_deadline is not None:
            times.append(self._request_deadline)
        if self.boot_failures and self.phase == RUNNING and not self._probe_booting():
            times.append(self.next_spawn_at)
        return min(times) if times else None

    @property
    def reloading(self) -> bool:
        return self.generation != self.stable

    # -- events --------------------------------------------------------------

    def _on_Start(self, event: Start, now: float) -> List[object]:
        return [Log("info", f"starting generation {self.generation} with {self.target} workers")]

    def _on_Spawned(self, event: Spawned, now: float) -> List[object]:
        self.spawning.pop(event.slot, None)
        w = Worker(event.pid, event.generation, event.slot, now)
        self.workers[event.pid] = w
        if self.phase == STOPPING:
            w.retiring, w.why_stopped, w.escalate_at = True, "stop", now + FAST_STOP_GRACE
            return [Kill(w.pid, signal.SIGQUIT)]
        return [Log("debug", f"booting worker {event.pid} (gen {event.generation})")]

    def _on_SpawnFailed(self, event: SpawnFailed, now: float) -> List[object]:
        self.spawning.pop(event.slot, None)
        return self._boot_failed(event.generation, f"could not be forked: {event.reason}", now)

    def _on_WorkerReady(self, event: WorkerReady, now: float) -> List[object]:
        w = self.workers.get(event.pid)
        if w is None or w.ready:
            return []
        w.ready = True
        if w.generation == self.generation:
            self.boot_failures = 0
        return [Log("debug", f"{w.label()} is ready")]

    def _on_RecycleWanted(self, event: RecycleWanted, now: float) -> List[object]:
        w = self.workers.get(event.pid)
        if w is None or w.retiring or w.recycle:
            return []
        w.recycle = "max_requests"
        return [Log("info", f"{w.label()} reached max_requests; starting its replacement")]

    def _on_ChildExited(self, event: ChildExited, now: float) -> List[object]:
        w = self.workers.pop(event.pid, None)
        if w is None:
            return []
        reason = health.exit_reason(w, self.phase == STOPPING)
        if reason:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1
        how = describe_exit(event.code)
        if self.phase == STOPPING or w.why_stopped in ("retired", "stop"):
            return [Log("debug", f"{w.label()} {how}")]
        if not w.ready:
            return self._boot_failed(w.generation, f"{w.label()} {how} before it was ready",
                                     now, code=event.code)
        if w.why_stopped in ABORTED:
            return [Log("info", f"{w.label()} {how} after its {w.why_stopped}; replacing it")]
        if w.generation != self.generation:
            return [Log("warning", f"{w.label()} {how} unexpectedly (its generation is "
                                   "being replaced)")]
        return [Log("warning", f"{w.label()} {how} unexpectedly; replacing it")]

    def _on_Tick(self, event: Tick, now: float) -> List[object]:
        actions: List[object] = []
        for w in self.workers.values():
            if w.killed:
                continue
            if w.escalate_at is not None:    # already being stopped: only its deadline counts
                actions += self._escalate(w, now)
                continue
            verdict = health.stuck(w, event, now, self.limits)
            if verdict is not None:
                actions += [Log("error", f"{verdict.text}; dumping its traceback, then "
                                         "killing it"), Kill(w.pid, signal.SIGABRT)]
                w.why_stopped, w.escalate_at = verdict.reason, now + ABORT_GRACE
                w.retiring = True
                continue
            verdict = health.over_memory(w, event, self.limits)
            if verdict is not None and verdict.reason == "max_rss_unreachable":
                self.limits = replace(self.limits, max_rss=0)
                actions.append(Log("error", verdict.text))
            elif verdict is not None:
                w.recycle = verdict.reason
                actions.append(Log("warning", verdict.text))
        self._request_deadline = self._first_request_due(event)
        return actions

    def _first_request_due(self, tick: Tick) -> Optional[float]:
        """When the oldest running request passes request_timeout, as this Tick saw
        them: the master wakes then, so the limit holds to the moment, not to the
        next one-second tick."""
        if not self.limits.request_timeout:
            return None
        starts = [tick.requests[w.pid][0] for w in self.workers.values()
                  if w.escalate_at is None and w.pid in tick.requests and tick.requests[w.pid][0]]
        return min(starts) + self.limits.request_timeout if starts else None

    def _escalate(self, w: Worker, now: float) -> List[object]:
        if now < w.escalate_at:
            return []
        if w.dump_first:
            # Still busy after graceful_timeout: whatever holds it is what the
            # operator needs to see, so faulthandler dumps it before the KILL.
            w.dump_first, w.dumped, w.escalate_at = False, True, now + ABORT_GRACE
            return [Log("error", f"{w.label()} did not stop within graceful_timeout "
                                 f"({float(self.graceful_timeout)} s); dumping its traceback, "
                                 "then killing it"), Kill(w.pid, signal.SIGABRT)]
        w.killed, w.escalate_at = True, None
        if w.why_stopped in ABORTED or w.dumped:     # the KILL was announced with the abort
            return [Kill(w.pid, signal.SIGKILL)]
        return [Kill(w.pid, signal.SIGKILL),
                Log("warning", f"{w.label()} did not stop in time; killed")]

    def _on_Signal(self, event: Signal, now: float) -> List[object]:
        sig = event.sig
        if sig == signal.SIGTERM:
            return self._stop(graceful=True, now=now)
        if sig in (signal.SIGINT, signal.SIGQUIT):
            return self._stop(graceful=False, now=now)
        if self.phase == STOPPING:
            return []
        if sig == signal.SIGTTIN:
            self.target += 1
            return [Log("info", f"TTIN: pool size {self.target}")]
        if sig == signal.SIGTTOU:
            if self.target == 1:
                return [Log("info", "TTOU: the pool is at its minimum of 1 worker")]
            self.target -= 1
            return [Log("info", f"TTOU: pool size {self.target}")]
        if sig == signal.SIGUSR1:
            return [ReopenLogs()] + [Kill(pid, signal.SIGUSR1) for pid in self.workers]
        return []

    def _on_Scale(self, event: Scale, now: float) -> List[object]:
        if self.phase == STOPPING:
            return []
        self.target = max(1, min(event.workers, self.capacity // 2))
        return [Log("info", f"scale: pool size {self.target}")]

    def _on_Reload(self, event: Reload, now: float) -> List[object]:
        if self.phase == STOPPING:
            return []
        actions: List[object] = [Notify("RELOADING=1")]
        if not self.reloading:
            self._stable_settings = (self.target, self.limits, self.graceful_timeout)
        self.target = event.workers
        self.limits = health.Limits(event.timeout, event.request_timeout, event.max_rss)
        self.graceful_timeout = event.graceful_timeout
        self.last_generation += 1
        self.reloads += 1
        self.generation = self.last_generation
        self.boot_failures, self.next_spawn_at = 0, 0.0
        for w in list(self.workers.values()):
            if w.retiring:
                continue
            if w.generation == self.stable:
                w.outgoing = True
            else:   # a reload still in progress is superseded
                actions += self._retire(w, now)
        actions.append(Log("info", f"reloading: starting generation {self.generation} "
                                   f"with {self.target} workers"))
        return actions

    def _on_ReloadFailed(self, event: ReloadFailed, now: float) -> List[object]:
        serving = self.stable or self.generation
        return [Log("error", f"reload failed: {event.reason}; generation {serving} keeps serving")]

    # -- rules ---------------------------------------------------------------

    def _reconcile(self, now: float) -> List[object]:
        actions: List[object] = []
        live = [w for w in self.workers.values()
                if w.generation == self.generation and not w.retiring and not w.replaceable]
        count = len(live) + sum(1 for g in self.spawning.values() if g == self.generation)
        if count > self.target:
            extras = sorted(live, key=lambda w: (w.ready, -w.started))[:count - self.target]
            for w in extras:
                actions += self._retire(w, now)
        elif count < self.target:
            actions += self._spawn(self.target - count, live, now)
        if sum(1 for w in live if w.ready) >= self.target:
            if self.reloading:
                actions += self._commit()
            for w in list(self.workers.values()):
                if w.replaceable and not w.retiring:
                    actions += self._retire(w, now)
        return actions

    def _spawn(self, missing: int, live: List[Worker], now: float) -> List[object]:
        if self.boot_failures:
            # Crash loop: one probe at a time, after the backoff delay.
            missing = 0 if self._probe_booting() or now < self.next_spawn_at else 1
        used = set(self.spawning) | {w.slot for w in self.workers.values()}
        free = [s for s in range(self.capacity) if s not in used][:missing]
        actions: List[object] = []
        if len(free) < missing and not self._full_logged:
            actions.append(Log("error", f"scoreboard full ({self.capacity} slots); "
                                        f"{missing - len(free)} worker(s) not started"))
        self._full_logged = len(free) < missing
        for slot in free:
            self.spawning[slot] = self.generation
            actions.append(Spawn(self.generation, slot))
        return actions

    def _probe_booting(self) -> bool:
        return bool(self.spawning) or any(
            not w.ready and w.generation == self.generation and not w.retiring
            for w in self.workers.values())

    def _commit(self) -> List[object]:
        first = self.stable == 0
        self.stable = self.generation
        text = ("ready: serving with" if first else
                f"reload complete: generation {self.generation} serving with")
        return [Log("info", f"{text} {self.target} workers"), Notify("READY=1")]

    def _retire(self, w: Worker, now: float) -> List[object]:
        w.retiring, w.why_stopped, w.dump_first = True, "retired", True
        w.escalate_at = now + self.graceful_timeout
        return [Kill(w.pid, signal.SIGTERM)]

    def _boot_failed(self, generation: int, what: str, now: float,
                     code: Optional[int] = None) -> List[object]:
        if generation != self.generation:
            return [Log("warning", what)]
        if self.stable and self.reloading:
            return self._abort_reload(what, now)
        if not self.stable and code == EXIT_TARGET:
            self.exit_status = EXIT_TARGET
            return [Log("error", f"{what}: the target could not be loaded; stopping")] + \
                self._stop(graceful=False, now=now)
        self.boot_failures += 1
        delay = backoff_delay(self.boot_failures)
        self.next_spawn_at = now + delay
        return [Log("error", f"{what}; {self.boot_failures} boot failure(s) in a row, "
                             f"next try in {delay:.1f} s")]

    def _abort_reload(self, what: str, now: float) -> List[object]:
        failed = self.generation
        actions: List[object] = [Log("error", f"reload failed: {what}; generation "
                                              f"{self.stable} keeps serving")]
        for w in list(self.workers.values()):
            if w.generation == failed and not w.retiring:
                actions += self._retire(w, now)
            elif w.generation == self.stable:
                w.outgoing = False
        self.generation = self.stable
        self.target, self.limits, self.graceful_timeout = self._stable_settings
        self.boot_failures, self.next_spawn_at = 0, 0.0
        return actions + [Notify("READY=1")]

    def _stop(self, graceful: bool, now: float) -> List[object]:
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        grace = self.graceful_timeout if graceful else FAST_STOP_GRACE
        if self.phase == STOPPING and graceful:
            return []   # already stopping; a second TERM changes nothing
        first = self.phase != STOPPING
        self.phase = STOPPING
        actions: List[object] = []
        if first:
            kind = "graceful" if graceful else "fast"
            actions += [Log("info", f"{kind} stop"), Notify("STOPPING=1"), CloseListeners()]
        for w in self.workers.values():
            if w.killed:
                continue
            actions.append(Kill(w.pid, sig))
            w.retiring, w.why_stopped = True, "stop"
            deadline = now + grace
            w.escalate_at = deadline if w.escalate_at is None else min(w.escalate_at, deadline)
            w.dump_first = graceful and not w.dumped   # a fast stop does not wait for a dump
        return actions
