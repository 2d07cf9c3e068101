"""User and group names as numeric ids: one lookup for config checks, sockets and workers.

A numeric value is taken as the id itself, as chown(1) does; a name that
does not exist raises KeyError with a message naming it.
"""

from __future__ import annotations

import grp
import pwd


def user_entry(user: str) -> pwd.struct_passwd:
    """The password entry of a user name or numeric id."""
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise KeyError(f"no such user {user!r}") from None


def uid_of(user: str) -> int:
    if user.isdigit():
        return int(user)
    return user_entry(user).pw_uid


def gid_of(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise KeyError(f"no such group {group!r}") from None
