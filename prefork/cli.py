"""The ``prefork`` command: argparse front over config, master and checks.

Flags are generated from :class:`prefork.config.Config`'s fields, so every
setting is a flag with the same name (``max_requests`` -> ``--max-requests``)
and the same help text.  Only flags the operator typed are passed on, so the
CLI overrides the config file and nothing else does.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

from . import __version__, commands as steering, config as config_mod, log, sockets, target
from .errors import EXIT_OK, PreforkError


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    parser.add_argument("target", nargs="?", default=argparse.SUPPRESS, metavar="TARGET",
                        help="module:name (handler class, WSGI or ASGI app) or module:factory()")
    # One argument group per topic, in config.GROUPS order; argparse leaves out
    # a group with no flag (Application: TARGET stays a positional).
    groups = {title: parser.add_argument_group(title) for title in config_mod.GROUPS}
    for name, field in config_mod.FIELDS.items():
        if name == "target":
            continue
        meta = field.metadata
        flags = [f"--{name.replace('_', '-')}"]
        if meta["flag"]:
            flags.insert(0, meta["flag"])
        kind = config_mod.field_type(name)
        options: Dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                   "help": f"{meta['help']} (default: {_shown(field.default)})"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            options.update(action="append", metavar=meta["metavar"] or "VALUE")
        else:
            options.update(type=kind, metavar=meta["metavar"] or None)
            if meta["choices"]:
                options.update(choices=meta["choices"], metavar=None)
        groups[meta["group"]].add_argument(*flags, **options)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(value)
    return str(value).replace("%", "%%")


class _Version(argparse.Action):
    """--version, which also says which implementation of the HTTP hot path runs
    (imported only when asked: every other command starts without it)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from .compiled import describe
        print(f"prefork {__version__}\n{describe()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefork", description="A prefork server and process supervisor.")
    parser.add_argument("--version", action=_Version, nargs=0, default=argparse.SUPPRESS,
                        help="show the version and whether the hot path is compiled, and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the master and its workers")
    _add_setting_flags(serve)
    check = commands.add_parser("check", help="load the config and import the target, then exit")
    _add_setting_flags(check)
    reload = commands.add_parser("reload", help="start a new generation (like HUP)")
    steering.add_target_flags(reload)
    stop = commands.add_parser("stop", help="stop gracefully (TERM), or --fast (QUIT)")
    steering.add_target_flags(stop)
    stop.add_argument("--fast", action="store_true", help="workers exit at once")
    stop.add_argument("--wait", type=float, default=steering.STOP_WAIT, metavar="S",
                      help="seconds to wait for the master to exit (default: %(default)s)")
    stop.add_argument("--no-wait", action="store_true", help="return once the stop is asked")
    status = commands.add_parser("status", help="show the pool: PID, generation, activity, "
                                                "age, requests, RSS")
    steering.add_target_flags(status)
    status.add_argument("--format", choices=("table", "json", "prometheus"), default="table",
                        help="a table, JSON, or Prometheus text (default: %(default)s)")
    status.add_argument("--json", dest="format", action="store_const", const="json",
                        help="the same as --format json")
    top = commands.add_parser("top", help="a live view of the pool, refreshed every second "
                                          "(keys: q quit, s sort, r reverse)")
    steering.add_target_flags(top)
    top.add_argument("--interval", type=_positive, default=1.0, metavar="S",
                     help="seconds between refreshes (default: %(default)s)")
    scale = commands.add_parser("scale", help="set the pool size: N, +N or -N")
    steering.add_target_flags(scale)
    scale.add_argument("workers", metavar="N|+N|-N")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def top(args: argparse.Namespace) -> int:
    from . import top_screen     # curses only for this command

    sock, pid_path = steering.locate(args)
    return top_screen.run(lambda: steering.fetch_status(sock, pid_path), args.interval)


def _load(args: argparse.Namespace) -> config_mod.Config:
    values = {k: v for k, v in vars(args).items() if k in config_mod.FIELDS}
    return config_mod.load(args.config, values)


