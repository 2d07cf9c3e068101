"""The checks of single settings' values, named in :mod:`.config`'s fields (``check=``).

Each takes the value and returns an error message, or "" when the value is
fine; the message is shown after the key and where it came from.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Callable

from .accounts import gid_of, uid_of


def octal(value: str) -> str:
    if value and not (value.isascii() and all(c in "01234567" for c in value)
                      and int(value, 8) <= 0o777):
        return "expected an octal mode such as 022"
    return ""


def _exists(lookup: Callable[[str], int]) -> Callable[[str], str]:
    """A check that a user or group name exists (numeric ids are taken as they are)."""
    def check(value: str) -> str:
        if value:
            try:
                lookup(value)
            except KeyError as exc:
                return exc.args[0]
        return ""
    return check


user = _exists(uid_of)
group = _exists(gid_of)


def owner(value: str) -> str:
    name, _, group_name = value.partition(":")
    return user(name) or group(group_name)


def dotted(value: str) -> str:
    """A hook: 'module:function' (or 'module.function'), imported when the master starts."""
    if value and not _DOTTED.fullmatch(value):
        return "expected a dotted path such as 'mypkg.hooks:on_starting'"
    return ""


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*([:.][A-Za-z_]\w*)")


def directory(value: str) -> str:
    if value and not os.path.isdir(value):
        return f"no such directory {value!r}"
    return ""


def event_loop(value: str) -> str:
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "uvloop is not installed (pip install 'prefork[uvloop]'), or use 'auto'"
    return ""
