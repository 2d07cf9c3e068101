"""What the master's shell tells the arbiter (events) and what it is told to do (actions).

Plain frozen records, no behaviour: the vocabulary between
:class:`prefork.supervisor.arbiter.Arbiter` and the I/O shell in
:mod:`prefork.supervisor.master`.  Some actions have an answer: the shell
feeds it back as an event once the actions of the current event are done
(LoadConfig -> Reload | ReloadFailed; Spawn -> Spawned | SpawnFailed;
StartUpgrade -> UpgradeStarted | UpgradeFailed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Tuple


# -- events -----------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    """The listeners are bound; bring up the first generation.  ``pid`` is the
    master's own (after --daemon detached it), for the upgrade's log lines."""

    pid: int = 0


@dataclass(frozen=True)
class Signal:
    """A signal reached the master (read from the wakeup fd, not in a handler)."""

    sig: int


@dataclass(frozen=True)
class ReloadWanted:
    """``prefork reload`` on the control socket (a HUP is Signal(SIGHUP)); ``why``
    begins the log lines."""

    why: str = "reload"


@dataclass(frozen=True)
class Reload:
    """The answer to LoadConfig: the config was re-read; start a new generation.

    The fields are the pool's settings from the new config; ``payload`` is
    the shell's own record of the generation (config, target, listeners,
    hooks), opaque here, handed back in a NewGeneration action.
    """

    workers: int
    timeout: float = 30.0
    graceful_timeout: float = 30.0
    request_timeout: float = 0.0
    max_rss: int = 0
    preload: bool = False
    upgrade_timeout: float = 60.0
    max_workers: int = 0
    idle_retire_after: float = 30.0
    payload: object = None


@dataclass(frozen=True)
class Scale:
    """Set the pool size (prefork scale N), or change it by N when ``relative``."""

    workers: int
    relative: bool = False


@dataclass(frozen=True)
class ReloadFailed:
    """The answer to LoadConfig: the new config (or its listeners) could not be loaded."""

    reason: str


@dataclass(frozen=True)
class UpgradeStarted:
    """The answer to StartUpgrade: the new master was forked (and execs)."""

    pid: int


@dataclass(frozen=True)
class UpgradeFailed:
    """The new master will not serve: it said why, its pipe closed, or (``pid`` 0)
    it could not even be forked."""

    pid: int
    reason: str


@dataclass(frozen=True)
class UpgradeReady:
    """The new master's workers are ready and its PID is in the pidfile."""

    pid: int


@dataclass(frozen=True)
class Spawned:
    """The shell forked the worker that a Spawn action asked for."""

    pid: int
    generation: int
    slot: int


@dataclass(frozen=True)
class SpawnFailed:
    """fork() itself failed for a Spawn action."""

    generation: int
    slot: int
    reason: str


@dataclass(frozen=True)
class WorkerReady:
    """A worker loaded its target and entered its serve loop."""

    pid: int


@dataclass(frozen=True)
class RecycleWanted:
    """A worker reached max_requests: replace it, replacement first."""

    pid: int


@dataclass(frozen=True)
class ChildExited:
    """waitpid reaped a child (a worker or a new master); ``code`` is its exit
    status, or -N for signal N."""

    pid: int
    code: int


@dataclass(frozen=True)
class Tick:
    """Time passed; what the scoreboard and /proc say about the live workers, by PID.

    ``heartbeats``: the last heartbeat.  ``requests`` (read only while
    request_timeout is on, and not of a worker that times its own): since
    when the worker's longest-running request has run, and what it is (``"GET / HTTP/1.1" from 10.0.0.1:5000``), or
    ``(0.0, "")`` when it runs none.  ``rss`` (read only while max_rss is
    on): resident bytes; ``served`` (with it): requests finished or in flight.
    """

    heartbeats: Mapping[int, float] = field(default_factory=dict)
    requests: Mapping[int, Tuple[float, str]] = field(default_factory=dict)
    rss: Mapping[int, int] = field(default_factory=dict)
    served: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolLoad:
    """With max_workers on: which workers are in a request (by PID, from the
    scoreboard) and the connections waiting in all listen queues."""

    busy: Mapping[int, bool] = field(default_factory=dict)
    queue: int = 0


# -- actions ----------------------------------------------------------------

@dataclass(frozen=True)
class Spawn:
    generation: int
    slot: int


@dataclass(frozen=True)
class Kill:
    pid: int
    sig: int


@dataclass(frozen=True)
class CloseListeners:
    pass


@dataclass(frozen=True)
class ReopenLogs:
    pass


@dataclass(frozen=True)
class Notify:
    """A service-manager state line such as READY=1 (sd_notify)."""

    text: str


@dataclass(frozen=True)
class Log:
    level: str
    text: str


@dataclass(frozen=True)
class Refused(Log):
    """A request that is not carried out (a reload while stopping...): logged, and
    the control socket's reply says so."""


@dataclass(frozen=True)
class Exit:
    status: int


@dataclass(frozen=True)
class LoadConfig:
    """Re-read the config and load what a new generation needs; answer with
    Reload or ReloadFailed."""


@dataclass(frozen=True)
class NewGeneration:
    """Workers of generation ``number`` are started from ``payload`` (a Reload's)."""

    number: int
    payload: object = None


@dataclass(frozen=True)
class StartUpgrade:
    """Fork and exec a new master, bequeathing it the listeners, pidfile, control
    and metrics sockets and the last ``generation`` number; answer with
    UpgradeStarted or UpgradeFailed."""

    generation: int


@dataclass(frozen=True)
class HandOver:
    """The new master ``pid`` serves: let go of the pidfile and sockets it now owns
    (removing nothing) and of its report pipe."""

    pid: int
