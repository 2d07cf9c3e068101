"""request_timeout and max_rss: what the arbiter does with what a Tick says.

The heartbeat timeout, max_requests and the exit counters are in test_arbiter.py.
"""

import signal

from arbiter_driver import ABRT, KILL, TERM, T, effects, logs, running
from prefork.supervisor.escalation import ABORT_GRACE
from prefork.supervisor.events import (ChildExited, Kill, Log, RecycleWanted, Reload, Signal,
                                       Spawn, Tick, WorkerReady)
from prefork.supervisor.health import MIB, Limits

GET = '"GET /sleep?s=30 HTTP/1.1" from 127.0.0.1:40312'


def tick(pool, now, requests=None, rss=None, served=None):
    """A Tick with fresh heartbeats, as from workers that are alive and well."""
    return pool.decide(Tick({pid: now for pid in pool.arb.workers}, requests or {}, rss or {},
                            served or {}), now)


# -- request_timeout -------------------------------------------------------------

def test_a_request_past_request_timeout_is_aborted_named_and_replaced():
    pool, (p1, p2) = running(2, request_timeout=2.0)
    assert tick(pool, T + 12, {p1: (T + 10, GET)}) == []       # exactly 2.0 s: not past it
    out = tick(pool, T + 12.3, {p1: (T + 10, GET), p2: (T + 12, "another")})
    assert out == [Log("error", f"worker {p1} (gen 1) exceeded request_timeout (2.0 s): {GET} "
                                "running for 2.3 s; dumping its traceback, then killing it"),
                   Kill(p1, ABRT), Spawn(1, 2)]
    [p3] = pool.fork(out, T + 12.3)
    assert pool.arb.next_deadline() == T + 14           # p2's request (since T + 12) is due first
    # Neither aborted twice nor warned about as "did not stop in time".
    assert tick(pool, T + 14.2, {p1: (T + 10, GET)}) == []
    assert tick(pool, T + 14.3) == [Kill(p1, KILL)]
    assert pool.decide(ChildExited(p1, -9), T + 14.4) == [
        Log("info", f"worker {p1} (gen 1) was killed by SIGKILL after its request_timeout; "
                    "replacing it")]
    assert sorted(pool.arb.workers) == [p2, p3]
    assert pool.arb.restarts == {"request_timeout": 1}


def test_the_master_wakes_when_the_oldest_request_is_due_not_at_the_next_tick():
    pool, (p1, p2) = running(2, request_timeout=2.0)
    assert tick(pool, T + 10, {p1: (T + 9.5, GET), p2: (T + 9.2, "x")}) == []
    assert pool.arb.next_deadline() == T + 11.2
    out = tick(pool, T + 11.21, {p1: (T + 9.5, GET), p2: (T + 9.2, "x")})
    assert effects(out)[0] == Kill(p2, ABRT)
    # The aborted one no longer counts; p1's request is due next.
    assert pool.arb.next_deadline() == T + 11.5
    # Requests that ended since are forgotten at the next Tick.
    tick(pool, T + 11.3, {p1: (0.0, "")})
    assert pool.arb.next_deadline() == T + 11.21 + ABORT_GRACE


def test_request_timeout_zero_never_fires():
    pool, (p1, p2) = running(2, timeout=30.0)
    assert tick(pool, T + 25, {p1: (T, GET), p2: (T + 1, GET)}) == []


def test_an_idle_worker_has_no_request_to_time():
    pool, (p1, p2) = running(2, request_timeout=1.0)
    assert tick(pool, T + 25, {p1: (0.0, ""), p2: (0.0, "stale text of a request that ended")}) \
        == []


def test_request_timeout_is_named_rather_than_the_missing_heartbeat():
    # A sync worker stuck in a request has stopped heartbeating too.
    pool, (p1, p2) = running(2, timeout=5.0, request_timeout=5.0)
    out = pool.decide(Tick({p2: T + 8}, {p1: (T + 2, GET)}), T + 8)
    assert logs(out, "error") == [f"worker {p1} (gen 1) exceeded request_timeout (5.0 s): {GET} "
                                  "running for 6.0 s; dumping its traceback, then killing it"]
    assert pool.arb.workers[p1].why_stopped == "request_timeout"


def test_a_missing_heartbeat_says_timeout_not_request_timeout():
    pool, (p1, p2) = running(2, timeout=5.0, request_timeout=60.0)
    out = pool.decide(Tick({p2: T + 8}, {p1: (T + 2, GET)}), T + 8)
    assert logs(out, "error") == [f"worker {p1} (gen 1) timed out (no heartbeat for 8.0 s); "
                                  "dumping its traceback, then killing it"]
    assert effects(out) == [Kill(p1, ABRT), Spawn(1, 2)]


