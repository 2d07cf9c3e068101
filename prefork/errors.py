"""Errors that end the command with a documented exit status.

0 clean stop; 1 runtime failure; 2 usage or config error; 3 target cannot be
imported; 4 cannot bind.  Each exception carries its status so the CLI maps
any of them to ``prefork: error: MESSAGE`` and the right exit code.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_TARGET = 3
EXIT_BIND = 4


class PreforkError(Exception):
    """Base class: a message meant for the operator, and an exit status."""

    status = EXIT_FAILURE


class ConfigError(PreforkError):
    status = EXIT_CONFIG


class TargetError(PreforkError):
    status = EXIT_TARGET


class BindError(PreforkError):
    status = EXIT_BIND
