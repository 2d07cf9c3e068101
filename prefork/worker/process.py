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
import ssl
import sys
from dataclasses import dataclass
from typing import Callable, List, NoReturn, Optional

from setproctitle import setproctitle

from .. import log, target
from ..config import Config
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_TARGET, TargetError
from ..servers.asgi.lifespan import Lifespan, LifespanFailure
from ..servers.asgi.server import ASGIServer
from ..servers.datagram import DatagramServer
from ..servers.edge.server import tls_listeners, wrap_servers
from ..servers.stream import HandlerServer, TrackedSSLSocket
from ..hooks import NO_HOOKS, Hooks, WorkerInfo
from ..servers.wsgi import AccessLog, WSGIServer
from ..reports import BOOT_ERROR, READY, RECYCLE, ReportPipe
from ..scoreboard import Scoreboard
from ..sigpipe import SignalPipe
from ..sockets import Listener
from . import inflight
from .aio_loop import AsyncioLoop
from .dispatch import SyncDispatcher, ThreadDispatcher
from .loop import IDLE_WAIT, ServeLoop

logger = logging.getLogger("prefork")

IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2,
                   signal.SIGWINCH)


class FastExit(BaseException):
    """Raised by the QUIT/INT handler: unwinds any handler code and ends the worker."""


def _fast_exit(signum: int, frame: object) -> None:
    raise FastExit(signum)


def _exit_now(signum: int, frame: object) -> None:
    """QUIT/INT in the asyncio worker: an exception raised here would land in
    whatever task or callback runs, and asyncio would catch it; so exit at once."""
    log.flush()
    os._exit(EXIT_OK)


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
    hooks: Hooks = NO_HOOKS
    app: object = None      # the target, when the master preloaded it
    tls: Optional[ssl.SSLContext] = None    # the generation's, for its TLS listeners


def _arm_idle_closing(servers: List[object], sync: bool) -> None:
    """On TERM, end handler connections that sit idle between requests.

    This one job is done inside signal handlers, because for a sync worker
    the loop is not running: it is inside a handler blocked in recv, and a
    signal handler is the only code that runs there.  Each call is a few
    shutdown() syscalls (see HandlerServer.close_idle); an interval timer
    repeats it for handlers that go back to waiting after their response.
    """
    def on_term(signum: int, frame: object) -> None:
        for server in servers:
            server.close_idle(IDLE_WAIT)
        if sync:
            signal.setitimer(signal.ITIMER_REAL, IDLE_WAIT, IDLE_WAIT)

    def on_alarm(signum: int, frame: object) -> None:
        for server in servers:
            server.close_idle(IDLE_WAIT)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)


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

    info = WorkerInfo(pid, ctx.generation, ctx.slot)
    ctx.hooks.call("post_fork", config, info)
    try:
        app = ctx.app if ctx.app is not None else target.load_servable(ctx.target)
        target.check_kinds(ctx.target, app, [(l.name, l.datagram) for l in ctx.listeners])
        kind = target.worker_kind(ctx.target, app, config.worker_class)
    except TargetError as exc:
        return _boot_failed(ctx, pid, exc)
    is_handler = target.is_handler_class(app)

    slot = ctx.scoreboard.slot(ctx.slot)
    access_log = None
    if config.access_log and not is_handler:
        access_log = AccessLog(config.access_log, config.access_log_format)
    on_request_done = _recycler(ctx, slot, pid)

    def on_signal(sig: int) -> None:
        if sig == signal.SIGUSR1:
            log.reopen(config.error_log)
            if access_log is not None:
                access_log.reopen()
            logger.info("reopened log files")

    tls = tls_listeners(ctx.listeners, config.certfile)
    if ctx.tls is not None:
        # The worker's own copy of the context: what it offers is its own business.
        if is_handler:
            ctx.tls.sslsocket_class = TrackedSSLSocket
        else:
            ctx.tls.set_alpn_protocols(["http/1.1"])
    if kind == "asyncio":
        return _serve_asgi(ctx, app, slot, info, pid, signals, access_log, on_signal,
                           on_request_done, tls)
    dispatcher = SyncDispatcher() if kind == "sync" else ThreadDispatcher(config.threads)
    if is_handler:
        servers = [DatagramServer(l.sock, app, config.max_packet_size) if l.datagram
                   else HandlerServer(l.sock, app, config.idle_timeout) for l in ctx.listeners]
    else:
        servers = [WSGIServer(l.sock, app, config, kind == "thread", access_log, secure)
                   for l, secure in zip(ctx.listeners, tls)]
    _arm_idle_closing(servers, sync=kind == "sync")
    servers = wrap_servers(servers, ctx.listeners, tls, config, ctx.tls, http=not is_handler,
                           handshake_inside=False)
    loop = ServeLoop(servers, dispatcher, slot, signals, ctx.alive_fd,
                     config.graceful_timeout, on_signal, on_request_done,
                     max_connections=config.worker_connections, needs_thread=is_handler,
                     inflight=inflight.tracker(slot, kind == "thread")
                     if config.request_timeout or config.show_requests else None)
    loop.open()
    ctx.reports.report_modules(pid)     # --reload: what the master watches
    ctx.reports.send(READY, pid)
    logger.info("worker ready (gen %d, %s, %s)", ctx.generation,
                f"{config.threads} threads" if kind == "thread" else "sync",
                "handler class" if is_handler else "WSGI")
    loop.run()
    ctx.hooks.call("worker_exit", config, info)
    logger.info("worker exiting")
    return EXIT_OK