def test_a_worker_already_being_stopped_is_left_to_its_graceful_timeout():
    pool, (p1, p2, p3) = running(3, request_timeout=1.0, graceful_timeout=30.0)
    [retired] = effects(pool.decide(Signal(signal.SIGTTOU), T + 1))
    assert tick(pool, T + 10, {retired.pid: (T, GET)}) == []


def test_a_reload_can_turn_request_timeout_on():
    pool, (p1, p2) = running(2)
    new = pool.fork(pool.decide(Reload(2, request_timeout=3.0), T + 1), T + 1)
    pool.ready(new, T + 2)
    assert pool.arb.limits == Limits(30.0, 3.0, 0)
    out = tick(pool, T + 6, {new[0]: (T + 2.5, GET)})
    assert effects(out)[0] == Kill(new[0], ABRT)


# -- max_rss ---------------------------------------------------------------------

def test_a_worker_over_max_rss_is_recycled_replacement_first():
    pool, (p1, p2) = running(2, max_rss=100)
    assert tick(pool, T + 1, rss={p1: 100 * MIB, p2: 20 * MIB}) == []   # at the limit: fine
    out = tick(pool, T + 2, rss={p1: 150 * MIB + MIB // 2, p2: 20 * MIB})
    assert out == [Log("warning", f"worker {p1} (gen 1) uses 150.5 MiB, over max_rss (100 MiB); "
                                  "starting its replacement"), Spawn(1, 2)]
    # Marked once: neither a later Tick nor max_requests starts a second replacement.
    assert tick(pool, T + 3, rss={p1: 200 * MIB}) == []
    assert pool.decide(RecycleWanted(p1), T + 3) == []
    [p3] = pool.fork(out, T + 2)
    assert pool.decide(Tick({}, {}, {p1: 200 * MIB, p3: 200 * MIB}), T + 3.5) == []  # booting
    # The old worker keeps serving until its replacement is ready, then finishes gracefully.
    assert effects(pool.decide(WorkerReady(p3), T + 4)) == [Kill(p1, TERM)]
    assert effects(pool.decide(ChildExited(p1, 0), T + 5)) == []
    assert sorted(pool.arb.workers) == [p2, p3]
    assert pool.arb.restarts == {"max_rss": 1}


def test_max_rss_zero_never_recycles():
    pool, (p1, p2) = running(2)
    assert tick(pool, T + 1, rss={p1: 1 << 40, p2: 1 << 40}) == []


def test_a_worker_recycled_for_max_requests_is_not_marked_again_for_max_rss():
    pool, (p1, p2) = running(2, max_rss=10)
    out = pool.decide(RecycleWanted(p1), T + 1)
    assert effects(out) == [Spawn(1, 2)]
    assert tick(pool, T + 2, rss={p1: 50 * MIB}) == []
    assert pool.arb.workers[p1].recycle == "max_requests"


def test_max_rss_below_a_fresh_worker_turns_off_instead_of_churning():
    pool, (p1, p2) = running(2, max_rss=50)
    out = tick(pool, T + 1, rss={p1: 80 * MIB, p2: 81 * MIB}, served={p1: 0, p2: 0})
    # Said once, as an error; nobody is replaced, and RSS is no longer read.
    assert out == [Log("error", f"worker {p1} (gen 1) uses 80.0 MiB before serving any request, "
                                "over max_rss (50 MiB): replacements would start as big, so "
                                "max_rss is off until the next reload; raise it")]
    assert pool.arb.limits.max_rss == 0
    assert tick(pool, T + 2, rss={p1: 90 * MIB, p2: 90 * MIB}, served={p1: 5, p2: 5}) == []
    assert not any(w.recycle for w in pool.arb.workers.values())
    # A reload brings the configured limit back.
    new = pool.fork(pool.decide(Reload(2, max_rss=50), T + 3), T + 3)
    pool.ready(new, T + 4)
    assert pool.arb.limits.max_rss == 50


def test_a_worker_over_max_rss_after_serving_is_recycled_even_if_it_got_there_fast():
    pool, (p1, p2) = running(2, max_rss=50)
    out = tick(pool, T + 1, rss={p1: 80 * MIB, p2: 20 * MIB}, served={p1: 3, p2: 0})
    assert effects(out) == [Spawn(1, 2)] and pool.arb.workers[p1].recycle == "max_rss"