def serve(args: argparse.Namespace) -> int:
    # Imported here, so that `prefork check` and the steering commands stay light.
    from .supervisor import daemon, upgrade

    inheritance = upgrade.inherited()     # set when an old master re-executed us (USR2)
    if inheritance is None:
        return _serve(args, None, daemon.NOT_DAEMON)
    readiness = daemon.Readiness(inheritance.ready)
    try:
        return _serve(args, inheritance, readiness)
    except PreforkError as exc:
        # The old master logs why (the first line; the rest is in the error log).
        readiness.fail(exc.status, str(exc).split("\n", 1)[0])
        raise


def _serve(args: argparse.Namespace, inheritance: Any, readiness: Any) -> int:
    from .supervisor import daemon, privileges
    from .supervisor.master import Master
    from .supervisor.pidfile import take

    # Before --chdir moves us: a new master (USR2) starts where the operator did.
    launch_directory = os.getcwd()
    config = _prepare(_load(args))
    identity = privileges.resolve(config.user, config.group)
    log.configure(config.error_log, config.log_level)
    # Before binding: a running twin is the clearer error.
    pidfile = take(config.pidfile, inheritance.pidfile if inheritance else None)
    try:
        master = Master(config, lambda: _prepare(_load(args), chdir=False), pidfile, identity,
                        inheritance, launch_directory)
        master.bind()
        log.touch_access_log(config.access_log)
        if identity is not None:
            privileges.hand_over([config.error_log, config.access_log], identity)
    except BaseException:
        if pidfile is not None:
            pidfile.remove()    # we made it (or took it over stale): a failed start leaves none
        raise
    if config.daemon and inheritance is None:   # an upgraded master is detached already
        if config.error_log == "-":
            log.console("prefork: warning: --daemon with --error-log '-': log lines go to "
                        "/dev/null; give --error-log FILE")
        readiness = daemon.detach(master.fds_to_preserve(),
                                  stderr_is_log=config.error_log != "-")
    if pidfile is not None and inheritance is None:
        pidfile.write(os.getpid())   # an upgraded master writes it once it is serving
    return master.run(readiness)



def _prepare(config: config_mod.Config, chdir: bool = True) -> config_mod.Config:
    """Apply chdir and umask, and make file paths absolute (a daemon changes directory)."""
    if chdir and config.chdir:
        os.chdir(config.chdir)
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
    if config.umask:
        os.umask(int(config.umask, 8))
    paths = {}
    for key in ("error_log", "access_log", "pidfile", "control_socket"):
        value = getattr(config, key)
        if value and value != "-":
            paths[key] = os.path.abspath(value)
    return config.replace(**paths)


def check(args: argparse.Namespace) -> int:
    from .hooks import Hooks
    from .servers.edge.tls import server_context

    config = _load(args)
    specs = sockets.parse_all(config.bind)
    Hooks(config)      # a hook path that does not import fails here as it would in serve
    if config.certfile or any(s.tls for s in specs):
        server_context(config)      # the certificate files load, or their key is named
    spec = target.parse(config.target)
    obj = target.load_servable(spec)
    # An fd://N socket's kind is only known once it is open, in serve.
    target.check_kinds(spec, obj, [(s.text, s.type == sockets.DGRAM) for s in specs if s.fd < 0])
    target.worker_kind(spec, obj, config.worker_class)    # -k asyncio on a WSGI app...
    print(f"OK: {config.target} is {target.describe(obj)}; {config.workers} workers on "
          f"{', '.join(config.bind)}")
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Targets are imported relative to where the operator runs the command,
    # as `python -m` would, which a console script does not do by itself.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return {"serve": serve, "check": check, "reload": steering.reload,
                "stop": steering.stop, "status": steering.status,
                "scale": steering.scale, "top": top}[args.command](args)
    except PreforkError as exc:
        log.console(f"prefork: error: {exc}")
        return exc.status
    except KeyboardInterrupt:
        return EXIT_OK
