"""The arbiter's rules, one event at a time, with explicit clocks and exact actions.

Reloads, boot failures and backoff are in test_arbiter_reload.py.
"""

import signal

import pytest

from arbiter_driver import ABRT, KILL, QUIT, TERM, T, Pool, effects, logs, running
from prefork.supervisor.escalation import ABORT_GRACE, FAST_STOP_GRACE
from prefork.supervisor.events import (ChildExited, CloseListeners, Exit, Kill, Log,
                                       NewGeneration, Notify, RecycleWanted, Refused, Reload,
                                       ReopenLogs, Signal, Spawn, Start, Tick, WorkerReady)


# -- start and steady state ----------------------------------------------------

def test_start_spawns_one_worker_per_distinct_slot():
    pool = Pool(3)
    assert pool.decide(Start()) == [Log("info", "starting generation 1 with 3 workers"),
                                    Spawn(1, 0), Spawn(1, 1), Spawn(1, 2)]


def test_ready_is_announced_once_when_the_whole_first_generation_is_up():
    pool = Pool(2)
    p1, p2 = pool.fork(pool.decide(Start()))
    assert pool.decide(WorkerReady(p1)) == [Log("debug", f"worker {p1} (gen 1) is ready")]
    assert pool.decide(WorkerReady(p2)) == [Log("debug", f"worker {p2} (gen 1) is ready"),
                                            Log("info", "ready: serving with 2 workers"),
                                            Notify("READY=1")]
    assert pool.decide(WorkerReady(p2)) == []
    assert pool.decide(pool.fresh(T + 1), T + 1) == []
    # A later worker coming up is not a new "ready" for the service manager.
    assert effects(pool.ready(pool.fork(pool.decide(Signal(signal.SIGTTIN))))) == []


def test_reports_about_unknown_pids_are_ignored():
    pool, _ = running(2)
    for event in (WorkerReady(999), ChildExited(999, 0), RecycleWanted(999)):
        assert pool.decide(event) == []


@pytest.mark.parametrize("code, how", [(-9, "was killed by SIGKILL"), (0, "exited with status 0"),
                                       (1, "exited with status 1"), (3, "exited with status 3")])
def test_ready_worker_dying_is_replaced_in_the_same_decision(code, how):
    pool, (p1, p2) = running(2)
    assert pool.decide(ChildExited(p1, code), T + 5) == [
        Log("warning", f"worker {p1} (gen 1) {how} unexpectedly; replacing it"), Spawn(1, 0)]


def test_freed_slots_are_reused_lowest_first():
    pool, (p1, p2, p3) = running(3)
    pool.decide(ChildExited(p3, -9))
    assert effects(pool.decide(ChildExited(p1, -9))) == [Spawn(1, 0)]


def test_a_pool_is_never_larger_than_half_the_scoreboard():
    # Half, so that a reload can run two full generations side by side.
    pool = Pool(3, capacity=4)
    assert effects(pool.decide(Start())) == [Spawn(1, 0), Spawn(1, 1)]
    assert pool.arb.target == 2 == pool.arb.max_workers
    p1, p2 = pool.fork([Spawn(1, 0), Spawn(1, 1)])
    pool.ready([p1, p2])
    out = pool.decide(Reload(workers=5), T + 1)
    assert pool.arb.target == 2 and effects(out)[-2:] == [Spawn(2, 2), Spawn(2, 3)]


def test_spawning_stops_at_scoreboard_capacity():
    # Only reloads superseding one another can fill it: the superseded workers
    # still hold their slots until they exit.
    pool, (p1, p2) = running(2, capacity=4)
    n1, n2 = pool.fork(pool.decide(Reload(workers=2), T + 1), T + 1)
    out = pool.decide(Reload(workers=2), T + 2)
    assert effects(out) == [Notify("RELOADING=1"), NewGeneration(3), Kill(n1, TERM),
                            Kill(n2, TERM)]
    assert logs(out, "error") == ["scoreboard full (4 slots); 2 worker(s) not started"]
    assert effects(pool.decide(ChildExited(n1, 0), T + 3)) == [Spawn(3, 2)]


# -- scaling -------------------------------------------------------------------

def test_ttin_adds_one_worker():
    pool, _ = running(2)
    assert pool.decide(Signal(signal.SIGTTIN)) == [Log("info", "TTIN: pool size 3"), Spawn(1, 2)]


def test_ttin_stops_at_the_largest_pool():
    pool, _ = running(2, capacity=4)
    assert pool.decide(Signal(signal.SIGTTIN)) == [
        Log("info", "TTIN: the pool is at its maximum of 2 workers")]
    assert pool.arb.target == 2


def test_ttou_retires_the_newest_ready_worker_and_does_not_replace_it():
    pool = Pool(3)
    pids = []
    for i, action in enumerate(effects(pool.decide(Start()))):
        pids += pool.fork([action], now=T + i)      # distinct start times
    pool.ready(pids, T + 3)
    assert pool.decide(Signal(signal.SIGTTOU), T + 4) == [Log("info", "TTOU: pool size 2"),
                                                          Kill(pids[2], TERM)]
    assert effects(pool.decide(ChildExited(pids[2], 0), T + 5)) == []


