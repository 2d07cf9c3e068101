"""Reload and upgrade as the arbiter decides them: HUP, USR2, WINCH, the new master's fate.

The shell only performs LoadConfig and StartUpgrade and feeds back what
came of them; every rule about when, what then, and what is logged is here.
"""

import signal

import pytest

from arbiter_driver import KILL, QUIT, TERM, T, Pool, effects, logs, running
from prefork.supervisor import events
from prefork.supervisor.arbiter import Arbiter
from prefork.supervisor.escalation import KILL_GRACE
from prefork.supervisor.events import (ChildExited, CloseListeners, Exit, HandOver, Kill,
                                       LoadConfig, Log, NewGeneration, Notify, Refused, Reload,
                                       ReloadFailed, ReloadWanted, Scale, Signal, Spawn, Start,
                                       StartUpgrade, Tick, UpgradeFailed, UpgradeReady,
                                       UpgradeStarted, WorkerReady)
from prefork.supervisor.performers import Performer

HUP, USR2, WINCH = signal.SIGHUP, signal.SIGUSR2, signal.SIGWINCH
OLD = 4000      # this master's PID, as Start tells the arbiter
NEW = 5000      # the new master's


def serving(workers=2, **kw):
    """A pool at T whose arbiter knows its master's PID."""
    pool = Pool(workers, **kw)
    pids = pool.fork(pool.decide(Start(OLD)))
    pool.ready(pids)
    return pool, pids


def upgrading(workers=2, now=T + 10, **kw):
    """USR2 at ``now``, the new master NEW forked."""
    pool, pids = serving(workers, **kw)
    assert pool.decide(Signal(USR2), now) == [StartUpgrade(1)]
    assert pool.decide(UpgradeStarted(NEW), now) == [
        Log("info", f"USR2: upgrading: started a new master, PID {NEW}")]
    return pool, pids


def keeps_serving(reason):
    return Log("error", f"upgrade failed: {reason}; this master (PID {OLD}) keeps serving")


# -- HUP: the shell loads the config, the arbiter decides the rest -----------------

def test_hup_asks_the_shell_to_load_the_config():
    pool, _ = serving()
    assert pool.decide(Signal(HUP)) == [Log("info", "HUP: reloading the configuration"),
                                        LoadConfig()]
    assert pool.decide(ReloadWanted("reload")) == [
        Log("info", "reload: reloading the configuration"), LoadConfig()]
    assert pool.arb.generation == 1      # nothing changes before the config is loaded


def test_the_loaded_generation_comes_back_to_the_shell_with_its_number():
    pool, _ = serving()
    loaded = object()       # the shell's record of the generation: opaque here
    out = pool.decide(Reload(2, payload=loaded), T + 1)
    assert NewGeneration(2, loaded) in out
    assert out.index(NewGeneration(2, loaded)) < out.index(Spawn(2, 2))


def test_a_failed_load_only_logs():
    pool, pids = serving()
    assert pool.decide(ReloadFailed("x.toml: bad"), T + 1) == [
        Log("error", "reload failed: x.toml: bad; generation 1 keeps serving")]
    assert sorted(pool.arb.workers) == pids


@pytest.mark.parametrize("event, why", [(Signal(HUP), "HUP"), (ReloadWanted("reload"), "reload")])
def test_a_reload_while_stopping_is_refused(event, why):
    for preload in (False, True):
        pool, _ = serving(preload=preload)
        pool.decide(Signal(TERM))
        assert pool.decide(event) == [Refused("info", f"{why} while stopping; ignored")]


@pytest.mark.parametrize("event, why", [(Signal(HUP), "HUP"), (ReloadWanted("reload"), "reload")])
def test_with_preload_a_reload_is_an_upgrade(event, why):
    pool, _ = serving(preload=True)
    assert pool.decide(event, T + 1) == [StartUpgrade(1)]
    assert pool.decide(UpgradeStarted(NEW), T + 1) == [
        Log("info", f"{why} with preload: upgrading: started a new master, PID {NEW}")]


def test_preload_follows_the_generation_that_serves():
    pool, pids = serving()
    new = pool.fork(pool.decide(Reload(2, preload=True, upgrade_timeout=9.0), T + 1), T + 1)
    pool.ready(new, T + 2)
    assert pool.decide(Signal(HUP), T + 3) == [StartUpgrade(2)]    # the new config preloads
    pool.decide(UpgradeStarted(NEW), T + 3)
    assert pool.arb.next_deadline() == T + 3 + 9.0                 # and its upgrade_timeout
    # A reload that fails at boot restores the old generation's setting.
    pool2, _ = serving()
    [n1, n2] = pool2.fork(pool2.decide(Reload(2, preload=True), T + 1), T + 1)
    pool2.decide(ChildExited(n1, 1), T + 2)
    assert pool2.decide(Signal(HUP), T + 3)[-1] == LoadConfig()


def test_winch_is_logged_and_ignored_in_every_phase():
    pool, _ = serving()
    winch = [Log("info", "WINCH is not used (USR2 hands over by itself); ignored")]
    assert pool.decide(Signal(WINCH)) == winch
    pool.decide(Signal(TERM))
    assert pool.decide(Signal(WINCH)) == winch


