"""The arbiter's reloads, boot failures, crash-loop backoff and deadlines."""

import signal

import pytest

from arbiter_driver import ABRT, QUIT, TERM, T, Pool, effects, logs, running
from prefork.supervisor.escalation import ABORT_GRACE
from prefork.supervisor.health import BACKOFF_MAX, Limits, backoff_delay, describe_exit
from prefork.supervisor.events import (ChildExited, CloseListeners, Exit, Kill, Log,
                                       NewGeneration, Notify, Reload, ReloadFailed, Signal, Spawn,
                                       SpawnFailed, Start, Tick, WorkerReady)

STOPPING = (Exit, CloseListeners)


def never_stops(actions):
    return not any(isinstance(a, STOPPING) or a == Notify("STOPPING=1") for a in actions)


def reloading(workers=2, new_workers=None, **kw):
    """A pool of ``workers`` gen-1 workers, and gen 2 forked (not ready) by a Reload at T+10."""
    pool, old = running(workers, **kw)
    out = pool.decide(Reload(workers=new_workers or workers), T + 10)
    return pool, old, pool.fork(out, T + 10)


# -- reload --------------------------------------------------------------------

def test_reload_replaces_the_old_generation_only_once_the_new_one_is_ready():
    pool, (p1, p2) = running(2)
    out = pool.decide(Reload(workers=2), T + 10)
    assert out == [Notify("RELOADING=1"), NewGeneration(2),
                   Log("info", "reloading: starting generation 2 with 2 workers"),
                   Spawn(2, 2), Spawn(2, 3)]
    n1, n2 = pool.fork(out, T + 10)
    assert effects(pool.decide(WorkerReady(n1), T + 11)) == []
    assert effects(pool.decide(pool.fresh(T + 11), T + 11)) == []
    out = pool.decide(WorkerReady(n2), T + 12)
    assert effects(out) == [Notify("READY=1"), Kill(p1, TERM), Kill(p2, TERM)]
    assert logs(out, "info") == ["reload complete: generation 2 serving with 2 workers"]
    assert (pool.arb.generation, pool.arb.stable) == (2, 2)
    # The retired generation leaving is expected: nothing is respawned.
    assert effects(pool.decide(ChildExited(p1, 0), T + 13)) == []
    assert effects(pool.decide(ChildExited(p2, 0), T + 13)) == []


def test_reload_takes_the_new_pool_size_and_timeouts():
    pool, (p1, p2) = running(2)
    out = pool.decide(Reload(workers=3, timeout=5.0, graceful_timeout=7.0), T + 10)
    assert effects(out) == [Notify("RELOADING=1"), NewGeneration(2), Spawn(2, 2), Spawn(2, 3),
                            Spawn(2, 4)]
    new = pool.fork(out, T + 10)
    assert effects(pool.ready(new[:2], T + 11)) == []
    assert effects(pool.ready(new[2:], T + 11)) == [Notify("READY=1"), Kill(p1, TERM),
                                                    Kill(p2, TERM)]
    assert pool.decide(pool.fresh(T + 17.9), T + 17.9) == []
    assert effects(pool.decide(pool.fresh(T + 18), T + 18)) == [Kill(p1, ABRT), Kill(p2, ABRT)]


@pytest.mark.parametrize("code", [1, 3, -9])
def test_new_worker_dying_before_ready_aborts_the_reload(code):
    pool, (p1, p2), (n1, n2) = reloading(2)
    pool.decide(WorkerReady(n1), T + 11)
    out = pool.decide(ChildExited(n2, code), T + 12)
    # The old generation is left alone (no signal, no replacement); the new one retires.
    assert effects(out) == [Kill(n1, TERM), Notify("READY=1")]
    assert logs(out, "error") == [f"reload failed: worker {n2} (gen 2) {describe_exit(code)} "
                                  "before it was ready; generation 1 keeps serving"]
    assert pool.arb.generation == 1 and not pool.arb.reloading
    assert effects(pool.decide(ChildExited(n1, 0), T + 13)) == []
    assert pool.decide(pool.fresh(T + 14), T + 14) == []
    # The old generation is supervised as before...
    assert effects(pool.decide(ChildExited(p1, -9), T + 15)) == [Spawn(1, 0)]


def test_a_reload_after_an_aborted_one_works():
    pool, (p1, p2), (n1, n2) = reloading(2)
    pool.decide(ChildExited(n1, 1), T + 11)
    pool.decide(ChildExited(n2, 0), T + 11)
    out = pool.decide(Reload(workers=2), T + 20)
    assert effects(out) == [Notify("RELOADING=1"), NewGeneration(3), Spawn(3, 2), Spawn(3, 3)]
    assert effects(pool.ready(pool.fork(out, T + 20), T + 21)) == [
        Notify("READY=1"), Kill(p1, TERM), Kill(p2, TERM)]
    assert pool.arb.stable == 3