def _boot_failed(ctx: WorkerContext, pid: int, exc: Exception) -> int:
    """The target cannot be served: tell the master why, exit 3 (at the first start
    the master exits 3 too; on a reload the old generation keeps serving)."""
    logger.error("%s", exc)
    ctx.reports.report_modules(pid, str(exc))   # --reload: a fix of the file is seen
    ctx.reports.send(BOOT_ERROR, pid, str(exc).split("\n", 1)[0])
    return EXIT_TARGET


def _recycler(ctx: WorkerContext, slot: object, pid: int) -> Callable[[], None]:
    """After each request: past max_requests (+ jitter), ask the master for a replacement."""
    limit = ctx.config.max_requests
    if limit:
        limit += random.randint(0, ctx.config.max_requests_jitter)
    asked = False

    def on_request_done() -> None:
        nonlocal asked
        if limit and not asked and slot.requests >= limit:
            asked = True
            ctx.reports.send(RECYCLE, pid)

    return on_request_done


def _serve_asgi(ctx: WorkerContext, app: object, slot: object, info: WorkerInfo, pid: int,
                signals: SignalPipe, access_log: Optional[AccessLog], on_signal: Callable[[int], None],
                on_request_done: Callable[[], None], tls: List[bool]) -> int:
    """The asyncio worker: lifespan startup (a failure is a boot failure), ready, serve,
    then lifespan shutdown once the last request of a graceful stop is done."""
    config = ctx.config
    signal.signal(signal.SIGQUIT, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    lifespan = Lifespan(app, config.lifespan, config.timeout)
    servers = [ASGIServer(l.sock, app, config, access_log, lifespan.state,
                          ctx.tls if secure else None)
               for l, secure in zip(ctx.listeners, tls)]
    edged = wrap_servers(servers, ctx.listeners, tls, config, ctx.tls, http=True,
                         handshake_inside=True)
    loop = AsyncioLoop(edged, slot, signals, ctx.alive_fd, config.graceful_timeout,
                       on_signal, on_request_done, config.worker_connections, config.loop,
                       show_requests=config.show_requests)
    try:
        loop.boot(lifespan.startup)
    except LifespanFailure as exc:
        return _boot_failed(ctx, pid, exc)
    for server in servers:
        server.state = lifespan.state if lifespan.running else None
    loop.open()
    ctx.reports.report_modules(pid)     # --reload: what the master watches
    ctx.reports.send(READY, pid)
    logger.info("worker ready (gen %d, asyncio on %s, ASGI%s)", ctx.generation, loop.kind,
                ", lifespan" if lifespan.running else "")
    loop.run(lifespan.shutdown)
    ctx.hooks.call("worker_exit", config, info)
    logger.info("worker exiting")
    return EXIT_OK
