"""Logging for master and workers: one error log, reopened on USR1.

When the error log is a file, it is opened once and dup2()'d onto fd 2, so
that everything a process writes to standard error (handler classes'
``log_message``, faulthandler's tracebacks, uncaught errors) lands in the
same file, with no extra handler.  Reopening after logrotate is then one
open + dup2 per process.
"""

from __future__ import annotations

import logging
import os
import sys

from .errors import ConfigError

LOGGER_NAME = "prefork"
FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

logger = logging.getLogger(LOGGER_NAME)
# The terminal's stderr, kept when fd 2 is pointed at a log file, so that
# start-up errors still reach the operator who typed the command.
_console_fd = -1


def configure(error_log: str, level: str) -> None:
    """Point the prefork logger (and fd 2) at ``error_log``."""
    _redirect_stderr(error_log)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def reopen(error_log: str) -> None:
    """Reopen the error log file after it was moved away (logrotate)."""
    try:
        _redirect_stderr(error_log)
    except ConfigError as exc:
        logger.error("cannot reopen the error log: %s", exc)


def _redirect_stderr(error_log: str) -> None:
    if error_log == "-":
        return
    try:
        fd = os.open(error_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as exc:
        raise ConfigError(f"key 'error_log': cannot open {error_log}: {exc.strerror}") from None
    global _console_fd
    sys.stderr.flush()
    if _console_fd < 0:
        _console_fd = os.dup(2)
        os.set_inheritable(_console_fd, False)
    os.dup2(fd, 2)
    os.close(fd)


def touch_access_log(path: str) -> None:
    """Create the access log now, as the master's user: a bad path is a config error
    (at start, exit 2; on a reload, the reload fails naming it, not the new workers)."""
    if not path or path == "-":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640))
    except OSError as exc:
        raise ConfigError(f"key 'access_log': cannot open {path}: {exc.strerror}") from None


def console(text: str) -> None:
    """Write a line to the operator's terminal, even when fd 2 is the error log."""
    if _console_fd < 0:
        print(text, file=sys.stderr)
        return
    try:
        os.write(_console_fd, (text + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def flush() -> None:
    """Flush Python-level buffers, before a fork or an os._exit."""
    for handler in logger.handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):   # None when the fd was closed
            pass
