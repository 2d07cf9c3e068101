"""Drives an Arbiter the way the master's shell does, for the arbiter tests."""

import signal

from prefork.supervisor.arbiter import Arbiter
from prefork.supervisor.events import Log, Spawn, Spawned, Start, Tick, WorkerReady

T = 1000.0   # an arbitrary monotonic origin
TERM, KILL, QUIT, ABRT = signal.SIGTERM, signal.SIGKILL, signal.SIGQUIT, signal.SIGABRT


def effects(actions):
    return [a for a in actions if not isinstance(a, Log)]


def logs(actions, level):
    return [a.text for a in actions if isinstance(a, Log) and a.level == level]


class Pool:
    """Answers every Spawn with Spawned at once, as the master's shell does right after fork."""

    def __init__(self, workers=2, *, capacity=16, timeout=30.0, graceful_timeout=30.0,
                 request_timeout=0.0, max_rss=0, preload=False, upgrade_timeout=60.0):
        self.arb = Arbiter(workers, capacity=capacity, timeout=timeout,
                           graceful_timeout=graceful_timeout,
                           request_timeout=request_timeout, max_rss=max_rss,
                           preload=preload, upgrade_timeout=upgrade_timeout)
        self.last_pid = 100

    def decide(self, event, now=T):
        return self.arb.decide(event, now)

    def fork(self, actions, now=T):
        pids = []
        for action in actions:
            if isinstance(action, Spawn):
                self.last_pid += 1
                out = self.decide(Spawned(self.last_pid, action.generation, action.slot), now)
                assert out == [Log("debug", f"booting worker {self.last_pid} "
                                            f"(gen {action.generation})")]
                pids.append(self.last_pid)
        return pids

    def ready(self, pids, now=T):
        out = []
        for pid in pids:
            out += self.decide(WorkerReady(pid), now)
        return out

    def fresh(self, now):
        return Tick({pid: now for pid in self.arb.workers})


def running(workers=2, **kw):
    """A pool whose first generation came up at time T; returns (pool, pids)."""
    pool = Pool(workers, **kw)
    pids = pool.fork(pool.decide(Start()))
    pool.ready(pids)
    return pool, pids
