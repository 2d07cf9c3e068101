"""The adaptive pool: the pure policy (advise), its memory (Autoscaler), and the
arbiter turning its steps into spawns and graceful retirements."""

import signal

import pytest

from arbiter_driver import T, TERM, Pool, effects, logs, running
from prefork.supervisor.autoscale import Autoscaler, Observation, Step, advise, is_calm
from prefork.supervisor.events import (ChildExited, Kill, PoolLoad, Scale, Signal, Spawn,
                                       Start)

# -- advise: the pure policy --------------------------------------------------


def ask(busy=0, ready=2, queue=0, *, now=T, floor=2, ceiling=4, size=2, queued_before=False,
        last_step=float("-inf"), calm_since=None, calm_after=30.0, step_interval=1.0):
    return advise(Observation(now, busy, ready, queue), floor=floor, ceiling=ceiling, size=size,
                  queued_before=queued_before, last_step=last_step, calm_since=calm_since,
                  calm_after=calm_after, step_interval=step_interval)


def test_nothing_to_do_when_some_workers_are_free_and_nothing_queues():
    assert ask(busy=1) == Step()


def test_grows_when_every_ready_worker_is_busy():
    assert ask(busy=2) == Step(+1, "every worker busy")


def test_a_queue_seen_once_is_not_enough_twice_in_a_row_is():
    assert ask(queue=3) == Step()
    assert ask(queue=3, queued_before=True) == Step(+1, "listen queue 3")


def test_the_queue_reason_comes_first_when_both_hold():
    assert ask(busy=2, queue=5, queued_before=True) == Step(+1, "listen queue 5")


def test_never_grows_past_the_ceiling():
    assert ask(busy=4, ready=4, size=4) == Step()
    assert ask(busy=4, ready=4, size=4, queue=9, queued_before=True) == Step()


def test_one_step_per_interval():
    assert ask(busy=2, last_step=T - 0.5) == Step()
    assert ask(busy=2, last_step=T - 1.0) == Step(+1, "every worker busy")
    assert ask(busy=2, last_step=T - 0.2, step_interval=0.1) == Step(+1, "every worker busy")


def test_no_new_step_while_the_last_one_is_still_booting():
    # size 3 but only 2 ready: the third is booting; wait for it.
    assert ask(busy=2, ready=2, size=3) == Step()


def test_no_busy_worker_and_no_ready_worker_is_not_every_worker_busy():
    assert ask(busy=0, ready=0, size=0, floor=0) == Step()


def test_shrinks_after_the_calm_period_only_above_the_floor():
    assert ask(size=3, ready=3, calm_since=T - 29.9) == Step()
    assert ask(size=3, ready=3, calm_since=T - 30.0) == Step(-1, "calm")
    assert ask(size=2, ready=2, calm_since=T - 100) == Step()     # at the floor
    assert ask(size=3, ready=3, calm_since=None) == Step()        # not calm
    assert ask(size=3, ready=3, calm_since=T - 2, calm_after=2.0) == Step(-1, "calm")


def test_is_calm_means_no_queue_and_at_most_floor_busy():
    assert is_calm(Observation(T, 2, 3, 0), floor=2)
    assert not is_calm(Observation(T, 3, 3, 0), floor=2)
    assert not is_calm(Observation(T, 0, 3, 1), floor=2)


# -- Autoscaler: the memory between observations --------------------------------


def test_off_without_a_ceiling():
    scaler = Autoscaler(0)
    assert scaler.size(3) == 3
    assert scaler.observe(T, 3, {1: True, 2: True, 3: True}, 50, [1, 2, 3]).change == 0