def test_fork_failure_during_a_reload_aborts_it():
    pool, (p1, p2) = running(2)
    pool.decide(Reload(workers=2), T + 10)      # the Spawns are never answered by Spawned
    out = pool.decide(SpawnFailed(2, 2, "Cannot allocate memory"), T + 10)
    assert effects(out) == [Notify("READY=1")]
    assert "could not be forked: Cannot allocate memory" in logs(out, "error")[0]


def test_aborted_reload_restores_the_old_pool_size_and_limits():
    pool, (p1, p2) = running(2, request_timeout=9.0, max_rss=300)
    out = pool.decide(Reload(workers=3, timeout=5.0, graceful_timeout=7.0, request_timeout=4.0,
                             max_rss=100), T + 10)
    assert (pool.arb.limits, pool.arb.graceful_timeout) == (Limits(5.0, 4.0, 100), 7.0)
    n1, n2, n3 = pool.fork(out, T + 10)
    out = pool.decide(ChildExited(n1, 1), T + 11)
    assert effects(out) == [Kill(n2, TERM), Kill(n3, TERM), Notify("READY=1")]
    assert (pool.arb.target, pool.arb.limits, pool.arb.graceful_timeout) == (
        2, Limits(30.0, 9.0, 300), 30.0)


def test_a_reload_retunes_the_adaptive_pool_and_an_aborted_one_restores_it():
    pool, (p1, p2) = running(2)
    assert pool.arb.autoscale.tuning() == (0, 30.0)
    out = pool.decide(Reload(workers=2, max_workers=6, idle_retire_after=4.0), T + 10)
    assert pool.arb.autoscale.tuning() == (6, 4.0)
    n1, n2 = pool.fork(out, T + 10)
    pool.decide(ChildExited(n1, 1), T + 11)
    assert pool.arb.autoscale.tuning() == (0, 30.0)
    # A good reload keeps them; max_workers is capped like -w.
    out = pool.decide(Reload(workers=2, max_workers=10 ** 6, idle_retire_after=4.0), T + 20)
    assert pool.arb.autoscale.tuning() == (pool.arb.max_workers, 4.0)


def test_a_reload_supersedes_an_unfinished_one():
    pool, (p1, p2), (n1, n2) = reloading(2)
    pool.decide(WorkerReady(n1), T + 11)
    out = pool.decide(Reload(workers=2), T + 12)
    assert out == [Notify("RELOADING=1"), NewGeneration(3), Kill(n1, TERM), Kill(n2, TERM),
                   Log("info", "reloading: starting generation 3 with 2 workers"),
                   Spawn(3, 4), Spawn(3, 5)]
    m1, m2 = pool.fork(out, T + 12)
    # The superseded generation dying unready is expected, not a failed reload.
    assert effects(pool.decide(ChildExited(n2, 1), T + 12.5)) == []
    assert effects(pool.decide(ChildExited(n1, 0), T + 12.5)) == []
    assert effects(pool.ready([m1, m2], T + 13)) == [Notify("READY=1"), Kill(p1, TERM),
                                                     Kill(p2, TERM)]
    assert pool.arb.stable == 3


def test_reload_failed_only_logs():
    pool, (p1, p2) = running(2)
    assert pool.decide(ReloadFailed("x.toml: unknown key 'wrokers'"), T + 1) == [
        Log("error", "reload failed: x.toml: unknown key 'wrokers'; generation 1 keeps serving")]
    assert (pool.arb.generation, pool.arb.stable, sorted(pool.arb.workers)) == (1, 1, [p1, p2])
    # ... also while another reload is still coming up.
    pool2, _, new = reloading(2)
    assert effects(pool2.decide(ReloadFailed("bad"), T + 11)) == []
    assert pool2.arb.generation == 2 and all(w in pool2.arb.workers for w in new)


# -- boot failures -------------------------------------------------------------

def test_first_generation_that_cannot_import_its_target_stops_with_status_3():
    pool = Pool(2)
    p1, p2 = pool.fork(pool.decide(Start()))
    out = pool.decide(ChildExited(p1, 3), T + 1)
    assert out == [Log("error", f"worker {p1} (gen 1) exited with status 3 before it was "
                                "ready: the target could not be loaded; stopping"),
                   Log("info", "fast stop"), Notify("STOPPING=1"), CloseListeners(),
                   Kill(p2, QUIT)]
    assert effects(pool.decide(ChildExited(p2, 3), T + 1)) == [Exit(3)]


def test_single_worker_that_cannot_import_its_target_exits_3_at_once():
    pool = Pool(1)
    [p] = pool.fork(pool.decide(Start()))
    assert effects(pool.decide(ChildExited(p, 3), T + 1)) == [Notify("STOPPING=1"),
                                                              CloseListeners(), Exit(3)]


def test_other_first_generation_boot_failures_are_retried_not_fatal():
    pool = Pool(1)
    [p] = pool.fork(pool.decide(Start()))
    out = pool.decide(ChildExited(p, 1), T + 1)
    assert effects(out) == [Spawn(1, 0)]
    assert logs(out, "error") == [f"worker {p} (gen 1) exited with status 1 before it was "
                                  "ready; 1 boot failure(s) in a row, next try in 0.0 s"]


