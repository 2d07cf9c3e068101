"""The master's hands: each of the arbiter's actions carried out as system calls.

:class:`Performer` is the half of :class:`.master.Master` that obeys; the
loop in :mod:`.master` is the half that turns the world into events.
Actions are dispatched by an explicit table (:attr:`Performer.PERFORMERS`):
an action without a performer is a bug, and raises.  A performer may
answer with one event (Spawned, Reload, UpgradeStarted...); it never feeds
the arbiter itself: the loop feeds that answer once the current event's
actions are all done, so the arbiter is never re-entered while obeyed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable, Dict, Optional

from .. import log, sockets, status_page, target
from ..config import Config
from ..errors import PreforkError
from ..hooks import Hooks, WorkerInfo
from ..reports import ReportPipe
from ..scoreboard import Scoreboard
from ..sigpipe import SignalPipe
from . import privileges, systemd
from .arbiter import RUNNING, Arbiter
from .daemon import Readiness
from .events import (CloseListeners, Exit, HandOver, Kill, LoadConfig, Log, NewGeneration,
                     Notify, Refused, Reload, ReloadFailed, ReopenLogs, Spawn, Spawned,
                     SpawnFailed, StartUpgrade, UpgradeFailed, UpgradeStarted)
from .holdings import Holdings
from .listeners import ListenerSet, tls_context
from .spawn import MASTER_SIGNALS, ChildSetup, Generation, become_worker
from .upgrade import Inheritance, Upgrade

logger = logging.getLogger("prefork")


class Performer:
    """Performs actions on the master's state, which is declared here: all that
    performing touches.  :class:`.master.Master` sets it up."""

    config: Config                        # as started; a reload's is in its Generation
    hooks: Hooks                          # the first generation's, until it exists
    arbiter: Arbiter                      # read only here: the STATUS line, what to prune
    holdings: Holdings
    listeners: ListenerSet
    generations: Dict[int, Generation]    # by number, while a worker or the arbiter needs it
    scoreboard: Scoreboard
    signals: SignalPipe
    reports: ReportPipe
    alive_r: int
    alive_w: int
    identity: Optional[privileges.Identity]
    inheritance: Optional[Inheritance]    # set in a new master started by USR2
    readiness: Readiness
    upgrade: Optional[Upgrade]            # a new master we started, until reaped or handed over
    reload_config: Callable[[], Config]
    launch_directory: str                 # where a new master is started (USR2)
    exit_status: Optional[int]            # set by Exit: the loop ends
    ready: bool                           # the first generation came up
    last_error: str                       # what the --daemon launcher prints if start-up fails
    history: status_page.History          # /status's request-rate samples, bequeathed on USR2

    def perform(self, action: object) -> Optional[object]:
        """Carry out ``action``; the event it answers with, if any."""
        performer = self.PERFORMERS.get(type(action))
        if performer is None:
            raise TypeError(f"the master cannot perform {action!r}")
        return performer(self, action)

    def _render_metrics(self) -> str:
        raise NotImplementedError    # the master's: a reload may move the endpoint

    # -- the pool ---------------------------------------------------------------

    def _spawn(self, action: Spawn) -> object:
        generation = self.generations[action.generation]
        self.scoreboard.claim(action.slot, 0, action.generation, time.monotonic())
        generation.hooks.call("pre_fork", generation.config,
                              WorkerInfo(0, action.generation, action.slot))
        setup = ChildSetup(self.signals, self.alive_r, self.alive_w, self.reports,
                           self.holdings, self.readiness, self.scoreboard, self.identity,
                           self.upgrade.read_fd if self.upgrade is not None else -1)
        log.flush()
        # Signals stay blocked across fork so none reaches the child while it
        # still has the master's handlers and wakeup fd.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return SpawnFailed(action.generation, action.slot, exc.strerror)
        if pid == 0:
            become_worker(setup, action, generation, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.scoreboard.set_pid(action.slot, pid)
        return Spawned(pid, action.generation, action.slot)

    def _kill(self, action: Kill) -> None:
        try:
            os.kill(action.pid, action.sig)
        except ProcessLookupError:
            pass   # already gone; its exit is reaped on the next turn

    def _close_listeners(self, action: CloseListeners) -> None:
        self.listeners.close_all()

    def _exit(self, action: Exit) -> None:
        self.exit_status = action.status

    # -- logs and the service manager ----------------------------------------------

    def _log(self, action: Log) -> None:
        logger.log(logging.getLevelName(action.level.upper()), "%s", action.text)
        if action.level == "error" and not self.last_error:
            self.last_error = action.text

    def _reopen_logs(self, action: ReopenLogs) -> None:
        config = self._current().config
        log.reopen(config.error_log)
        if self.identity is not None:   # workers must be able to reopen them too
            privileges.hand_over([config.error_log, config.access_log], self.identity)

    def _notify(self, action: Notify) -> None:
        text = action.text
        if text == "READY=1":
            a = self.arbiter
            text += (f"\nSTATUS=serving with {a.target} workers (generation {a.generation})")
            first = not self.ready
            if first:
                self.ready = True
                self.listeners.owns_files = True
                if self.inheritance is not None and self.holdings.pidfile is not None:
                    self.holdings.pidfile.write(os.getpid())   # before the old master lets go
                self.readiness.ok()
            current = self._current()
            current.hooks.call("when_ready", current.config)
            if first and self.inheritance is not None:
                return    # the old master tells systemd, with MAINPID, in one message
        systemd.notify(text)

    # -- reload (HUP) -------------------------------------------------------------

    def _load_config(self, action: LoadConfig) -> object:
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
            tls = tls_context(config, bound)
            self.holdings.rebind_metrics(config.metrics_bind, self._render_metrics)
        except PreforkError as exc:
            return ReloadFailed(str(exc))
        self._log_fresh_listeners()
        hooks.call("on_reload", config)
        return Reload(config.workers, config.timeout, config.graceful_timeout,
                      config.request_timeout, config.max_rss, config.preload,
                      config.upgrade_timeout, config.max_workers, config.idle_retire_after,
                      payload=Generation(config, spec, bound, hooks, tls=tls))

    def _new_generation(self, action: NewGeneration) -> None:
        self.generations[action.number] = action.payload

    # -- upgrade (USR2) -------------------------------------------------------------

    def _start_upgrade(self, action: StartUpgrade) -> object:
        log.flush()     # as before any fork: what is buffered is written once, by us
        try:
            inheritance = self.holdings.bequeath(action.generation)
            inheritance.history = [[taken, total] for taken, total in self.history.samples]
            self.upgrade = Upgrade.start(inheritance, self.launch_directory, MASTER_SIGNALS)
        except OSError as exc:
            return UpgradeFailed(0, f"cannot fork: {exc.strerror}")
        return UpgradeStarted(self.upgrade.pid)

    def _hand_over(self, action: HandOver) -> None:
        if self.upgrade is not None:
            self.upgrade.close()
            self.upgrade = None    # from now on its fate is its own
        self.holdings.hand_over()

    # -- generations ----------------------------------------------------------------

    def _current(self) -> Generation:
        generations = self.generations
        return generations.get(self.arbiter.generation) or generations[min(generations)]

    def _prune(self) -> None:
        """Forget generations no worker belongs to; close listeners none of them uses."""
        a = self.arbiter
        keep = {w.generation for w in a.workers.values()} | set(a.spawning.values())
        keep |= {a.generation, a.stable}
        for number in list(self.generations):
            if number not in keep:
                del self.generations[number]
        if a.phase == RUNNING:
            self.listeners.keep_only(l.spec for g in self.generations.values()
                                     for l in g.listeners)

    def _log_fresh_listeners(self) -> None:
        for listener in self.listeners.fresh:
            logger.info("listening at %s", listener.name)

    PERFORMERS: Dict[type, Callable[[Any, Any], Optional[object]]] = {
        Spawn: _spawn, Kill: _kill, CloseListeners: _close_listeners, Exit: _exit,
        Log: _log, Refused: _log, ReopenLogs: _reopen_logs, Notify: _notify,
        LoadConfig: _load_config, NewGeneration: _new_generation,
        StartUpgrade: _start_upgrade, HandOver: _hand_over,
    }
