"""The control socket's commands, answered without a master: what is fed, what is replied.

``steer`` stands for the master feeding the arbiter: it records the events
and returns a canned outcome, or (at the end) drives a real Arbiter.
"""

import os
import signal

from arbiter_driver import T, running
from prefork.supervisor.answers import Outcome, answer
from prefork.supervisor.events import (LoadConfig, Log, Refused, Reload, ReloadFailed,
                                       ReloadWanted, Scale, Signal, StartUpgrade, UpgradeFailed,
                                       UpgradeStarted)

PID = os.getpid()


class Steer:
    def __init__(self, trail=(), pool_size=4):
        self.fed = []
        self.outcome = Outcome(list(trail), pool_size)

    def __call__(self, events):
        self.fed += events
        return self.outcome


def ask(message, steer=None):
    steer = steer or Steer()
    return answer(message, lambda: {"workers": []}, steer), steer.fed


def test_status_is_the_snapshot_and_changes_nothing():
    assert ask({"cmd": "status"}) == ({"ok": True, "workers": []}, [])


def test_a_reload_is_fed_and_its_outcome_replied():
    loaded = [ReloadWanted("reload"), Log("info", "reload: reloading the configuration"),
              LoadConfig(), Reload(2)]
    assert ask({"cmd": "reload"}, Steer(loaded)) == (
        {"ok": True, "pid": PID, "upgrade": False}, [ReloadWanted("reload")])


def test_a_reload_that_failed_says_why():
    trail = [ReloadWanted("reload"), LoadConfig(), ReloadFailed("bad key 'workers'")]
    reply, _ = ask({"cmd": "reload"}, Steer(trail))
    assert reply == {"ok": False, "error": "reload failed: bad key 'workers'"}


def test_a_reload_with_preload_is_an_upgrade():
    trail = [ReloadWanted("reload"), StartUpgrade(1), UpgradeStarted(4321)]
    assert ask({"cmd": "reload"}, Steer(trail))[0] == {"ok": True, "pid": PID, "upgrade": True}
    trail = [ReloadWanted("reload"), StartUpgrade(1), UpgradeFailed(0, "cannot fork: ENOMEM")]
    assert ask({"cmd": "reload"}, Steer(trail))[0] == {
        "ok": False, "error": "upgrade failed: cannot fork: ENOMEM"}


def test_a_reload_refused_says_so():
    trail = [ReloadWanted("reload"), Refused("info", "reload while stopping; ignored")]
    assert ask({"cmd": "reload"}, Steer(trail))[0] == {
        "ok": False, "error": "reload while stopping; ignored"}


def test_stop_is_term_and_fast_stop_is_quit():
    assert ask({"cmd": "stop"}) == ({"ok": True, "pid": PID}, [Signal(signal.SIGTERM)])
    assert ask({"cmd": "stop", "fast": True})[1] == [Signal(signal.SIGQUIT)]


def test_scale_replies_the_size_the_arbiter_applied():
    assert ask({"cmd": "scale", "workers": 6}, Steer(pool_size=6)) == (
        {"ok": True, "pid": PID, "workers": 6}, [Scale(6)])
    reply, fed = ask({"cmd": "scale", "workers": -9, "relative": True}, Steer(pool_size=1))
    assert reply["workers"] == 1 and fed == [Scale(-9, relative=True)]
    refused = Steer([Scale(3), Refused("info", "scale while stopping; ignored")])
    assert ask({"cmd": "scale", "workers": 3}, refused)[0] == {
        "ok": False, "error": "scale while stopping; ignored"}


def test_bad_requests_change_nothing():
    assert ask({"cmd": "scale", "workers": "many"}) == (
        {"ok": False, "error": "scale needs an integer 'workers'"}, [])
    assert ask({"cmd": "scale", "workers": True})[1] == []
    assert ask({"cmd": "explode"}) == ({"ok": False, "error": "unknown command 'explode'"}, [])


# -- through a real arbiter: the reply is what the arbiter did ----------------------

def arbiter_steer(pool):
    def steer(events):
        trail = []
        for event in events:
            trail += [event] + pool.decide(event, T + 1)
        return Outcome(trail, pool.arb.target)
    return steer


def test_scale_past_the_maximum_replies_the_clamped_size():
    pool, _ = running(2, capacity=8)       # at most 4 workers
    reply = answer({"cmd": "scale", "workers": 600}, dict, arbiter_steer(pool))
    assert reply == {"ok": True, "pid": PID, "workers": 4} and pool.arb.target == 4
    reply = answer({"cmd": "scale", "workers": -10, "relative": True}, dict,
                   arbiter_steer(pool))
    assert reply["workers"] == 1 == pool.arb.target


def test_scale_of_an_adaptive_pool_replies_its_ceiling_too():
    pool, _ = running(1, capacity=16)
    pool.arb.autoscale.ceiling = 4

    def steer(events):
        trail = []
        for event in events:
            trail += [event] + pool.decide(event, T + 1)
        return Outcome(trail, pool.arb.target, pool.arb.grows_to)
    reply = answer({"cmd": "scale", "workers": 2}, dict, steer)
    assert reply == {"ok": True, "pid": PID, "workers": 2, "workers_max": 4}
    reply = answer({"cmd": "scale", "workers": 6}, dict, steer)
    assert reply == {"ok": True, "pid": PID, "workers": 6}


def test_scale_while_stopping_is_refused():
    pool, _ = running(2)
    pool.decide(Signal(signal.SIGTERM))
    reply = answer({"cmd": "scale", "workers": 3}, dict, arbiter_steer(pool))
    assert reply == {"ok": False, "error": "scale while stopping; ignored"}
    assert pool.arb.target == 2


def test_reload_through_the_arbiter_asks_the_shell_to_load_the_config():
    pool, _ = running(2)
    steer = arbiter_steer(pool)
    # The shell would answer LoadConfig with Reload or ReloadFailed within the same steer.
    trail = steer([ReloadWanted("reload")]).trail
    assert LoadConfig() in trail
