"""Which implementation of the HTTP hot path runs: compiled with mypyc, or plain Python.

The install compiles the modules in :data:`MODULES` when it can (setup.py);
they stay plain Python modules too, beside their compiled twins.  Python
imports an extension module before a source file of the same name, so the
compiled one runs wherever it was built.  ``PREFORK_PURE_PYTHON=1`` in the
environment of a process (and of the workers it forks) makes it import the
sources instead: for comparing the two, for running the tests both ways,
or for a traceback with Python frames in it.  The sources are imported too
when a compiled module is older than its source (an editable install whose
code was edited since): an edit always takes effect.  ``prefork --version``
says which one a process would run.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import glob
import os
import sys
from typing import Optional, Sequence

# setup.py's COMPILED, as module names; tests/unit/test_compiled.py checks that they agree.
MODULES = (
    "prefork.servers.http.grammar",
    "prefork.servers.http.parser",
    "prefork.servers.http.protocol",
    "prefork.servers.http.response",
    "prefork.servers.http.heads",
    "prefork.servers.http.environ",
    "prefork.servers.http.exchange",
    "prefork.servers.http.connection",
    "prefork.servers.edge.forwarded",
    "prefork.scoreboard",
    "prefork.worker.inflight",
    "prefork.worker.jobs",
)

PURE_ENV = "PREFORK_PURE_PYTHON"
# An install writes a module's source and its extension moments apart, in
# either order: only a source newer by more than this was edited after the build.
EDITED_AFTER = 5.0


def pure_wanted() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


class SourceOnly(importlib.abc.MetaPathFinder):
    """Finds the hot-path modules as source files, passing over their compiled twins."""

    def find_spec(self, name: str, path: Optional[Sequence[str]],
                  target: object = None) -> Optional[importlib.machinery.ModuleSpec]:
        if name not in MODULES:
            return None
        leaf = name.rpartition(".")[2] + ".py"
        for entry in path or ():
            candidate = os.path.join(entry, leaf)
            if os.path.exists(candidate):
                return importlib.util.spec_from_file_location(name, candidate)
        return None


def stale(root: str = "") -> bool:
    """Is a compiled module older than its source (edited since it was built)?
    ``root``: the directory holding the ``prefork`` package (this one's by default)."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in MODULES:
        source = os.path.join(root, *name.split(".")) + ".py"
        for built in glob.glob(source[:-3] + ".*.so"):
            try:
                if os.stat(source).st_mtime - os.stat(built).st_mtime > EDITED_AFTER:
                    return True
            except OSError:
                continue
    return False


def install_switch() -> None:
    """Called once, as the package is imported: the sources when PREFORK_PURE_PYTHON
    is set or the compiled modules are stale."""
    if (pure_wanted() or stale()) and not any(isinstance(f, SourceOnly) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnly())


def compiled_modules() -> list:
    """The hot-path modules that are compiled in this process (imported on the way)."""
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        if not (getattr(module, "__file__", "") or "").endswith(".py"):
            found.append(name)
    return found


def describe() -> str:
    """One line for ``prefork --version`` and the worker's log."""
    compiled = compiled_modules()
    if len(compiled) == len(MODULES):
        return "HTTP hot path: compiled (mypyc)"
    if compiled:
        return f"HTTP hot path: partly compiled ({len(compiled)} of {len(MODULES)} modules)"
    if pure_wanted():
        return f"HTTP hot path: pure Python, {PURE_ENV} is set"
    if stale():
        return ("HTTP hot path: pure Python, its compiled modules are older than their "
                "sources (`pip install -e .` compiles them again)")
    return "HTTP hot path: pure Python (not compiled at install)"