def test_ttou_prefers_a_booting_worker():
    pool, (p1, p2) = running(2)
    [p3] = pool.fork(pool.decide(Signal(signal.SIGTTIN)))
    assert effects(pool.decide(Signal(signal.SIGTTOU))) == [Kill(p3, TERM)]


def test_ttou_never_goes_below_one():
    pool, [p] = running(1)
    assert pool.decide(Signal(signal.SIGTTOU)) == [
        Log("info", "TTOU: the pool is at its minimum of 1 worker")]
    assert pool.arb.target == 1


def test_retired_worker_ignoring_term_is_dumped_then_killed_after_graceful_timeout():
    pool, _ = running(3, graceful_timeout=5.0)
    [retired] = effects(pool.decide(Signal(signal.SIGTTOU), T + 1))
    pid = retired.pid
    assert pool.decide(Tick(), T + 5.9) == []
    # What keeps it busy is what the operator needs to see: faulthandler dumps it on ABRT.
    assert pool.decide(Tick(), T + 6) == [
        Log("error", f"worker {pid} (gen 1) did not stop within graceful_timeout (5.0 s); "
                     "dumping its traceback, then killing it"), Kill(pid, ABRT)]
    assert pool.arb.next_deadline() == T + 6 + ABORT_GRACE
    assert pool.decide(Tick(), T + 7) == []
    assert pool.decide(Tick(), T + 6 + ABORT_GRACE) == [Kill(pid, KILL)]     # announced already
    assert pool.decide(Tick(), T + 9) == []


# -- stopping ------------------------------------------------------------------

def test_term_is_a_graceful_stop():
    pool, (p1, p2) = running(2, graceful_timeout=30.0)
    assert pool.decide(Signal(TERM), T + 1) == [Log("info", "graceful stop"), Notify("STOPPING=1"),
                                                CloseListeners(), Kill(p1, TERM), Kill(p2, TERM)]
    assert pool.arb.next_deadline() == T + 31
    assert pool.decide(Signal(TERM), T + 2) == []
    # Stale heartbeats of a stopping worker are not a timeout: it is already being stopped.
    assert pool.decide(Tick(), T + 30.99) == []
    assert effects(pool.decide(Tick(), T + 31)) == [Kill(p1, ABRT), Kill(p2, ABRT)]
    assert effects(pool.decide(Tick(), T + 31 + ABORT_GRACE)) == [Kill(p1, KILL), Kill(p2, KILL)]
    assert pool.arb.next_deadline() is None
    assert effects(pool.decide(ChildExited(p1, -9), T + 31)) == []
    assert effects(pool.decide(ChildExited(p2, -9), T + 31)) == [Exit(0)]


def test_nothing_is_respawned_while_stopping():
    pool, (p1, p2) = running(2)
    pool.decide(Signal(TERM))
    assert pool.decide(ChildExited(p1, 1)) == [Log("debug", f"worker {p1} (gen 1) exited with "
                                                            "status 1")]
    for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1):
        assert pool.decide(Signal(sig)) == []
    assert pool.decide(Signal(signal.SIGHUP)) == [Refused("info", "HUP while stopping; ignored")]
    assert pool.decide(Reload(workers=4)) == []
    assert pool.decide(Tick(), T + 1) == []


