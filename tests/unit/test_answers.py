"""The control socket's commands, answered without a master: reply plus events."""

import os
import signal

from prefork.supervisor.answers import answer
from prefork.supervisor.events import Reload, ReloadFailed, Scale, Signal


def ask(message, reload_events=(), pool_size=4):
    return answer(message, lambda: {"workers": []}, lambda: list(reload_events), pool_size)


def test_status_is_the_snapshot_and_changes_nothing():
    assert ask({"cmd": "status"}) == ({"ok": True, "workers": []}, [])


def test_reload_passes_its_events_on():
    reply, events = ask({"cmd": "reload"}, [Reload(2)])
    assert reply == {"ok": True, "pid": os.getpid(), "upgrade": False}
    assert events == [Reload(2)]


def test_a_reload_that_failed_says_why():
    reply, events = ask({"cmd": "reload"}, [ReloadFailed("bad key 'workers'")])
    assert reply == {"ok": False, "error": "reload failed: bad key 'workers'"}
    assert events == [ReloadFailed("bad key 'workers'")]   # logged by the arbiter too


def test_a_reload_with_preload_is_an_upgrade_with_no_arbiter_event():
    assert ask({"cmd": "reload"}, []) == ({"ok": True, "pid": os.getpid(), "upgrade": True}, [])


def test_stop_is_term_and_fast_stop_is_quit():
    assert ask({"cmd": "stop"})[1] == [Signal(signal.SIGTERM)]
    assert ask({"cmd": "stop", "fast": True})[1] == [Signal(signal.SIGQUIT)]


def test_scale_absolute_and_relative():
    assert ask({"cmd": "scale", "workers": 6}) == (
        {"ok": True, "pid": os.getpid(), "workers": 6}, [Scale(6)])
    assert ask({"cmd": "scale", "workers": -2, "relative": True}, pool_size=5)[1] == [Scale(3)]
    reply, events = ask({"cmd": "scale", "workers": -9, "relative": True}, pool_size=5)
    assert reply["workers"] == 1 and events == [Scale(-4)]   # the arbiter clamps it


def test_bad_requests_change_nothing():
    assert ask({"cmd": "scale", "workers": "many"}) == (
        {"ok": False, "error": "scale needs an integer 'workers'"}, [])
    assert ask({"cmd": "scale", "workers": True})[1] == []
    assert ask({"cmd": "explode"}) == ({"ok": False, "error": "unknown command 'explode'"}, [])
