"""``prefork reload | stop | status | scale``: steering a running master.

Each reaches the master through its control socket (full answers: the pool
table, a reload's config error), so every way of naming the master gives
the same answer: ``--control-socket``, ``--pidfile`` (a master with pidfile
P answers at P.ctl, see :func:`.control.beside`), or the same keys in the
``-c`` config file.  Only a master with no socket there (an older prefork)
is reached through its pidfile: signals, and /proc for ``status``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from typing import Any, Dict, List, Optional, Tuple

from . import config as config_mod, metrics, procfs
from .errors import EXIT_FAILURE, EXIT_OK, ConfigError, PreforkError
from .supervisor import control, pidfile
from .top import duration, size

STOP_WAIT = 60.0


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="the TOML config file the master was started with")
    parser.add_argument("--pidfile", metavar="PATH", help="the master's pidfile")
    parser.add_argument("--control-socket", metavar="PATH", help="the master's control socket")


def locate(args: argparse.Namespace) -> Tuple[str, str]:
    """(control socket, pidfile) from the flags, else from the config file."""
    sock, pid = args.control_socket or "", args.pidfile or ""
    if args.config and not (sock or pid):
        values = config_mod.read_toml(args.config)
        for key in values:
            if key not in config_mod.FIELDS:
                raise ConfigError(f"{args.config}: unknown key '{key}'")
        sock, pid = str(values.get("control_socket", "")), str(values.get("pidfile", ""))
    if not (sock or pid):
        raise ConfigError("say where the master is: --control-socket PATH, --pidfile PATH, "
                          "or -c FILE naming one of them")
    return sock, pid


def _ask(sock: str, pid_path: str, message: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The master's reply; None when only its pidfile can reach it (no socket at P.ctl,
    or no live one: signals then, whose errors say whether the master runs)."""
    try:
        reply = control.request(sock or control.beside(pid_path), message)
    except control.Unreachable:
        if not pid_path:
            raise
        return None
    if not reply.get("ok"):
        raise PreforkError(str(reply.get("error", "the master refused")))
    return reply


def _signal(pid_path: str, sig: int, times: int = 1) -> int:
    """Send ``sig`` ``times`` times, each once the last was taken: pending signals merge."""
    pid = pidfile.read_pid(pid_path)
    for n in range(times):
        if n:
            _wait_delivered(pid, sig)
        os.kill(pid, sig)
    return pid


def _wait_delivered(pid: int, sig: int, deadline: float = 5.0) -> None:
    """Until ``sig`` is no longer pending for ``pid`` (/proc/PID/status ShdPnd)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and procfs.signal_pending(pid, sig):
        time.sleep(0.005)


def reload(args: argparse.Namespace) -> int:
    sock, pid_path = locate(args)
    reply = _ask(sock, pid_path, {"cmd": "reload"})
    pid = reply["pid"] if reply else _signal(pid_path, signal.SIGHUP)
    print(f"reloading: master {pid} is starting a new generation")
    return EXIT_OK


def stop(args: argparse.Namespace) -> int:
    sock, pid_path = locate(args)
    reply = _ask(sock, pid_path, {"cmd": "stop", "fast": args.fast})
    pid = reply["pid"] if reply else \
        _signal(pid_path, signal.SIGQUIT if args.fast else signal.SIGTERM)
    if args.no_wait:
        print(f"stopping master {pid}")
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    while _alive(pid):
        if time.monotonic() > deadline:
            print(f"prefork: error: master {pid} still running after {args.wait:.0f} s")
            return EXIT_FAILURE
        time.sleep(0.05)
    print(f"stopped master {pid}")
    return EXIT_OK


def scale(args: argparse.Namespace) -> int:
    text = args.workers
    relative = text[:1] in "+-"
    if not text.lstrip("+-").isdigit():
        raise ConfigError(f"scale: expected N, +N or -N, got {text!r}")
    number = int(text)
    sock, pid_path = locate(args)
    reply = _ask(sock, pid_path, {"cmd": "scale", "workers": number, "relative": relative})
    if reply:
        if "workers_max" in reply:
            print(f"scaling master {reply['pid']}: at least {reply['workers']} workers, "
                  f"up to {reply['workers_max']} under load")
        else:
            print(f"scaling master {reply['pid']} to {reply['workers']} workers")
        return EXIT_OK
    if not relative:
        pidfile.read_pid(pid_path)      # "not running" first, if so
        raise ConfigError(f"scale N needs the control socket, and there is none at "
                          f"{control.beside(pid_path)} (an older master?): use +N or -N")
    sig = signal.SIGTTIN if number > 0 else signal.SIGTTOU
    pid = _signal(pid_path, sig, abs(number))
    print(f"sent {abs(number)} x {signal.Signals(sig).name} to master {pid}")
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    report = fetch_status(*locate(args))
    if args.format == "json":
        print(json.dumps(report, indent=2))
    elif args.format == "prometheus":
        print(metrics.render(report), end="")
    else:
        print(format_status(report))
    return EXIT_OK


def fetch_status(sock: str, pid_path: str) -> Dict[str, Any]:
    """The status report, from the control socket if there is one, else from /proc."""
    reply = _ask(sock, pid_path, {"cmd": "status"})
    return reply if reply else _status_from_proc(pidfile.read_pid(pid_path))


def format_status(report: Dict[str, Any]) -> str:
    lines = [f"master {report['pid']}  {report.get('target', '')}  generation "
             f"{report.get('generation', '?')}  {report.get('phase', '')}"
             f"{'  reloading' if report.get('reloading') else ''}  "
             f"workers {len(report['workers'])}/{report.get('workers_wanted', '?')}"]
    header = ("PID", "GEN", "STATE", "ACTIVITY", "AGE", "REQUESTS", "RSS")
    rows: List[Tuple[str, ...]] = [header]
    for w in report["workers"]:
        activity = "-" if w.get("busy") is None else \
            f"{'busy' if w['busy'] else 'idle'} {duration(w['for'])}"
        requests = "-" if w.get("requests") is None else str(w["requests"])
        generation = "-" if w.get("generation") is None else str(w["generation"])
        rows.append((str(w["pid"]), generation, w["state"], activity,
                     duration(w["age"]), requests, size(w["rss"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
              for row in rows]
    for listener in report.get("listeners", ()):    # queue/backlog, "-" where unknown
        queue, backlog = listener.get("queue"), listener.get("backlog")
        lines.append(f"listener {listener['name']}  queue "
                     f"{'-' if queue is None else queue}/{'-' if backlog is None else backlog}")
    return "\n".join(lines)


def _status_from_proc(pid: int) -> Dict[str, Any]:
    """What /proc tells without the control socket: no request counts, no activity."""
    uptime = procfs.uptime()
    workers = []
    for child in procfs.children(pid):
        title, started = procfs.command_line(child), procfs.start_ticks(child)
        if title is None or started is None:
            continue    # it exited meanwhile
        label = title.rsplit(" gen ", 1)[-1].strip() if " gen " in title else ""
        generation = int(label) if label.isdigit() else None
        workers.append({"pid": child, "generation": generation, "state": "running",
                        "busy": None, "for": 0.0, "age": uptime - started / procfs.TICKS,
                        "requests": None, "rss": procfs.rss_bytes(child)})
    return {"pid": pid, "rss": procfs.rss_bytes(pid), "started": procfs.start_time(pid),
            "workers": workers, "note": "from /proc: this master has no control socket "
                                        "beside its pidfile; no activity or request counts"}


def _alive(pid: int) -> bool:
    return procfs.state(pid) not in (None, "Z")