def test_stop_without_workers_exits_at_once():
    pool = Pool(2)
    assert effects(pool.decide(Signal(TERM))) == [Notify("STOPPING=1"), CloseListeners(), Exit(0)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_are_a_fast_stop(sig):
    pool, (p1, p2) = running(2, graceful_timeout=30.0)
    assert pool.decide(Signal(sig), T + 1) == [Log("info", "fast stop"), Notify("STOPPING=1"),
                                               CloseListeners(), Kill(p1, QUIT), Kill(p2, QUIT)]
    assert pool.decide(Tick(), T + 1 + FAST_STOP_GRACE - 0.01) == []
    assert effects(pool.decide(Tick(), T + 1 + FAST_STOP_GRACE)) == [Kill(p1, KILL),
                                                                     Kill(p2, KILL)]
    pool.decide(ChildExited(p1, -9))
    assert effects(pool.decide(ChildExited(p2, -9))) == [Exit(0)]


def test_int_during_a_graceful_stop_escalates():
    pool, (p1, p2) = running(2, graceful_timeout=30.0)
    pool.decide(Signal(TERM), T)
    assert pool.decide(Signal(signal.SIGINT), T + 1) == [Kill(p1, QUIT), Kill(p2, QUIT)]
    assert pool.arb.next_deadline() == T + 1 + FAST_STOP_GRACE
    assert effects(pool.decide(Tick(), T + 1 + FAST_STOP_GRACE)) == [Kill(p1, KILL),
                                                                     Kill(p2, KILL)]
    # A KILLed worker is not signalled again, and TERM cannot de-escalate.
    assert pool.decide(Signal(signal.SIGQUIT), T + 4) == []
    assert pool.decide(Signal(TERM), T + 4) == []


def test_usr1_reopens_logs_and_is_forwarded():
    pool, (p1, p2) = running(2)
    assert pool.decide(Signal(signal.SIGUSR1)) == [ReopenLogs(), Kill(p1, signal.SIGUSR1),
                                                   Kill(p2, signal.SIGUSR1)]


# -- supervision ---------------------------------------------------------------

def test_stuck_worker_gets_abort_then_kill_and_is_replaced_at_once():
    pool, (p1, p2) = running(2, timeout=10.0)
    assert pool.decide(Tick(), T + 10) == []        # exactly at the timeout is not past it
    out = pool.decide(Tick({p1: T + 10.5, p2: T + 0.4}), T + 10.5)
    assert out == [Log("error", f"worker {p2} (gen 1) timed out (no heartbeat for 10.1 s); "
                                "dumping its traceback, then killing it"),
                   Kill(p2, ABRT), Spawn(1, 2)]
    [p3] = pool.fork(out, T + 10.5)
    assert pool.arb.next_deadline() == T + 10.5 + ABORT_GRACE
    assert pool.decide(pool.fresh(T + 12.4), T + 12.4) == []
    assert pool.decide(pool.fresh(T + 12.5), T + 12.5) == [Kill(p2, KILL)]
    assert pool.decide(ChildExited(p2, -9), T + 12.6) == [
        Log("info", f"worker {p2} (gen 1) was killed by SIGKILL after its timeout; replacing it")]
    assert sorted(pool.arb.workers) == [p1, p3]


def test_booting_worker_past_timeout_is_killed_too():
    pool, (p1, p2) = running(2, timeout=10.0)
    [p3] = pool.fork(pool.decide(Signal(signal.SIGTTIN), T + 1), T + 1)
    out = pool.decide(Tick({p1: T + 11.5, p2: T + 11.5}), T + 11.5)
    assert effects(out) == [Kill(p3, ABRT), Spawn(1, 3)]
    assert "still booting for 10.5 s" in logs(out, "error")[0]


def test_without_a_heartbeat_the_start_time_counts():
    pool, (p1, p2) = running(2, timeout=10.0)
    pool.fork(pool.decide(Signal(signal.SIGTTIN), T + 9), T + 9)
    out = pool.decide(Tick(), T + 15)
    assert effects(out) == [Kill(p1, ABRT), Kill(p2, ABRT), Spawn(1, 3), Spawn(1, 4)]


def test_recycle_starts_the_replacement_first():
    pool, (p1, p2) = running(2)
    out = pool.decide(RecycleWanted(p1), T + 1)
    assert out == [Log("info", f"worker {p1} (gen 1) reached max_requests; starting its "
                               "replacement"), Spawn(1, 2)]
    assert pool.decide(RecycleWanted(p1), T + 1) == []
    [p3] = pool.fork(out, T + 1)
    assert pool.decide(Tick(), T + 2) == []         # p1 keeps serving meanwhile
    assert effects(pool.decide(WorkerReady(p3), T + 2)) == [Kill(p1, TERM)]
    assert effects(pool.decide(ChildExited(p1, 0), T + 3)) == []
    assert sorted(pool.arb.workers) == [p2, p3]


def test_recycled_worker_keeps_serving_when_its_replacement_cannot_boot():
    pool, (p1, p2) = running(2)
    [p3] = pool.fork(pool.decide(RecycleWanted(p1), T + 1), T + 1)
    assert effects(pool.decide(ChildExited(p3, 1), T + 2)) == [Spawn(1, 2)]
    assert p1 in pool.arb.workers and not pool.arb.workers[p1].retiring


def test_exits_are_counted_by_reason_for_the_metrics():
    pool, (p1, p2) = running(2, timeout=10.0)
    [p3] = pool.fork(pool.decide(RecycleWanted(p1), T + 1), T + 1)
    pool.ready([p3], T + 1)
    pool.decide(ChildExited(p1, 0), T + 2)               # recycled: max_requests
    [p4] = pool.fork(pool.decide(ChildExited(p2, -9), T + 2), T + 2)   # a crash
    pool.ready([p4], T + 2)
    new = pool.fork(pool.decide(Reload(2), T + 3), T + 3)
    assert pool.arb.reloads == 1
    pool.ready(new, T + 4)
    for pid in (p3, p4):
        pool.decide(ChildExited(pid, 0), T + 5)          # retired by the reload
    [p7] = pool.fork(pool.decide(ChildExited(new[0], 3), T + 6), T + 6)
    pool.decide(ChildExited(p7, 1), T + 7)               # died before it was ready
    pool.decide(Signal(signal.SIGTERM), T + 8)
    pool.decide(ChildExited(new[1], 0), T + 9)           # a stop is not a restart
    assert pool.arb.restarts == {"max_requests": 1, "crash": 2, "reload": 2,
                                 "boot_failure": 1}
