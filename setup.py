"""Packaging: pyproject.toml holds the metadata; this file only adds the compiled hot path.

The modules in ``COMPILED`` are compiled with mypyc where that works (CPython,
mypyc importable in the build environment, a C compiler).  Anywhere else,
or with ``PREFORK_PURE_PYTHON=1`` set at install time, nothing is compiled and
the same modules run as plain Python: the install never fails for want of a
compiler.  ``prefork --version`` says which one runs.
"""

from __future__ import annotations

import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The HTTP/1.1 request path of every worker: sans-IO parser and protocol, the
# WSGI exchange and environ, the selector connection.  Each module also runs
# uncompiled, and the test suite runs both ways (README, "Compiled hot path").
COMPILED = [
    "prefork/servers/http/grammar.py",
    "prefork/servers/http/parser.py",
    "prefork/servers/http/protocol.py",
    "prefork/servers/http/response.py",
    "prefork/servers/http/heads.py",
    "prefork/servers/http/environ.py",
    "prefork/servers/http/exchange.py",
    "prefork/servers/http/connection.py",
    "prefork/servers/edge/forwarded.py",
    "prefork/scoreboard.py",
    "prefork/worker/inflight.py",
    "prefork/worker/jobs.py",
]


def _say(text: str) -> None:
    print(f"prefork build: {text}", file=sys.stderr)


def compiled_extensions() -> list:
    if os.environ.get("PREFORK_PURE_PYTHON", "") not in ("", "0"):
        _say("PREFORK_PURE_PYTHON is set: pure Python")
        return []
    if platform.python_implementation() != "CPython":
        _say(f"{platform.python_implementation()}: pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        _say(f"mypyc is not available ({exc}): pure Python")
        return []
    # Only these modules are compiled and must type-check; what they import
    # is read for its types, its own errors not reported.
    options = ["--follow-imports=silent", "--ignore-missing-imports"]
    try:
        return mypycify(options + COMPILED, opt_level="3", group_name="prefork._compiled")
    except (Exception, SystemExit) as exc:   # mypyc exits on a type error: still install
        _say(f"mypyc could not compile the hot path ({exc!r}): pure Python")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when there is no working C compiler."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            _say(f"no compiled hot path ({exc}): pure Python")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _say(f"could not build {ext.name} ({exc}): pure Python")
            raise


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
