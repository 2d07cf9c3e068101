"""The master's decisions: a state machine with no I/O.

:meth:`Arbiter.decide` takes an event (see :mod:`.events`) and the current
monotonic time and returns the actions the shell must perform.  It never
forks, signals, sleeps or reads a clock, so every rule of the signal table is
a fast unit test.  Events are dispatched by an explicit table,
:attr:`Arbiter.HANDLERS`: an event without a rule is a bug, and raises.

The pool is kept by one rule, :meth:`Arbiter._reconcile`, run after every
event: the *current* generation must have ``target`` live workers; workers
marked for replacement (an older generation during a reload, or one that hit
max_requests or max_rss) are retired only once ``target`` current workers are
ready.  A reload and a recycle are therefore the same motion, and capacity
never dips.  Whether a worker is stuck or bloated is judged in :mod:`.health`;
the upgrade's steps (USR2) are decided in :mod:`.successor`; a process that
does not stop when told is escalated to KILL by :mod:`.escalation`, the same
way for workers and for a new master.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional

from ..errors import EXIT_OK, EXIT_TARGET
from ..scoreboard import clamp_pool, max_pool
from . import health
from .autoscale import Autoscaler
from .escalation import FAST_STOP_GRACE
from .events import (ChildExited, CloseListeners, Exit, Kill, LoadConfig, Log, NewGeneration,
                     Notify, PoolLoad, RecycleWanted, Refused, Reload, ReloadFailed, ReloadWanted,
                     ReopenLogs, Scale, Signal, Spawn, Spawned, SpawnFailed, Start, Tick,
                     UpgradeFailed, UpgradeReady, UpgradeStarted, WorkerReady)
from .health import backoff_delay, describe_exit
from .successor import Upgrades
from .worker_record import ABORTED, Worker

RUNNING, STOPPING = "running", "stopping"


class Arbiter:
    """Decides what the master does; see the module docstring.

    ``capacity`` is the number of scoreboard slots: a generation has at
    most half of them (:func:`prefork.scoreboard.max_pool`).  The other
    keywords are the config values of the same names.
    """

    def __init__(self, workers: int, *, capacity: int, timeout: float,
                 graceful_timeout: float, request_timeout: float = 0.0,
                 max_rss: int = 0, preload: bool = False,
                 upgrade_timeout: float = 60.0, max_workers: int = 0,
                 idle_retire_after: float = 30.0) -> None:
        self.capacity = capacity
        self.autoscale = Autoscaler(max_workers and clamp_pool(max_workers, capacity),
                                    idle_retire_after)   # target is its floor
        self.max_workers = max_pool(capacity)
        self.target = clamp_pool(workers, capacity)
        self.limits = health.Limits(timeout, request_timeout, max_rss)
        self.graceful_timeout = graceful_timeout
        self.preload = preload      # the master holds the code: a reload must re-exec
        self.upgrade_timeout = upgrade_timeout
        self.upgrades = Upgrades()
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
        self._stable_settings = self._settings()

    # -- the one entry point -------------------------------------------------

    def decide(self, event: object, now: float) -> List[object]:
        handler = self.HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"the arbiter has no rule for {event!r}")
        actions: List[object] = handler(self, event, now)
        if self.phase == STOPPING:
            if not self.workers and not self.spawning:
                actions.append(Exit(self.exit_status))
        else:
            actions.extend(self._reconcile(now))
        return actions

    def next_deadline(self) -> Optional[float]:
        """The earliest time a Tick would make a difference, if any."""
        times = [w.stop.at for w in self.workers.values() if w.stop.at is not None]
        times += [at for at in (self._request_deadline, self.upgrades.deadline())
                  if at is not None]
        if self.boot_failures and self.phase == RUNNING and not self._probe_booting():
            times.append(self.next_spawn_at)
        return min(times) if times else None

    @property
    def wanted(self) -> int:    # target, or more while the adaptive pool has grown
        return self.autoscale.size(self.target)

    @property
    def grows_to(self) -> int:
        """The adaptive pool's ceiling while target is a floor below it; else 0."""
        return self.autoscale.ceiling if self.target < self.autoscale.ceiling else 0

    @property
    def reloading(self) -> bool:
        return self.generation != self.stable

    def _settings(self) -> tuple:
        """What a reload changes, and an aborted reload restores."""
        return (self.target, self.limits, self.graceful_timeout, self.preload,
                self.upgrade_timeout, self.autoscale.tuning())

    # -- events --------------------------------------------------------------

    def _on_start(self, event: Start, now: float) -> List[object]:
        self.upgrades.pid = event.pid
        return [Log("info", f"starting generation {self.generation} with {self.target} workers")]

    def _on_spawned(self, event: Spawned, now: float) -> List[object]:
        self.spawning.pop(event.slot, None)
        w = Worker(event.pid, event.generation, event.slot, now)
        self.workers[event.pid] = w
        if self.phase == STOPPING:
            return w.tell_to_stop(graceful=False, now=now, grace=FAST_STOP_GRACE)
        return [Log("debug", f"booting worker {event.pid} (gen {event.generation})")]

    def _on_spawn_failed(self, event: SpawnFailed, now: float) -> List[object]:
        self.spawning.pop(event.slot, None)
        return self._boot_failed(event.generation, f"could not be forked: {event.reason}", now)

    def _on_worker_ready(self, event: WorkerReady, now: float) -> List[object]:
        w = self.workers.get(event.pid)
        if w is None or w.ready:
            return []
        w.ready = True
        if w.generation == self.generation:
            self.boot_failures = 0
        return [Log("debug", f"{w.label()} is ready")]

    def _on_recycle_wanted(self, event: RecycleWanted, now: float) -> List[object]:
        w = self.workers.get(event.pid)
        if w is None or w.retiring or w.recycle:
            return []
        w.recycle = "max_requests"
        return [Log("info", f"{w.label()} reached max_requests; starting its replacement")]

    def _on_child_exited(self, event: ChildExited, now: float) -> List[object]:
        if self.upgrades.owns(event.pid):
            return self.upgrades.exited(event)
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

    def _on_tick(self, event: Tick, now: float) -> List[object]:
        actions: List[object] = self.upgrades.tick(now)
        for w in self.workers.values():
            if w.stop.killed:
                continue
            if w.stop.armed:    # already being stopped: only its deadline counts
                actions += w.escalate(now, self.graceful_timeout)
                continue
            verdict = health.stuck(w, event, now, self.limits)
            if verdict is not None:
                actions += w.abort(verdict.reason, verdict.text, now)
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
                  if not w.stop.armed and w.pid in tick.requests and tick.requests[w.pid][0]]
        return min(starts) + self.limits.request_timeout if starts else None

    def _on_pool_load(self, event: PoolLoad, now: float) -> List[object]:
        """The adaptive pool's step (see .autoscale), through the usual spawn and retire."""
        live = [w.pid for w in self.workers.values() if w.generation == self.generation
                and w.ready and not w.retiring and not w.replaceable]
        if self.phase == STOPPING or self.reloading or not live:
            return []
        step = self.autoscale.observe(now, self.target, event.busy, event.queue, live)
        retire = self.workers[step.retire].retire(now, self.graceful_timeout) if step.retire else []
        return ([Log("info", step.text)] if step.change else []) + retire

    def _on_signal(self, event: Signal, now: float) -> List[object]:
        sig = event.sig
        if sig == signal.SIGTERM:
            return self._stop(graceful=True, now=now)
        if sig in (signal.SIGINT, signal.SIGQUIT):
            return self._stop(graceful=False, now=now)
        if sig == signal.SIGHUP:
            return self._on_reload_wanted(ReloadWanted("HUP"), now)
        if sig == signal.SIGUSR2:
            return self._upgrade_wanted("USR2")
        if sig == signal.SIGWINCH:
            return [Log("info", "WINCH is not used (USR2 hands over by itself); ignored")]
        if self.phase == STOPPING:
            return []
        if sig == signal.SIGTTIN:
            if self.target >= self.max_workers:
                return [Log("info", f"TTIN: the pool is at its maximum of {self.max_workers} "
                                    "workers")]
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

    def _on_scale(self, event: Scale, now: float) -> List[object]:
        if self.phase == STOPPING:
            return [Refused("info", "scale while stopping; ignored")]
        asked = self.target + event.workers if event.relative else event.workers
        self.target = clamp_pool(asked, self.capacity)
        text = f"scale: pool size {self.target}"
        if self.grows_to:
            text = f"scale: pool floor {self.target}, up to {self.grows_to} under load"
        if asked > self.target:
            text += f" (asked for {asked}; {self.max_workers} is the maximum)"
        return [Log("info", text)]

    def _on_reload_wanted(self, event: ReloadWanted, now: float) -> List[object]:
        why = event.why
        if self.phase == STOPPING:
            return [Refused("info", f"{why} while stopping; ignored")]
        if self.preload:    # the master holds the old code: only a new master loads new code
            return self._upgrade_wanted(f"{why} with preload")
        return [Log("info", f"{why}: reloading the configuration"), LoadConfig()]

    def _on_reload(self, event: Reload, now: float) -> List[object]:
        if self.phase == STOPPING:
            return []
        actions: List[object] = [Notify("RELOADING=1")]
        if not self.reloading:
            self._stable_settings = self._settings()
        self.target = clamp_pool(event.workers, self.capacity)
        self.limits = health.Limits(event.timeout, event.request_timeout, event.max_rss)
        self.graceful_timeout = event.graceful_timeout
        self.preload, self.upgrade_timeout = event.preload, event.upgrade_timeout
        self.autoscale.retune(event.max_workers and clamp_pool(event.max_workers, self.capacity),
                              event.idle_retire_after)
        self.last_generation += 1
        self.reloads += 1
        self.generation = self.last_generation
        actions.append(NewGeneration(self.generation, event.payload))
        self.boot_failures, self.next_spawn_at = 0, 0.0
        for w in list(self.workers.values()):
            if w.retiring:
                continue
            if w.generation == self.stable:
                w.outgoing = True
            else:   # a reload still in progress is superseded
                actions += w.retire(now, self.graceful_timeout)
        actions.append(Log("info", f"reloading: starting generation {self.generation} "
                                   f"with {self.target} workers"))
        return actions

    def _on_reload_failed(self, event: ReloadFailed, now: float) -> List[object]:
        serving = self.stable or self.generation
        return [Log("error", f"reload failed: {event.reason}; generation {serving} keeps serving")]

    # -- upgrades (USR2): decided in .successor ----------------------------------

    def _upgrade_wanted(self, why: str) -> List[object]:
        return self.upgrades.begin(why, self.last_generation, self.upgrade_timeout,
                                   stopping=self.phase == STOPPING)

    def _on_upgrade_started(self, event: UpgradeStarted, now: float) -> List[object]:
        return self.upgrades.started(event, now, stopping=self.phase == STOPPING)

    def _on_upgrade_failed(self, event: UpgradeFailed, now: float) -> List[object]:
        return self.upgrades.failed(event)

    def _on_upgrade_ready(self, event: UpgradeReady, now: float) -> List[object]:
        actions = self.upgrades.ready(event)
        if self.upgrades.handed_over and self.phase != STOPPING:
            actions += self._stop(graceful=True, now=now)
        return actions

    # -- rules ---------------------------------------------------------------

    def _reconcile(self, now: float) -> List[object]:
        actions: List[object] = []
        live = [w for w in self.workers.values()
                if w.generation == self.generation and not w.retiring and not w.replaceable]
        count = len(live) + sum(1 for g in self.spawning.values() if g == self.generation)
        if count > self.wanted:
            extras = sorted(live, key=lambda w: (w.ready, -w.started))[:count - self.wanted]
            for w in extras:
                actions += w.retire(now, self.graceful_timeout)
        elif count < self.wanted:
            actions += self._spawn(self.wanted - count, live, now)
        if sum(1 for w in live if w.ready) >= self.wanted:
            if self.reloading:
                actions += self._commit()
            for w in list(self.workers.values()):
                if w.replaceable and not w.retiring:
                    actions += w.retire(now, self.graceful_timeout)
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
        return [Log("info", f"{text} {self.wanted} workers"), Notify("READY=1")]

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
                actions += w.retire(now, self.graceful_timeout)
            elif w.generation == self.stable:
                w.outgoing = False
        self.generation = self.stable
        (self.target, self.limits, self.graceful_timeout, self.preload,
         self.upgrade_timeout, tuning) = self._stable_settings
        self.autoscale.retune(*tuning)
        self.boot_failures, self.next_spawn_at = 0, 0.0
        return actions + [Notify("READY=1")]

    def _stop(self, graceful: bool, now: float) -> List[object]:
        grace = self.graceful_timeout if graceful else FAST_STOP_GRACE
        if self.phase == STOPPING and graceful:
            return []   # already stopping; a second TERM changes nothing
        first = self.phase != STOPPING
        self.phase = STOPPING
        actions: List[object] = []
        if first:
            kind = "graceful" if graceful else "fast"
            actions.append(Log("info", f"{kind} stop"))
            if not self.upgrades.handed_over:   # else the service goes on in the new master
                actions.append(Notify("STOPPING=1"))
            actions.append(CloseListeners())
            actions += self.upgrades.abandon()
        for w in self.workers.values():
            actions += w.tell_to_stop(graceful, now, grace)
        return actions

    # -- dispatch: one rule per kind of event -------------------------------------

    HANDLERS: Dict[type, Callable[[Any, Any, float], List[object]]] = {
        Start: _on_start, Signal: _on_signal, Tick: _on_tick,
        Spawned: _on_spawned, SpawnFailed: _on_spawn_failed, WorkerReady: _on_worker_ready,
        RecycleWanted: _on_recycle_wanted, ChildExited: _on_child_exited, Scale: _on_scale,
        ReloadWanted: _on_reload_wanted, Reload: _on_reload, ReloadFailed: _on_reload_failed,
        UpgradeStarted: _on_upgrade_started, UpgradeFailed: _on_upgrade_failed,
        UpgradeReady: _on_upgrade_ready, PoolLoad: _on_pool_load,
    }