def test_grows_one_step_at_a_time_up_to_the_ceiling():
    scaler = Autoscaler(3)
    d = scaler.observe(T, 1, {10: True}, 0, [10])
    assert (d.change, d.text) == (1, "pool: growing to 2 (every worker busy)")
    assert scaler.size(1) == 2
    # the new worker is not ready yet: no second step
    assert scaler.observe(T + 2, 1, {10: True}, 0, [10]).change == 0
    d = scaler.observe(T + 3, 1, {10: True, 11: True}, 0, [10, 11])
    assert d.text == "pool: growing to 3 (every worker busy)"
    assert scaler.observe(T + 5, 1, {10: True, 11: True, 12: True}, 0, [10, 11, 12]).change == 0
    assert scaler.size(1) == 3


def test_a_building_queue_grows_the_pool():
    scaler = Autoscaler(4)
    assert scaler.observe(T, 2, {}, 2, [1, 2]).change == 0
    d = scaler.observe(T + 1, 2, {}, 4, [1, 2])
    assert d.text == "pool: growing to 3 (listen queue 4)"
    # a queue that clears in between starts the count again
    scaler.observe(T + 10, 2, {}, 0, [1, 2, 3])
    assert scaler.observe(T + 11, 2, {}, 1, [1, 2, 3]).change == 0


def test_shrinks_by_retiring_the_idlest_worker_after_calm():
    scaler = Autoscaler(3, calm_after=2.0, extra=2)
    live = [10, 11, 12]
    assert scaler.observe(T, 1, {10: True, 11: True, 12: True}, 0, live).change == 0
    assert scaler.observe(T + 1, 1, {10: True, 11: False, 12: True}, 0, live).change == 0
    assert scaler.observe(T + 2, 1, {10: False, 11: False, 12: False}, 0, live).change == 0
    assert scaler.observe(T + 3, 1, {}, 0, live).change == 0     # calm since T + 2
    d = scaler.observe(T + 4, 1, {}, 0, live)
    assert (d.change, d.retire) == (-1, 11)                        # idle since T + 1
    assert d.text == "pool: retiring worker 11 (idle 3 s, calm); shrinking to 2"
    assert scaler.size(1) == 2
    # the next step needs a calm period of its own
    assert scaler.observe(T + 5, 1, {}, 0, [10, 12]).change == 0
    d = scaler.observe(T + 6, 1, {}, 0, [10, 12])
    assert (d.change, d.retire) == (-1, 12)    # both idle since T + 2: the younger PID
    assert scaler.size(1) == 1
    assert scaler.observe(T + 60, 1, {}, 0, [10]).change == 0     # at the floor


def test_business_interrupts_the_calm():
    scaler = Autoscaler(3, calm_after=2.0, extra=1)
    assert scaler.observe(T, 1, {}, 0, [1, 2]).change == 0
    assert scaler.observe(T + 1.5, 1, {1: True, 2: True}, 0, [1, 2]).change == 1   # grows
    scaler.observe(T + 2, 1, {}, 0, [1, 2, 3])
    assert scaler.observe(T + 3.9, 1, {}, 0, [1, 2, 3]).change == 0
    assert scaler.observe(T + 4, 1, {}, 0, [1, 2, 3]).change == -1


def test_the_floor_moves_the_pool_within_the_ceiling():
    scaler = Autoscaler(4, extra=2)
    assert scaler.size(1) == 3
    assert scaler.size(2) == 4
    assert scaler.size(3) == 4
    assert scaler.size(6) == 6        # a floor above the ceiling wins


# -- the arbiter ---------------------------------------------------------------


def adaptive(workers=1, max_workers=3, **kw):
    pool = Pool(workers, **kw)
    pool.arb.autoscale.ceiling = max_workers
    pool.arb.autoscale.calm_after = 2.0
    pids = pool.fork(pool.decide(Start()))
    pool.ready(pids)
    return pool, pids


def test_without_max_workers_pool_load_changes_nothing():
    pool, pids = running(2)
    assert pool.decide(PoolLoad({p: True for p in pids}, 9)) == []
    assert pool.decide(PoolLoad({p: True for p in pids}, 9), T + 5) == []
    assert pool.arb.wanted == 2


