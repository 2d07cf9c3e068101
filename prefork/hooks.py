"""Operator hooks: dotted paths in the config, called at fixed points of the process life.

=============  =========  ==========================================
hook           runs in    called
=============  =========  ==========================================
on_starting    master     before the listeners are bound: f(config)
when_ready     master     each time a generation is all ready: f(config)
pre_fork       master     just before a worker is forked: f(config, worker)
post_fork      worker     after fork, before the target is loaded: f(config, worker)
worker_exit    worker     after it stopped serving (not when killed): f(config, worker)
on_reload      master     on HUP, once the new config loaded: f(config)
on_exit        master     just before it exits: f(config)
=============  =========  ==========================================

Hook modules are imported when the master starts (a bad path is a config
error naming the key, exit 2); a HUP resolves the paths again, so a changed
path takes effect, but a module already imported is not re-read (a USR2
upgrade loads new hook code).  A hook that raises is logged with its
traceback; the process it runs in goes on.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict

from .config import Config
from .errors import ConfigError
from .target import import_failure

logger = logging.getLogger("prefork")

NAMES = ("on_starting", "when_ready", "pre_fork", "post_fork", "worker_exit",
         "on_reload", "on_exit")


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker hook learns about its worker (pid is 0 in pre_fork)."""

    pid: int
    generation: int
    slot: int


class Hooks:
    """The hooks of one config, resolved to callables."""

    def __init__(self, config: Config) -> None:
        self._paths = {name: getattr(config, name) for name in NAMES if getattr(config, name)}
        self._calls: Dict[str, Callable[..., Any]] = {
            name: resolve(name, path) for name, path in self._paths.items()}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def call(self, name: str, *args: Any) -> None:
        """Run hook ``name`` if configured; an exception is logged, never raised."""
        function = self._calls.get(name)
        if function is None:
            return
        try:
            function(*args)
        except Exception:
            logger.error("hook %s (%s) raised; going on:\n%s", name, self._paths[name],
                         traceback.format_exc().rstrip())


NO_HOOKS = Hooks(Config())


def resolve(key: str, path: str) -> Callable[..., Any]:
    """Import ``module:function`` (or ``module.function``); ConfigError naming ``key``."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:   # a module may sys.exit() at import
        raise ConfigError(f"key '{key}' (hook {path!r}): "
                          f"{import_failure(module_name, exc)}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"key '{key}': module {module_name!r} has no callable "
                          f"{attribute!r}") from None
    return function