# -- USR2: a new master, then hand-over ------------------------------------------------

def test_usr2_starts_a_new_master_that_inherits_the_generation_numbers():
    pool, _ = serving()
    new = pool.fork(pool.decide(Reload(2), T + 1), T + 1)
    pool.ready(new, T + 2)
    assert pool.decide(Signal(USR2), T + 3) == [StartUpgrade(2)]


def test_ready_new_master_gets_everything_and_this_one_stops_gracefully():
    pool, (p1, p2) = upgrading()
    out = pool.decide(UpgradeReady(NEW), T + 20)
    assert out == [
        Log("info", f"upgrade: the new master {NEW} is serving; this master (PID {OLD}) "
                    "stops gracefully"),
        Notify(f"MAINPID={NEW}\nREADY=1\nSTATUS=upgraded: master {NEW} serving"),
        HandOver(NEW),
        Log("info", "graceful stop"), CloseListeners(), Kill(p1, TERM), Kill(p2, TERM)]
    # The service goes on in the new master: no STOPPING=1 from this one, ever.
    assert effects(pool.decide(Signal(signal.SIGINT), T + 21)) == [Kill(p1, QUIT), Kill(p2, QUIT)]
    pool.decide(ChildExited(p1, 0), T + 22)
    assert effects(pool.decide(ChildExited(p2, 0), T + 22)) == [Exit(0)]
    assert pool.decide(ChildExited(NEW, 0), T + 23) == [Exit(0)]   # no longer ours to judge


def test_readiness_from_another_pid_or_twice_changes_nothing():
    pool, _ = upgrading()
    assert pool.decide(UpgradeReady(NEW + 1), T + 20) == []
    pool.decide(UpgradeReady(NEW), T + 20)
    assert effects(pool.decide(UpgradeReady(NEW), T + 21)) == []


def test_a_second_upgrade_is_refused_while_one_is_on_its_way():
    pool, _ = serving()
    pool.decide(Signal(USR2), T + 1)
    assert pool.decide(Signal(USR2), T + 1) == [
        Refused("warning", "USR2: cannot upgrade now (a new master is starting); ignored")]
    pool.decide(UpgradeStarted(NEW), T + 1)
    assert pool.decide(Signal(USR2), T + 2) == [
        Refused("warning", f"USR2: cannot upgrade now (new master {NEW} is starting); ignored")]
    assert pool.decide(Signal(HUP), T + 2)[-1] == LoadConfig()   # a plain reload still works


def test_an_upgrade_while_stopping_is_refused():
    pool, _ = serving()
    pool.decide(Signal(TERM))
    assert pool.decide(Signal(USR2)) == [
        Refused("warning", "USR2: cannot upgrade now (stopping); ignored")]


# -- the new master fails ---------------------------------------------------------------

def test_a_fork_failure_is_logged_and_a_later_usr2_tries_again():
    pool, _ = serving()
    pool.decide(Signal(USR2), T + 1)
    assert pool.decide(UpgradeFailed(0, "cannot fork: Cannot allocate memory"), T + 1) == [
        Log("error", "USR2: upgrade failed: cannot fork: Cannot allocate memory")]
    assert pool.arb.next_deadline() is None
    assert pool.decide(Signal(USR2), T + 2) == [StartUpgrade(1)]


def test_a_new_master_that_says_it_failed_is_waited_for_then_forgotten():
    pool, pids = upgrading()
    assert pool.decide(UpgradeFailed(NEW, "x.toml: unknown key 'wrokers'"), T + 11) == [
        keeps_serving("x.toml: unknown key 'wrokers'")]
    assert pool.decide(UpgradeFailed(NEW, "again"), T + 11) == []    # said once
    assert pool.decide(UpgradeReady(NEW), T + 11) == []
    # Until it is reaped no second new master starts beside the dying one.
    assert isinstance(pool.decide(Signal(USR2), T + 12)[0], Refused)
    assert pool.decide(ChildExited(NEW, 2), T + 12) == []
    assert sorted(pool.arb.workers) == pids                     # not a worker: nothing respawned
    assert pool.decide(Signal(USR2), T + 13) == [StartUpgrade(1)]


@pytest.mark.parametrize("code, how", [(1, "exited with status 1"),
                                       (-9, "was killed by SIGKILL")])
def test_a_new_master_exiting_before_it_is_ready_is_a_failure(code, how):
    pool, pids = upgrading()
    assert pool.decide(ChildExited(NEW, code), T + 11) == [keeps_serving(f"the new master {how}")]
    assert pool.arb.restarts == {} and sorted(pool.arb.workers) == pids
    assert pool.decide(Signal(USR2), T + 12) == [StartUpgrade(1)]


