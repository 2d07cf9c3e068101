"""What the master's shell tells the arbiter (events) and what it is told to do (actions).

Plain frozen records, no behaviour: the vocabulary between
:class:`prefork.supervisor.arbiter.Arbiter` and the I/O shell in
:mod:`prefork.supervisor.master`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Tuple


# -- events -----------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    """The listeners are bound; bring up the first generation."""


@dataclass(frozen=True)
class Signal:
    """A signal reached the master (read from the wakeup fd, not in a handler)."""

    sig: int


@dataclass(frozen=True)
class Reload:
    """HUP, and the config was re-read successfully: start a new generation."""

    workers: int
    timeout: float = 30.0
    graceful_timeout: float = 30.0
    request_timeout: float = 0.0
    max_rss: int = 0


@dataclass(frozen=True)
class Scale:
    """Set the pool size (prefork scale N, or +N / -N resolved by the shell)."""

    workers: int


@dataclass(frozen=True)
class ReloadFailed:
    """HUP, but the new config (or its listeners) could not be loaded."""

    reason: str


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
    """waitpid reaped a child; ``code`` is its exit status, or -N for signal N."""

    pid: int
    code: int


@dataclass(frozen=True)
class Tick:
    """Time passed; what the scoreboard and /proc say about the live workers, by PID.

    ``heartbeats``: the last heartbeat.  ``requests`` (read only while
    request_timeout is on): since when the worker's longest-running request
    has run, and what it is (``"GET / HTTP/1.1" from 10.0.0.1:5000``), or
    ``(0.0, "")`` when it runs none.  ``rss`` (read only while max_rss is
    on): resident bytes; ``served`` (with it): requests finished or in flight.
    """

    heartbeats: Mapping[int, float] = field(default_factory=dict)
    requests: Mapping[int, Tuple[float, str]] = field(default_factory=dict)
    rss: Mapping[int, int] = field(default_factory=dict)
    served: Mapping[int, int] = field(default_factory=dict)


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
class Exit:
    status: int