@pytest.mark.parametrize("failures, delay", [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (4, 2.0),
                                             (5, 4.0), (7, 16.0), (8, BACKOFF_MAX),
                                             (100, BACKOFF_MAX)])
def test_backoff_delay(failures, delay):
    assert backoff_delay(failures) == delay


def test_crash_loop_backs_off_exponentially_and_resets_once_a_worker_is_ready():
    pool, [p] = running(1)
    [r] = pool.fork(pool.decide(ChildExited(p, -9), T + 1), T + 1)
    now = T + 2
    out = pool.decide(ChildExited(r, 1), now)         # 1st failure: retried at once
    assert effects(out) == [Spawn(1, 0)]
    [r] = pool.fork(out, now)
    for delay in (0.5, 1.0, 2.0, 4.0):
        now += 1
        assert effects(pool.decide(ChildExited(r, 1), now)) == []
        assert pool.arb.next_deadline() == now + delay
        assert pool.decide(Tick(), now + delay - 0.01) == []
        out = pool.decide(Tick(), now + delay)
        assert effects(out) == [Spawn(1, 0)]
        now += delay
        [r] = pool.fork(out, now)
    assert effects(pool.decide(WorkerReady(r), now)) == []
    assert pool.arb.next_deadline() is None
    [r] = pool.fork(pool.decide(ChildExited(r, -9), now + 1), now + 1)
    assert effects(pool.decide(ChildExited(r, 1), now + 2)) == [Spawn(1, 0)]


def test_crash_loop_probes_one_worker_at_a_time():
    pool, (p1, p2, p3) = running(3)
    [r1] = pool.fork(pool.decide(ChildExited(p1, -9), T + 1), T + 1)
    [r2] = pool.fork(pool.decide(ChildExited(p2, -9), T + 1), T + 1)
    assert effects(pool.decide(ChildExited(r1, 1), T + 2)) == []     # r2 is still booting
    assert effects(pool.decide(ChildExited(r2, 1), T + 2)) == []     # 2nd failure: 0.5 s
    out = pool.decide(Tick(), T + 2.5)
    assert effects(out) == [Spawn(1, 0)]
    [probe] = pool.fork(out, T + 2.5)
    assert pool.decide(Tick(), T + 10) == []
    # The probe coming up ends the crash loop: the rest is spawned at once.
    assert effects(pool.decide(WorkerReady(probe), T + 11)) == [Spawn(1, 1)]


def test_fork_failure_is_a_boot_failure():
    pool, (p1, p2) = running(2)
    assert effects(pool.decide(ChildExited(p1, -9), T + 1)) == [Spawn(1, 0)]
    out = pool.decide(SpawnFailed(1, 0, "Resource temporarily unavailable"), T + 1)
    assert effects(out) == [Spawn(1, 0)]
    assert logs(out, "error") == ["could not be forked: Resource temporarily unavailable; "
                                  "1 boot failure(s) in a row, next try in 0.0 s"]


def test_the_master_never_stops_because_of_a_worker_once_serving():
    pool, _ = running(2)
    now = T
    # Ready workers first, then their booting replacements, which include exit 3.
    for code in (3, 1, -9, 0, -6, 3, 3, 3, 1, 3, 3, 3):
        now += 40.0                                    # past any backoff
        tick = pool.decide(pool.fresh(now), now)
        pool.fork(tick, now)
        out = pool.decide(ChildExited(min(pool.arb.workers), code), now)
        pool.fork(out, now)
        assert never_stops(tick + out)
    assert pool.arb.phase == "running"


# -- deadlines -----------------------------------------------------------------

def test_next_deadline():
    pool, (p1, p2, p3) = running(3, graceful_timeout=20.0)
    assert pool.arb.next_deadline() is None
    pool.decide(Signal(signal.SIGTTOU), T + 1)
    assert pool.arb.next_deadline() == T + 21
    pool.decide(Signal(TERM), T + 5)
    assert pool.arb.next_deadline() == T + 21       # the earliest of the escalations
    pool.decide(Tick(), T + 21)     # the retired one is dumped (ABRT), KILLed ABORT_GRACE later
    assert pool.arb.next_deadline() == T + 21 + ABORT_GRACE
    pool.decide(Tick(), T + 21 + ABORT_GRACE)
    assert pool.arb.next_deadline() == T + 25


def test_next_deadline_is_not_in_the_past_while_a_probe_boots():
    pool, [p] = running(1)
    [r] = pool.fork(pool.decide(ChildExited(p, -9), T + 1), T + 1)
    out = pool.decide(ChildExited(r, 1), T + 2)
    pool.fork(out, T + 2)                           # the probe, booting
    deadline = pool.arb.next_deadline()
    assert deadline is None or deadline > T + 2.5


def test_describe_exit():
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert describe_exit(-200) == "was killed by signal 200"