def test_the_arbiter_spawns_one_more_when_every_worker_is_busy():
    pool, pids = adaptive()
    out = pool.decide(PoolLoad({pids[0]: True}, 0), T + 1)
    assert logs(out, "info") == ["pool: growing to 2 (every worker busy)"]
    assert [type(a) for a in effects(out)] == [Spawn]
    new = pool.fork(out, T + 1)
    pool.ready(new, T + 1.5)
    out = pool.decide(PoolLoad({pids[0]: True, new[0]: True}, 0), T + 2)
    assert logs(out, "info") == ["pool: growing to 3 (every worker busy)"]
    pool.ready(pool.fork(out, T + 2), T + 2.5)
    assert len(pool.arb.workers) == 3
    busy = {p: True for p in pool.arb.workers}
    assert effects(pool.decide(PoolLoad(busy, 7), T + 4)) == []    # at the ceiling


def test_the_arbiter_retires_the_idlest_gracefully_and_does_not_replace_it():
    pool, pids = adaptive()
    for now in (T + 1, T + 2):
        busy = {p: True for p in pool.arb.workers}
        pool.ready(pool.fork(pool.decide(PoolLoad(busy, 0), now), now), now)
    a, b, c = sorted(pool.arb.workers)
    pool.decide(PoolLoad({a: True, b: True, c: False}, 0), T + 3)   # c idle since T + 3
    pool.decide(PoolLoad({}, 0), T + 4)                               # calm since T + 4
    out = pool.decide(PoolLoad({}, 0), T + 6)
    assert logs(out, "info") == [f"pool: retiring worker {c} (idle 3 s, calm); shrinking to 2"]
    assert effects(out) == [Kill(c, TERM)]
    assert pool.arb.workers[c].why_stopped == "retired"
    out = pool.decide(ChildExited(c, 0), T + 6.5)
    assert effects(out) == []                                         # not replaced
    assert pool.arb.wanted == 2


def test_ttin_ttou_and_scale_move_the_floor_and_the_pool_with_it():
    pool, pids = adaptive()
    pool.ready(pool.fork(pool.decide(PoolLoad({pids[0]: True}, 0), T + 1), T + 1), T + 1)
    assert pool.arb.wanted == 2
    out = pool.decide(Signal(signal.SIGTTIN), T + 1.2)
    assert pool.arb.target == 2 and pool.arb.wanted == 3
    assert [type(a) for a in effects(out)] == [Spawn]
    pool.ready(pool.fork(out, T + 1.2), T + 1.2)
    pool.decide(Signal(signal.SIGTTIN), T + 1.3)
    assert pool.arb.target == 3 and pool.arb.wanted == 3              # clamped to the ceiling
    out = pool.decide(Signal(signal.SIGTTOU), T + 1.4)
    assert pool.arb.target == 2 and pool.arb.wanted == 3
    pool.decide(Scale(1), T + 1.5)
    assert pool.arb.target == 1 and pool.arb.wanted == 2
    assert sum(1 for w in pool.arb.workers.values() if w.retiring) == 1


def test_scale_says_it_sets_the_adaptive_pools_floor():
    pool, _ = adaptive(max_workers=4)
    assert logs(pool.decide(Scale(2), T + 1), "info") == [
        "scale: pool floor 2, up to 4 under load"]
    # At or above the ceiling there is nothing to grow into: a plain size.
    assert logs(pool.decide(Scale(5), T + 2), "info") == ["scale: pool size 5"]


def test_no_scaling_while_stopping():
    pool, pids = adaptive()
    pool.decide(Signal(signal.SIGTERM), T + 1)
    assert pool.decide(PoolLoad({pids[0]: True}, 5), T + 2) == []


@pytest.mark.parametrize("busy", [True, False])
def test_booting_workers_are_not_observed(busy):
    pool = Pool(1)
    pool.arb.autoscale.ceiling = 3
    pids = pool.fork(pool.decide(Start()))
    assert effects(pool.decide(PoolLoad({pids[0]: busy}, 0), T + 1)) == []
