"""User and group lookups, as the config checks, unix socket owners and workers use them."""

from __future__ import annotations

import pytest

from prefork.accounts import gid_of, uid_of, user_entry
from prefork.config import load
from prefork.errors import ConfigError
from prefork.supervisor import privileges
from prefork.supervisor.listeners import bind_options


def test_names_and_numbers() -> None:
    assert uid_of("root") == 0 and gid_of("root") == 0
    assert uid_of("4321") == 4321 and gid_of("4321") == 4321   # taken as is, as chown does
    assert user_entry("0").pw_name == "root"


@pytest.mark.parametrize("lookup, what", [(uid_of, "user"), (gid_of, "group"),
                                          (user_entry, "user")])
def test_unknown_names_are_named(lookup, what) -> None:
    with pytest.raises(KeyError) as info:
        lookup("no-such-account-here")
    assert info.value.args[0] == f"no such {what} 'no-such-account-here'"


def test_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="user.*no such user 'no-such-account-here'"):
        load(None, {"target": "x:y", "user": "no-such-account-here"})
    with pytest.raises(ConfigError, match="unix_socket_owner.*no such group 'nogroup-here'"):
        load(None, {"target": "x:y", "unix_socket_owner": "root:nogroup-here"})


def test_privileges_and_socket_owner_agree() -> None:
    assert privileges.resolve("root", "0") == privileges.Identity(0, 0, "root")
    with pytest.raises(ConfigError, match="key 'group': no such group 'nogroup-here'"):
        privileges.resolve("root", "nogroup-here")
    config = load(None, {"target": "x:y", "unix_socket_owner": "root:4321"})
    assert bind_options(config).unix_owner == (0, 4321)
