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

from . import __version__, config as config_mod, log, sockets, target
from .errors import EXIT_OK, PreforkError, TargetError


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    parser.add_argument("target", nargs="?", default=argparse.SUPPRESS, metavar="TARGET",
                        help="module:name (handler class or WSGI app) or module:factory()")
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
        parser.add_argument(*flags, **options)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(value)
    return str(value).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefork", description="A prefork server and process supervisor.")
    parser.add_argument("--version", action="version", version=f"prefork {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the master and its workers")
    _add_setting_flags(serve)
    check = commands.add_parser("check", help="load the config and import the target, then exit")
    _add_setting_flags(check)
    return parser


def _load(args: argparse.Namespace) -> config_mod.Config:
    values = {k: v for k, v in vars(args).items() if k in config_mod.FIELDS}
    return config_mod.load(args.config, values)


def serve(args: argparse.Namespace) -> int:
    from .supervisor.master import Master   # keeps `prefork check` light

    config = _load(args)
    log.configure(config.error_log, config.log_level)
    master = Master(config, lambda: _load(args))
    master.bind()
    return master.run()


def check(args: argparse.Namespace) -> int:
    config = _load(args)
    sockets.parse_all(config.bind)
    obj = target.load(target.parse(config.target))
    if target.is_handler_class(obj):
        kind = "a socketserver handler class"
    elif callable(obj):
        kind = "a WSGI application"
    else:
        raise TargetError(f"target {config.target!r} is {obj!r}: neither a "
                          "socketserver.BaseRequestHandler subclass nor a WSGI callable")
    print(f"OK: {config.target} is {kind}; {config.workers} workers on "
          f"{', '.join(config.bind)}")
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Targets are imported relative to where the operator runs the command,
    # as `python -m` would, which a console script does not do by itself.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return {"serve": serve, "check": check}[args.command](args)
    except PreforkError as exc:
        print(f"prefork: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_OK
