"""The master's shell: the one loop that turns the world into events and actions into I/O.

Each turn waits (at most a second, or until the arbiter's next deadline) on
the signal pipe, the workers' report pipe, a new master's pipe and the
control and metrics sockets.  A control request is answered first: its
events are fed to the arbiter there and then, so that the reply tells what
was decided.  Then the arbiter is fed, in order, what a new master said,
the signals that arrived, the workers' reports, the children reaped with
``waitpid(-1, WNOHANG)``, and a Tick carrying the scoreboard heartbeats (and
the requests running and RSS, when request_timeout and max_rss are on).

The actions are performed by :class:`.performers.Performer`; what a
performer answers (Spawned, Reload, UpgradeStarted...) is queued behind the
events of the turn and fed from this loop, never from inside a performer.
All decisions live in :mod:`.arbiter`; this module only does what it is told.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import select
import signal
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from setproctitle import setproctitle

from .. import compiled, metrics, sockets, status_page, target
from ..config import Config
from ..hooks import Hooks
from ..reports import BOOT_ERROR, READY, ReportPipe
from ..scoreboard import SLOTS, Scoreboard
from ..sigpipe import SignalPipe
from . import privileges, status
from .answers import Outcome, answer
from .arbiter import Arbiter
from .daemon import NOT_DAEMON, Readiness
from .events import (ChildExited, PoolLoad, RecycleWanted, Signal, Start, Tick, UpgradeFailed,
                     UpgradeReady, WorkerReady)
from .holdings import Holdings, adopt_listeners, open_inherited
from .listeners import ListenerSet, bind_options, tls_context
from .metrics_server import Site
from .performers import Performer
from .pidfile import PidFile
from .reloader import Reloader
from .spawn import MASTER_SIGNALS, Generation
from .upgrade import Inheritance, Upgrade

logger = logging.getLogger("prefork")

TICK = 1.0


class Master(Performer):
    """Supervise a pool for ``config``; ``reload_config`` re-reads it on HUP.

    ``launch_directory`` is where the operator started prefork, before any
    --chdir: a new master (USR2) is started there, so that the command
    line's relative paths keep their meaning.
    """

    def __init__(self, config: Config, reload_config: Callable[[], Config],
                 pidfile: Optional[PidFile] = None,
                 identity: Optional[privileges.Identity] = None,
                 inheritance: Optional[Inheritance] = None,
                 launch_directory: str = "") -> None:
        self.config = config
        self.hooks = Hooks(config)
        self.inheritance = inheritance     # set when an old master started us (USR2)
        self.launch_directory = launch_directory or os.getcwd()
        self.upgrade: Optional[Upgrade] = None
        self.reload_config = reload_config
        self.identity = identity
        self.holdings = Holdings(ListenerSet(bind_options(config)), pidfile)
        self.listeners = self.holdings.listeners
        self.listeners.owns_files = inheritance is None   # until a new master takes over
        self.generations: Dict[int, Generation] = {}
        self.readiness: Readiness = NOT_DAEMON
        self.exit_status: Optional[int] = None
        self.ready = False
        self.last_error = ""
        self.arbiter = Arbiter(config.workers, capacity=SLOTS,
                               timeout=config.timeout,
                               graceful_timeout=config.graceful_timeout,
                               request_timeout=config.request_timeout,
                               max_rss=config.max_rss, preload=config.preload,
                               upgrade_timeout=config.upgrade_timeout,
                               max_workers=config.max_workers,
                               idle_retire_after=config.idle_retire_after)
        if inheritance is not None:
            # Generation numbers go on across upgrades: one history in logs and status.
            self.arbiter.generation = self.arbiter.last_generation = inheritance.generation + 1
        # /status's request-rate chart: a sample every few seconds, taken in _turn.
        self.history = status_page.History()
        if inheritance is not None:
            self.history.resume(inheritance.history)
        self._render_metrics = Site(lambda: metrics.render(self._snapshot()), self._snapshot,
                                    self.history)

    def bind(self) -> None:
        """Parse the target and bind every listener: before any fork, so errors exit early.

        With preload the target is imported here too, after binding (exit 3).
        """
        spec = target.parse(self.config.target)
        self.hooks.call("on_starting", self.config)
        adopt_listeners(self.holdings, self.inheritance)
        if self.holdings.activated:
            logger.info("using %d listening socket(s) from systemd (LISTEN_FDS); 'bind' "
                        "is not used", len(self.holdings.activated))
            self.listeners.adopt(self.holdings.activated)
            bound = list(self.holdings.activated)
        else:
            bound = self.listeners.acquire(sockets.parse_all(self.config.bind))
            self.listeners.close_spares()
        self._log_fresh_listeners()
        logger.info("%s", compiled.describe())      # which the workers will run
        tls = tls_context(self.config, bound)
        self.generations[self.arbiter.generation] = Generation(
            self.config, spec, bound, self.hooks, self._preload(spec, bound), tls)
        open_inherited(self.holdings, self.inheritance, self.config.control_socket,
                       self.config.metrics_bind, self._respond, self._render_metrics)

    def _preload(self, spec: target.TargetSpec, bound: List[sockets.Listener]) -> object:
        if not self.config.preload:
            return None
        app = target.load_servable(spec)
        target.check_kinds(spec, app, [(l.name, l.datagram) for l in bound])
        # What the import made stays out of the collector's way, so that a
        # collection in a worker does not touch (and copy) the shared pages.
        gc.freeze()
        logger.info("preloaded %s in the master", spec.text)
        return app

    def fds_to_preserve(self) -> List[int]:
        """What a daemon must keep open: listeners, the pidfile lock, control and metrics."""
        return self.holdings.preserve()

    def run(self, readiness: Readiness = NOT_DAEMON) -> int:
        """Serve until told to stop; returns the exit status.

        ``readiness`` is told once the first generation is ready, or why
        start-up failed (the --daemon launcher waits for that).
        """
        self.readiness = readiness
        setproctitle(f"prefork: master [{self.config.target}]")
        self.scoreboard = Scoreboard(SLOTS)
        self.reports = ReportPipe()
        self.reloader = Reloader(self.config, self.reports)    # --reload, else idle
        self.alive_r, self.alive_w = os.pipe()
        self.signals = SignalPipe(MASTER_SIGNALS)
        try:
            self._feed([Start(os.getpid())])
            while self.exit_status is None:
                self._turn()
            return self.exit_status
        finally:
            if not self.ready:
                self.readiness.fail(1 if self.exit_status is None else self.exit_status,
                                    self.last_error or "the master stopped before its "
                                    "workers were ready")
            self.holdings.close(owner=self._control_live)
            self.signals.close()
            self.reports.close()
            self.reloader.close()
            os.close(self.alive_r)
            os.close(self.alive_w)
            if self.upgrade is not None:
                self.upgrade.close()
            last = self._current() if self.generations else None
            hooks, config = (last.hooks, last.config) if last else (self.hooks, self.config)
            hooks.call("on_exit", config)

    @property
    def _control_live(self) -> bool:
        """A new master answers on the control socket only once it took over."""
        return self.inheritance is None or self.ready

    # -- one turn of the loop ---------------------------------------------------

    def _turn(self) -> None:
        waiting: List[object] = [self.signals, self.reports] + self.reloader.waiting()
        if self.upgrade is not None and self.upgrade.read_fd >= 0:
            waiting.append(self.upgrade)
        # The control socket and /metrics: non-blocking, one request per connection.
        control = self.holdings.control if self._control_live else None
        served = [s for s in (control, self.holdings.metrics) if s is not None]
        deadlines = [d for d in [self.arbiter.next_deadline(), self.reloader.next_deadline()] +
                     [s.next_deadline() for s in served] if d is not None]
        timeout = min([TICK] + [max(0.0, d - time.monotonic()) for d in deadlines])
        reading: List[object] = []
        writing: List[object] = []
        for server in served:
            more_reading, more_writing = server.waiting()
            reading += more_reading
            writing += more_writing
        readable, writable, _ = select.select(waiting + reading, writing, [], timeout)
        for server in served:
            server.handle(readable, writable)    # a control request is fed here (_steer)
        if self.exit_status is not None:
            return
        events = self._upgrade_news(readable)
        # CHLD only wakes the loop: children are reaped below, on every turn.
        events += [Signal(sig) for sig in self.signals.read() if sig != signal.SIGCHLD]
        for kind, pid, text in self.reports.read():
            if kind == BOOT_ERROR:
                self.last_error = text    # what the --daemon launcher will print
            else:
                events.append(WorkerReady(pid) if kind == READY else RecycleWanted(pid))
        events += self.reloader.events(readable)     # a changed file: ReloadWanted
        events += self._reap()
        events.append(self._tick())
        if self.config.max_workers:
            events.append(self._pool_load())
        self._feed(events)
        if self.exit_status is None and self.history.due(time.monotonic()):
            self.history.add(time.monotonic(), self._snapshot())

    def _feed(self, events: Sequence[object]) -> List[object]:
        """Feed ``events`` to the arbiter in order and perform its actions; the events
        performers answer with are fed after those already queued.  Returns the
        trail: every event fed and every action decided, in order."""
        queue = collections.deque(events)
        trail: List[object] = []
        while queue and self.exit_status is None:
            event = queue.popleft()
            actions = self.arbiter.decide(event, time.monotonic())
            trail += [event] + actions
            for action in actions:
                answered = self.perform(action)
                if answered is not None:
                    queue.append(answered)
                if self.exit_status is not None:
                    break
        if self.exit_status is None:
            # Only now: a reload's listeners belong to no generation until its Reload is fed.
            self._prune()
        return trail

    def _upgrade_news(self, readable: Sequence[object]) -> List[object]:
        """What the new master said on its pipe, if it said it now."""
        if self.upgrade is None or self.upgrade not in readable:
            return []
        return self._upgrade_said(self.upgrade.read())

    def _upgrade_said(self, outcome: Optional[Tuple[int, str]]) -> List[object]:
        if outcome is None or self.upgrade is None:
            return []
        code, message = outcome
        pid = self.upgrade.pid
        return [UpgradeReady(pid) if code == 0 else UpgradeFailed(pid, message)]

    def _reap(self) -> List[object]:
        exited: List[object] = []
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if self.upgrade is not None and pid == self.upgrade.pid:
                # What it said before it died comes first; "ok" from a dead master is moot.
                said = self._upgrade_said(self.upgrade.read())
                exited += [e for e in said if isinstance(e, UpgradeFailed)]
                self.upgrade.close()
                self.upgrade = None
            else:
                worker = self.arbiter.workers.get(pid)
                if worker is not None:
                    self.scoreboard.release(worker.slot)
            exited.append(ChildExited(pid, os.waitstatus_to_exitcode(wait_status)))
        return exited

    def _tick(self) -> Tick:
        """What health is judged by; requests and RSS are read only while their limit is on."""
        workers, limits = self.arbiter.workers.values(), self.arbiter.limits
        board = self.scoreboard
        return Tick({w.pid: board.heartbeat_of(w.slot) for w in workers},
                    {w.pid: board.running(w.slot) for w in workers
                     if not board.times_own_requests(w.slot)} if limits.request_timeout
                    else {},
                    {w.pid: status.rss_bytes(w.pid) for w in workers} if limits.max_rss else {},
                    {w.pid: board.served(w.slot) for w in workers} if limits.max_rss else {})

    def _pool_load(self) -> PoolLoad:
        """For the adaptive pool: who is in a request, and what waits to be accepted."""
        queues = [q[0] for q in map(sockets.listen_queue,
                                    (l.sock for l in self.listeners.all())) if q]
        return PoolLoad({w.pid: self.scoreboard.read(w.slot).connections > 0
                         for w in self.arbiter.workers.values()}, sum(queues))

    # -- the control socket and /metrics -----------------------------------------

    def _respond(self, message: Dict[str, object]) -> Dict[str, object]:
        """Answer one control request; state changes go through the arbiter as events."""
        return answer(message, self._snapshot, self._steer)

    def _steer(self, events: List[object]) -> Outcome:
        """Feed a control request's events now.  Requests are read at the top of a
        turn, never while actions are performed, so this is not a re-entry."""
        return Outcome(self._feed(events), self.arbiter.target, self.arbiter.grows_to)

    def _snapshot(self) -> Dict[str, object]:
        return status.snapshot(self.arbiter, self.scoreboard, self.config.target,
                               self.listeners.all())
