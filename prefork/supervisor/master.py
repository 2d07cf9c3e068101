"""The master's shell: the one loop that turns the world into events and actions into I/O.

Each turn: wait on the signal pipe and the report pipe (at most a second,
or until the arbiter's next deadline), then feed the arbiter, in order, the
signals that arrived, the workers' reports, the children reaped with
``waitpid(-1, WNOHANG)``, and a Tick carrying the scoreboard heartbeats (and
the requests running and RSS, when request_timeout and max_rss are on).  The
actions it returns are performed here and nowhere else.  All decisions live
in :mod:`.arbiter`; this module only does what it is told.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import time
from typing import Callable, Dict, List, Optional

from setproctitle import setproctitle

from .. import log, metrics, sockets, target
from ..config import Config
from ..hooks import Hooks, WorkerInfo
from ..errors import PreforkError
from ..reports import BOOT_ERROR, READY, ReportPipe
from ..scoreboard import Scoreboard
from ..sigpipe import SignalPipe
from . import privileges, status, systemd
from .answers import answer
from .arbiter import Arbiter
from .daemon import NOT_DAEMON, Readiness
from .events import (ChildExited, CloseListeners, Exit, Kill, Log, Notify, RecycleWanted,
                     Reload, ReloadFailed, ReopenLogs, Signal, Spawn, Spawned,
                     SpawnFailed, Start, Tick, WorkerReady)
from .holdings import Holdings, adopt_listeners, open_inherited
from .listeners import ListenerSet, bind_options
from .pidfile import PidFile
from .spawn import MASTER_SIGNALS, Generation, become_worker
from .upgrade import Inheritance, Upgrade

logger = logging.getLogger("prefork")

SCOREBOARD_SLOTS = 1024
TICK = 1.0


class Master:
    """Supervise a pool for ``config``; ``reload_config`` re-reads it on HUP."""

    def __init__(self, config: Config, reload_config: Callable[[], Config],
                 pidfile: Optional[PidFile] = None,
                 identity: Optional[privileges.Identity] = None,
                 inheritance: Optional[Inheritance] = None) -> None:
        self.config = config
        self.hooks = Hooks(config)
        self.inheritance = inheritance     # set when an old master started us (USR2)
        self.upgrade: Optional[Upgrade] = None
        self.handed_over = False
        self.reload_config = reload_config
        self.identity = identity
        self.holdings = Holdings(ListenerSet(bind_options(config)), pidfile)
        self.listeners = self.holdings.listeners
        self.listeners.owns_files = inheritance is None   # until a new master takes over
        self.generations: Dict[int, Generation] = {}
        self.readiness: Readiness = NOT_DAEMON
        self._pending: Optional[Generation] = None
        self._queued: List[object] = []       # events from control requests
        self._ready = False
        self._last_error = ""
        self.arbiter = Arbiter(config.workers, capacity=SCOREBOARD_SLOTS,
                               timeout=config.timeout,
                               graceful_timeout=config.graceful_timeout,
                               request_timeout=config.request_timeout,
                               max_rss=config.max_rss)
        if inheritance is not None:
            # Generation numbers go on across upgrades: one history in logs and status.
            self.arbiter.generation = self.arbiter.last_generation = inheritance.generation + 1

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
        self.generations[self.arbiter.generation] = Generation(
            self.config, spec, bound, self.hooks, self._preload(spec, bound))
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

    def _log_fresh_listeners(self) -> None:
        for listener in self.listeners.fresh:
            logger.info("listening at %s", listener.name)

    def run(self, readiness: Readiness = NOT_DAEMON) -> int:
        """Serve until told to stop; returns the exit status.

        ``readiness`` is told once the first generation is ready, or why
        start-up failed (the --daemon launcher waits for that).
        """
        self.readiness = readiness
        setproctitle(f"prefork: master [{self.config.target}]")
        self.scoreboard = Scoreboard(SCOREBOARD_SLOTS)
        self.reports = ReportPipe()
        self.alive_r, self.alive_w = os.pipe()
        self.signals = SignalPipe(MASTER_SIGNALS)
        status = 1
        try:
            status = self._feed(Start())
            while status is None:
                status = self._turn()
            return status
        finally:
            if not self._ready:
                self.readiness.fail(status, self._last_error or "the master stopped before "
                                    "its workers were ready")
            self.holdings.close(owner=self._control_live)
            self.signals.close()
            self.reports.close()
            os.close(self.alive_r)
            os.close(self.alive_w)
            if self.upgrade is not None:
                self.upgrade.close()
            self.hooks.call("on_exit", self._current().config if self.generations else self.config)

    @property
    def _control_live(self) -> bool:
        """A new master answers on the control socket only once it took over."""
        return self.inheritance is None or self._ready

    # -- one turn of the loop ---------------------------------------------------

    def _turn(self) -> Optional[int]:
        deadline = self.arbiter.next_deadline()
        timeout = TICK if deadline is None else min(TICK, max(0.0, deadline - time.monotonic()))
        waiting = [self.signals, self.reports]
        if self.upgrade is not None and self.upgrade.read_fd >= 0:
            waiting.append(self.upgrade)
        # The control socket and /metrics: non-blocking, one request per connection.
        control = self.holdings.control if self._control_live else None
        served = [s for s in (control, self.holdings.metrics) if s is not None]
        reading: List[object] = []
        writing: List[object] = []
        for server in served:
            more_reading, more_writing = server.waiting()
            reading += more_reading
            writing += more_writing
        readable, writable, _ = select.select(waiting + reading, writing, [], timeout)
        for server in served:
            server.handle(readable, writable)
        events: List[object] = self._queued
        self._queued = []
        if self.upgrade is not None and self.upgrade.poll(self.upgrade in readable,
                                                          time.monotonic()):
            events.append(self._hand_over())
        for sig in self.signals.read():
            if sig == signal.SIGHUP:
                events.extend(self._reload_or_upgrade("HUP"))
            elif sig == signal.SIGUSR2:
                self._start_upgrade("USR2")
            elif sig == signal.SIGWINCH:
                logger.info("WINCH is not used (USR2 hands over by itself); ignored")
            elif sig != signal.SIGCHLD:   # children are reaped below on every turn
                events.append(Signal(sig))
        for kind, pid, text in self.reports.read():
            if kind == BOOT_ERROR:
                self._last_error = text    # what the --daemon launcher will print
            else:
                events.append(WorkerReady(pid) if kind == READY else RecycleWanted(pid))
        events.extend(self._reap())
        events.append(self._tick())
        for event in events:
            status = self._feed(event)
            if status is not None:
                return status
        return None

    def _tick(self) -> Tick:
        """What health is judged by; requests and RSS are read only while their limit is on."""
        workers, limits = self.arbiter.workers.values(), self.arbiter.limits
        board = self.scoreboard
        return Tick({w.pid: board.heartbeat_of(w.slot) for w in workers},
                    {w.pid: board.running(w.slot) for w in workers} if limits.request_timeout
                    else {},
                    {w.pid: status.rss_bytes(w.pid) for w in workers} if limits.max_rss else {},
                    {w.pid: board.served(w.slot) for w in workers} if limits.max_rss else {})

    def _feed(self, event: object) -> Optional[int]:
        actions = self.arbiter.decide(event, time.monotonic())
        if isinstance(event, Reload):
            self.generations[self.arbiter.generation] = self._pending
            self.hooks = self._pending.hooks
            self._pending = None
        if self.upgrade is not None and self.arbiter.phase != "running":
            self.upgrade, upgrade = None, self.upgrade
            upgrade.abandon()
        return self._perform(actions)

    def _load_for_reload(self) -> object:
        logger.info("HUP: reloading the configuration")
        try:
            config = self.reload_config()
            spec = target.parse(config.target)
            if self.holdings.activated:    # systemd's sockets stay; 'bind' does not apply
                bound = list(self.holdings.activated)
                self.listeners.fresh = []
            else:
                bound = self.listeners.acquire(sockets.parse_all(config.bind))
            log.touch_access_log(config.access_log)    # as at start: a bad path fails here
            log.configure(config.error_log, config.log_level)
            if self.identity is not None:   # a new log file: workers must be able to reopen it
                privileges.hand_over([config.error_log, config.access_log], self.identity)
            hooks = Hooks(config)
            self.holdings.rebind_metrics(config.metrics_bind, self._render_metrics)
        except PreforkError as exc:
            return ReloadFailed(str(exc))
        self._log_fresh_listeners()
        hooks.call("on_reload", config)
        self._pending = Generation(config, spec, bound, hooks)
        return Reload(config.workers, config.timeout, config.graceful_timeout,
                      config.request_timeout, config.max_rss)

    def _reap(self) -> List[ChildExited]:
        exited = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(status)
            if self.upgrade is not None and pid == self.upgrade.pid:
                self.upgrade, upgrade = None, self.upgrade
                upgrade.exited(code)
                continue
            worker = self.arbiter.workers.get(pid)
            if worker is not None:
                self.scoreboard.release(worker.slot)
            exited.append(ChildExited(pid, code))
        return exited

    # -- upgrades (USR2) --------------------------------------------------------

    def _reload_or_upgrade(self, why: str) -> List[object]:
        """HUP reloads, except with preload: the master holds the old code, so re-exec."""
        if self.arbiter.phase != "running":
            logger.info("%s while stopping; ignored", why)
            return []
        if self._current().config.preload:
            self._start_upgrade(f"{why} with preload")
            return []
        return [self._load_for_reload()]

    def _start_upgrade(self, why: str) -> None:
        if self.upgrade is not None or self.arbiter.phase != "running":
            busy = f"new master {self.upgrade.pid} is starting" if self.upgrade else "stopping"
            logger.warning("%s: cannot upgrade now (%s); ignored", why, busy)
            return
        log.flush()
        self.upgrade = Upgrade.begin(why, self.holdings.bequeath(self.arbiter.last_generation),
                                     self._current().config.upgrade_timeout, MASTER_SIGNALS)

    def _hand_over(self) -> Signal:
        """The new master is serving: let it own the pidfile and sockets; stop gracefully."""
        pid = self.upgrade.pid
        logger.info("upgrade: the new master %d is serving; this master (PID %d) stops "
                    "gracefully", pid, os.getpid())
        systemd.notify(f"MAINPID={pid}\nREADY=1\nSTATUS=upgraded: master {pid} serving")
        self.handed_over = True
        self.upgrade.close()
        self.upgrade = None    # from now on its fate is its own
        self.holdings.hand_over()
        return Signal(signal.SIGTERM)

    # -- actions --------------------------------------------------------------

    def _perform(self, actions: List[object]) -> Optional[int]:
        status = None
        for action in actions:
            if isinstance(action, Spawn):
                status = self._spawn(action)
            elif isinstance(action, Kill):
                try:
                    os.kill(action.pid, action.sig)
                except ProcessLookupError:
                    pass   # already gone; its exit is reaped on the next turn
            elif isinstance(action, Log):
                logger.log(logging.getLevelName(action.level.upper()), "%s", action.text)
                if action.level == "error" and not self._last_error:
                    self._last_error = action.text
            elif isinstance(action, Notify):
                self._notify(action.text)
            elif isinstance(action, ReopenLogs):
                config = self._current().config
                log.reopen(config.error_log)
                if self.identity is not None:   # workers must be able to reopen them too
                    privileges.hand_over([config.error_log, config.access_log], self.identity)
            elif isinstance(action, CloseListeners):
                self.listeners.close_all()
            elif isinstance(action, Exit):
                status = action.status
            if status is not None:
                return status
        self._prune()
        return None

    def _notify(self, text: str) -> None:
        if self.handed_over:
            return     # the service is the new master's now; our stop is not its stop
        if text == "READY=1":
            a = self.arbiter
            text += (f"\nSTATUS=serving with {a.target} workers (generation {a.generation})")
            first = not self._ready
            if first:
                self._ready = True
                self.listeners.owns_files = True
                if self.inheritance is not None and self.holdings.pidfile is not None:
                    self.holdings.pidfile.write(os.getpid())   # before the old master lets go
                self.readiness.ok()
            self.hooks.call("when_ready", self._current().config)
            if first and self.inheritance is not None:
                return    # the old master tells systemd, with MAINPID, in one message
        systemd.notify(text)

    # -- the control socket ---------------------------------------------------

    def _respond(self, message: Dict[str, object]) -> Dict[str, object]:
        """Answer one control request; state changes go through the arbiter as events."""
        reply, events = answer(message, self._snapshot, lambda: self._reload_or_upgrade("reload"),
                               self.arbiter.target)
        self._queued.extend(events)
        return reply

    def _snapshot(self) -> Dict[str, object]:
        return status.snapshot(self.arbiter, self.scoreboard, self.config.target)

    def _render_metrics(self) -> str:
        return metrics.render(self._snapshot())

    def _spawn(self, action: Spawn) -> Optional[int]:
        generation = self.generations[action.generation]
        self.scoreboard.claim(action.slot, 0, action.generation, time.monotonic())
        generation.hooks.call("pre_fork", generation.config,
                              WorkerInfo(0, action.generation, action.slot))
        log.flush()
        # Signals stay blocked across fork so none reaches the child while it
        # still has the master's handlers and wakeup fd.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return self._feed(SpawnFailed(action.generation, action.slot, exc.strerror))
        if pid == 0:
            become_worker(self, action, generation, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.scoreboard.set_pid(action.slot, pid)
        return self._feed(Spawned(pid, action.generation, action.slot))

    def _current(self) -> Generation:
        return self.generations.get(self.arbiter.generation) or self.generations[min(self.generations)]

    def _prune(self) -> None:
        """Forget generations no worker belongs to; close listeners none of them uses."""
        a = self.arbiter
        keep = {w.generation for w in a.workers.values()} | set(a.spawning.values())
        keep |= {a.generation, a.stable}
        for number in list(self.generations):
            if number not in keep:
                del self.generations[number]
        if a.phase == "running":
            self.listeners.keep_only(l.spec for g in self.generations.values()
                                     for l in g.listeners)
