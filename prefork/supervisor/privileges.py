"""Who the workers run as: resolve --user/--group once, drop to them after fork.

The master binds (port 80 needs root) and stays root, so it can bind new
addresses on a reload; every worker drops to the configured user and group
before it imports any application code, and never runs as root when a user
is given.  Log files are handed to that user, so workers can reopen them.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Iterable, Optional

from ..accounts import gid_of, user_entry
from ..errors import ConfigError


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    name: str


def resolve(user: str, group: str) -> Optional[Identity]:
    """The identity to drop to, or None when no user or group is configured."""
    if not user and not group:
        return None
    try:
        entry = user_entry(user) if user else pwd.getpwuid(os.getuid())
    except KeyError as exc:
        raise ConfigError(f"key 'user': {exc.args[0]}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = gid_of(group)
        except KeyError as exc:
            raise ConfigError(f"key 'group': {exc.args[0]}") from None
    return Identity(entry.pw_uid, gid, entry.pw_name)


def drop(identity: Identity) -> None:
    """Become ``identity`` for good (in a worker, right after fork)."""
    if os.getuid() == identity.uid and os.getgid() == identity.gid:
        return
    if os.getuid() == 0:
        os.setgroups([])
        try:
            os.initgroups(identity.name, identity.gid)
        except OSError:
            pass
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if identity.uid != 0 and os.getuid() == 0:   # pragma: no cover - setuid lied
        raise OSError("could not drop root privileges")


def hand_over(paths: Iterable[str], identity: Identity) -> None:
    """chown files the workers must reopen (logs) to the worker identity."""
    if os.getuid() != 0:
        return
    for path in paths:
        if path and path != "-" and os.path.exists(path):
            os.chown(path, identity.uid, identity.gid)
