"""A worker's life, from the moment after fork to its exit.

Order matters and is the point of this module: detach from the master's
signal pipe, name the process, arm faulthandler, import the target (exit 3
if that fails), install the worker's signals, tell the master it is ready,
serve, and leave with ``os._exit`` so nothing inherited from the master
(atexit hooks, buffers) runs twice.

Worker signals: TERM = finish in-flight, then exit; QUIT / INT = exit now;
USR1 = reopen logs; HUP, TTIN, TTOU, USR2, WINCH ignored.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import random
import resource
import signal
import sys
from dataclasses import dataclass
from typing import List, NoReturn

from setproctitle import setproctitle

from .. import log, target
from ..config import Config
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_TARGET, TargetError
from ..handlers.stream import HandlerServer
from ..reports import READY, RECYCLE, ReportPipe
from ..scoreboard import Scoreboard
from ..sigpipe import SignalPipe
from ..sockets import Listener
from .dispatch import SyncDispatcher, ThreadDispatcher
from .loop import ServeLoop

logger = logging.getLogger("prefork")

IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2,
                   signal.SIGWINCH)


class FastExit(BaseException):
    """Raised by the QUIT/INT handler: unwinds any handler code and ends the worker."""


def _fast_exit(signum: int, frame: object) -> None:
    raise FastExit(signum)


@dataclass
class WorkerContext:
    """Everything a freshly forked worker gets from its master."""

    config: Config
    target: target.TargetSpec
    generation: int
    slot: int
    listeners: List[Listener]
    scoreboard: Scoreboard
    reports: ReportPipe
    alive_fd: int


def run_worker(ctx: WorkerContext) -> NoReturn:
    """Entry point in the child right after fork; never returns."""
    code = EXIT_FAILURE
    try:
        code = _run(ctx)
    except FastExit:
        code = EXIT_OK
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    except BaseException:
        logger.exception("worker crashed")
    finally:
        log.flush()
        os._exit(code)


def _run(ctx: WorkerContext) -> int:
    pid = os.getpid()
    config = ctx.config
    setproctitle(f"prefork: worker [{ctx.target.text}] gen {ctx.generation}")
    faulthandler.enable(file=sys.stderr, all_threads=True)
    # SIGABRT is how the master asks for a traceback; a core file is not wanted.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for sig in IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, _fast_exit)
    signal.signal(signal.SIGINT, _fast_exit)
    signals = SignalPipe([signal.SIGTERM, signal.SIGUSR1])

    try:
        handler_class = target.load(ctx.target)
    except TargetError as exc:
        logger.error("%s", exc)
        return EXIT_TARGET
    if not target.is_handler_class(handler_class):
        logger.error("target %r is %r, not a socketserver.BaseRequestHandler subclass "
                     "(serving WSGI apps is not implemented yet)", ctx.target.text, handler_class)
        return EXIT_TARGET

    slot = ctx.scoreboard.slot(ctx.slot)
    servers = [HandlerServer(l.sock, handler_class, config.idle_timeout) for l in ctx.listeners]
    kind = "sync" if config.worker_class == "sync" else "thread"
    dispatcher = (SyncDispatcher(slot) if kind == "sync"
                  else ThreadDispatcher(slot, config.threads))
    limit = config.max_requests
    if limit:
        limit += random.randint(0, config.max_requests_jitter)
    recycle_asked = False

    def on_request_done() -> None:
        nonlocal recycle_asked
        if limit and not recycle_asked and slot.requests >= limit:
            recycle_asked = True
            ctx.reports.send(RECYCLE, pid)

    def on_signal(sig: int) -> None:
        if sig == signal.SIGUSR1:
            log.reopen(config.error_log)
            logger.info("reopened log files")

    loop = ServeLoop(servers, dispatcher, slot, signals, ctx.alive_fd,
                     config.graceful_timeout, on_signal, on_request_done)
    loop.open()
    ctx.reports.send(READY, pid)
    logger.info("worker ready (gen %d, %s)", ctx.generation,
                f"{config.threads} threads" if kind == "thread" else "sync")
    loop.run()
    logger.info("worker exiting")
    return EXIT_OK
