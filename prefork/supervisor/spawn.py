"""The child's side of a fork: from the master's process to a worker.

A forked child starts with everything the master holds: its signal
handlers and wakeup pipe, the report pipe's read end, the control and
metrics sockets, the pidfile lock, every generation's listeners.
:func:`become_worker` drops all of that except what the worker's own
generation serves on, then hands over to :func:`prefork.worker.process.run_worker`.
What there is to drop or keep is one explicit value, :class:`ChildSetup`,
which the master fills in before each fork.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
from dataclasses import dataclass, replace
from typing import List, NoReturn, Optional

from .. import log, sockets
from ..config import Config
from ..hooks import Hooks
from ..reports import ReportPipe
from ..scoreboard import Scoreboard
from ..sigpipe import SignalPipe
from ..target import TargetSpec
from ..worker.process import WorkerContext, run_worker
from . import privileges
from .daemon import Readiness
from .events import Spawn
from .holdings import Holdings
from .listeners import bind_options

logger = logging.getLogger("prefork")

MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                  signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                  signal.SIGCHLD, signal.SIGWINCH)
# A USR1 (or TTIN...) reaching a worker still booting must not kill it.
BOOT_IGNORED = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGWINCH)


@dataclass
class Generation:
    """What workers of one generation are started with."""

    config: Config
    target: TargetSpec
    listeners: List[sockets.Listener]
    hooks: Hooks
    app: object = None     # the preloaded target, if preload is on
    tls: Optional[ssl.SSLContext] = None    # for its TLS listeners, loaded by the master


@dataclass
class ChildSetup:
    """What of the master's a new worker closes, and what it keeps."""

    signals: SignalPipe         # the master's wakeup pipe: closed
    alive_r: int                # kept: its EOF tells the worker that the master is gone
    alive_w: int                # closed, or that EOF would never come
    reports: ReportPipe         # the write end kept, the read end closed
    holdings: Holdings          # closed, but for the worker's own listeners
    readiness: Readiness        # the --daemon launcher's pipe: closed
    scoreboard: Scoreboard      # kept: the worker writes its slot
    identity: Optional[privileges.Identity]   # what the worker drops privileges to
    upgrade_fd: int = -1        # a new master's report pipe (USR2): closed


def become_worker(setup: ChildSetup, action: Spawn, generation: Generation,
                  mask: object) -> NoReturn:
    """In the child, right after fork: never returns."""
    try:
        setup.signals.close_fds_in_child()
        for sig in MASTER_SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig in BOOT_IGNORED else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(setup.alive_w)
        setup.reports.close_read_end_in_child()
        setup.holdings.close_in_worker(generation.listeners)
        listeners = generation.listeners
        if generation.config.reuse_port:
            listeners = [_own_socket(l, generation.config) for l in listeners]
        setup.readiness.close_in_child()
        if setup.upgrade_fd >= 0:
            os.close(setup.upgrade_fd)
        setup.scoreboard.set_pid(action.slot, os.getpid())
        if setup.identity is not None:
            privileges.drop(setup.identity)
        ctx = WorkerContext(generation.config, generation.target, action.generation,
                            action.slot, listeners, setup.scoreboard,
                            setup.reports, setup.alive_r, generation.hooks, generation.app,
                            generation.tls)
    except BaseException:
        logger.exception("worker setup failed")
        log.flush()
        os._exit(1)
    run_worker(ctx)


def _own_socket(shared: sockets.Listener, config: Config) -> sockets.Listener:
    """reuse_port: this worker's own socket on the shared one's address (made before
    privileges are dropped: the kernel only groups sockets of one user)."""
    if not shared.spec.inet:
        return shared       # unix sockets and fd:// have no SO_REUSEPORT group
    host, port = shared.address[:2]
    spec = replace(shared.spec, host=host, port=port or shared.spec.port)
    own = sockets.bind(spec, replace(bind_options(config), reuse_port=True))
    shared.close()
    return own
