"""What the master holds open, and what each kind of process keeps of it.

The listeners, the pidfile lock, the control socket and the metrics socket
cross process boundaries three ways: a daemon keeps them all through
``DaemonContext`` (:meth:`Holdings.preserve`), a worker keeps only its own
generation's listeners after fork (:meth:`Holdings.close_in_worker`), and a
new master inherits them all across exec on USR2 (:meth:`Holdings.bequeath`,
then :meth:`Holdings.hand_over` in the old master and :func:`open_inherited`
in the new one).  This module is the one place that knows all three.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .. import sockets
from ..errors import BindError, PreforkError
from .control import ControlServer, beside
from .listeners import ListenerSet
from .metrics_server import MetricsServer
from .pidfile import PidFile
from .upgrade import Inheritance

logger = logging.getLogger("prefork")


@dataclass
class Holdings:
    listeners: ListenerSet
    pidfile: Optional[PidFile] = None
    control: Optional[ControlServer] = None
    metrics: Optional[MetricsServer] = None
    metrics_bind: str = ""                # the setting the metrics socket was made for
    link: str = ""          # pidfile.ctl -> control_socket, when both are set (ours to remove)
    activated: List[sockets.Listener] = field(default_factory=list)   # systemd's

    def preserve(self) -> List[int]:
        """The fds a daemon must keep open."""
        fds = [l.sock.fileno() for l in self.listeners.all()]
        if self.pidfile is not None and self.pidfile.fd is not None:
            fds.append(self.pidfile.fd)
        fds += [s.fileno() for s in (self.control, self.metrics) if s is not None]
        return fds

    def close_in_worker(self, keep: Sequence[sockets.Listener]) -> None:
        """In a new worker: nothing but its own listeners."""
        if self.control is not None:
            self.control.close_in_child()
        if self.metrics is not None:
            self.metrics.close_in_child()
        if self.pidfile is not None:
            self.pidfile.release()
        own = {id(l) for l in keep}
        for listener in self.listeners.all():
            if id(listener) not in own:
                listener.close()

    def bequeath(self, generation: int) -> Inheritance:
        """What a new master is to inherit (the fds stay open here until hand-over)."""
        return Inheritance(
            listeners=[(l.sock.fileno(), l.spec.text) for l in self.listeners.all()],
            activated=bool(self.activated),
            pidfile=self.pidfile.fd if self.pidfile is not None else None,
            control=self.control.fileno() if self.control is not None else None,
            metrics=self.metrics.fileno() if self.metrics is not None else None,
            generation=generation)

    def hand_over(self) -> None:
        """The new master serves: let go of what it now owns, removing nothing."""
        self.listeners.owns_files = False
        if self.pidfile is not None:
            self.pidfile.release()     # it holds the same lock, and wrote its PID
            self.pidfile = None
        if self.control is not None:
            self.control.close_in_child()   # the path stays: the new master answers there
            self.control = None
        self.link = ""      # the new master's now
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def rebind_metrics(self, address: str, render: Callable[[], str]) -> None:
        """Apply a reloaded ``metrics_bind``: the new socket is bound before the old
        one closes, so a bind error (raised) leaves the old one serving."""
        if address == self.metrics_bind:
            return
        old = self.metrics
        if old is not None and address and sockets.same_address(old.sock, address):
            self.metrics_bind = address      # spelled differently, same socket
            return
        self.metrics = MetricsServer(address, render) if address else None
        self.metrics_bind = address
        if old is not None:
            old.close()
        if self.metrics is not None:
            logger.info("metrics at http://%s/metrics", self.metrics.name)
        else:
            logger.info("metrics_bind unset: no more metrics endpoint")

    def close(self, owner: bool) -> None:
        """At exit.  ``owner`` is false for a new master that never took over:
        the pidfile and control socket file are still the old master's."""
        self.listeners.owns_files = self.listeners.owns_files and owner
        self.listeners.close_all()
        if self.control is not None:
            if owner and self.link and _points_to(self.link, self.control.path):
                os.unlink(self.link)
            self.control.close() if owner else self.control.close_in_child()
        if self.metrics is not None:
            self.metrics.close()
        if self.pidfile is not None:
            self.pidfile.remove()


def open_inherited(holdings: Holdings, inheritance: Optional[Inheritance],
                   control_path: str, metrics_bind: str,
                   respond: Callable[[Dict[str, object]], Dict[str, object]],
                   render: Callable[[], str]) -> None:
    """Open the control and metrics sockets, taking an old master's where they match.

    With a pidfile P the control socket is always reachable at P.ctl: it is
    opened there when ``control_path`` is unset (a failure is only logged: a
    start that worked without it still does), else P.ctl links to it.
    """
    def inherited(fd: Optional[int], wanted: str) -> Optional[socket.socket]:
        if fd is None:
            return None
        sock = socket.socket(fileno=fd)
        if wanted and sockets.same_address(sock, wanted):
            return sock
        sock.close()    # the config names another address (or none): made afresh
        return None

    near = beside(holdings.pidfile.path) if holdings.pidfile is not None else ""
    control = inherited(inheritance.control, control_path or near) if inheritance else None
    metrics = inherited(inheritance.metrics, metrics_bind) if inheritance else None
    if metrics_bind:    # before the control socket: a failure leaves no file
        holdings.metrics = MetricsServer(metrics_bind, render, metrics)
        holdings.metrics_bind = metrics_bind
        logger.info("metrics at http://%s/metrics", holdings.metrics.name)
    if control_path:
        holdings.control = ControlServer(control_path, respond, control)
        if near and near != holdings.control.path:
            holdings.link = _link(near, holdings.control.path)
    elif near:
        try:
            holdings.control = ControlServer(near, respond, control)
        except PreforkError as exc:
            logger.warning("%s: steer this master by signals, through its pidfile", exc)


def _points_to(link: str, target: str) -> bool:
    try:
        return os.readlink(link) == target
    except OSError:
        return False


def _link(path: str, target: str) -> str:
    """Make ``path`` a symlink to ``target`` (kept if an old master made it); '' if not."""
    if _points_to(path, target):
        return path
    try:
        if os.path.islink(path):
            os.unlink(path)       # a crashed master's, to another socket
        else:
            sockets.remove_stale_socket(path, "control socket")
        os.symlink(target, path)
    except (OSError, BindError) as exc:
        logger.warning("no link to the control socket at %s: %s", path, exc)
        return ""
    return path


def adopt_listeners(holdings: Holdings, inheritance: Optional[Inheritance]) -> None:
    """Listening sockets made before us: an old master's, or systemd's (LISTEN_FDS)."""
    if inheritance is None:
        holdings.activated = sockets.from_systemd()
        return
    handed = [sockets.from_fd(fd, text) for fd, text in inheritance.listeners]
    if inheritance.activated:
        holdings.activated = handed
    else:
        holdings.listeners.inherit(handed)