def test_past_upgrade_timeout_the_new_master_gets_quit_then_kill():
    pool, _ = upgrading(upgrade_timeout=60.0)
    assert pool.arb.next_deadline() == T + 70
    assert pool.decide(pool.fresh(T + 69.9), T + 69.9) == []
    assert pool.decide(pool.fresh(T + 70), T + 70) == [
        Log("error", f"upgrade: the new master {NEW} is not ready after 60 s; sending SIGQUIT"),
        Kill(NEW, QUIT)]
    assert pool.arb.next_deadline() == T + 70 + KILL_GRACE
    # Told to quit, it is not serving, whatever it says now.
    assert effects(pool.decide(UpgradeReady(NEW), T + 71)) == []
    assert pool.arb.phase == "running"
    assert pool.decide(pool.fresh(T + 70 + KILL_GRACE), T + 70 + KILL_GRACE) == [
        Log("error", f"upgrade: the new master {NEW} is not ready after 60 s; sending SIGKILL"),
        Kill(NEW, KILL)]
    assert pool.arb.next_deadline() is None
    assert pool.decide(pool.fresh(T + 90), T + 90) == []
    assert pool.decide(ChildExited(NEW, -9), T + 91) == [
        keeps_serving("the new master was killed by SIGKILL")]


def test_the_new_masters_deadline_and_the_workers_share_the_next_deadline():
    pool, _ = upgrading(graceful_timeout=5.0, upgrade_timeout=60.0)
    pool.decide(Signal(signal.SIGTTOU), T + 11)         # one worker retiring: due T + 16
    assert pool.arb.next_deadline() == T + 16
    pool.decide(Tick(), T + 16)
    pool.decide(Tick(), T + 18)
    assert pool.arb.next_deadline() == T + 70


# -- a stop abandons the upgrade -------------------------------------------------------------

def test_a_stop_during_an_upgrade_abandons_it():
    pool, (p1, p2) = upgrading()
    out = pool.decide(Signal(TERM), T + 11)
    assert out == [Log("info", "graceful stop"), Notify("STOPPING=1"), CloseListeners(),
                   Log("warning", "stopping: the upgrade is abandoned; sending SIGQUIT to the "
                                  f"new master {NEW}"), Kill(NEW, QUIT),
                   Kill(p1, TERM), Kill(p2, TERM)]
    # It is forgotten: no hand-over, no deadline, its exit is not waited for.
    assert pool.decide(UpgradeReady(NEW), T + 12) == []
    assert pool.arb.next_deadline() == T + 11 + 30.0
    pool.decide(ChildExited(p1, 0), T + 13)
    assert effects(pool.decide(ChildExited(p2, 0), T + 13)) == [Exit(0)]


def test_a_stop_while_the_new_master_is_being_forked_abandons_it_once_forked():
    pool, _ = serving()
    assert pool.decide(Signal(USR2), T + 1) == [StartUpgrade(1)]
    assert not any(isinstance(a, Kill) and a.pid == NEW
                   for a in pool.decide(Signal(signal.SIGINT), T + 1))
    assert pool.decide(UpgradeStarted(NEW), T + 1) == [
        Log("info", f"USR2: upgrading: started a new master, PID {NEW}"),
        Log("warning", f"stopping: the upgrade is abandoned; sending SIGQUIT to the new master "
                       f"{NEW}"), Kill(NEW, QUIT)]


# -- pool size: one cap, applied where it is decided ------------------------------------

def test_scale_is_clamped_to_the_pool_cap_and_logged_as_applied():
    pool, _ = running(2, capacity=16)       # at most 8
    assert pool.decide(Scale(600))[0] == Log(
        "info", "scale: pool size 8 (asked for 600; 8 is the maximum)")
    assert pool.arb.target == 8
    assert pool.decide(Scale(-3, relative=True))[0] == Log("info", "scale: pool size 5")
    assert pool.decide(Scale(-30, relative=True))[0] == Log("info", "scale: pool size 1")
    assert pool.decide(Scale(0))[0] == Log("info", "scale: pool size 1")


def test_ttin_stops_at_the_pool_cap_even_after_scale():
    pool, _ = running(2, capacity=8)
    pool.decide(Scale(4))
    assert pool.decide(Signal(signal.SIGTTIN)) == [
        Log("info", "TTIN: the pool is at its maximum of 4 workers")]
    assert pool.arb.target == 4


# -- the table ------------------------------------------------------------------------------

def test_an_event_without_a_rule_raises():
    pool, _ = running(2)
    with pytest.raises(TypeError, match="no rule"):
        pool.decide(object())
    with pytest.raises(TypeError):
        pool.decide(LoadConfig())         # an action is not an event


def test_every_event_has_a_rule_and_every_action_a_performer():
    records = {obj for obj in vars(events).values()
               if isinstance(obj, type) and obj.__module__ == events.__name__}
    assert set(Arbiter.HANDLERS).isdisjoint(Performer.PERFORMERS)
    assert set(Arbiter.HANDLERS) | set(Performer.PERFORMERS) == records


def test_an_action_without_a_performer_raises():
    with pytest.raises(TypeError, match="cannot perform"):
        Performer().perform(Start())


def test_worker_ready_reports_are_unaffected_by_an_upgrade():
    pool, (p1, p2) = upgrading()
    [p3] = pool.fork(pool.decide(Signal(signal.SIGTTIN), T + 11), T + 11)
    assert logs(pool.decide(WorkerReady(p3), T + 12), "debug") == [
        f"worker {p3} (gen 1) is ready"]
