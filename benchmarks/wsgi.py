"""A WSGI hello world under load: prefork against gunicorn, meinheld and bjoern, side by side.

Installs the peers into their own virtual environment (benchmarks/.peers,
made on first use), starts each with 2 workers on 127.0.0.1, runs
``wrk -t2 -c64`` against it, alternating servers round by round, and prints
requests/s, p50 and p99 latency and the ratio to gunicorn sync.  Modes:
keep-alive, ``Connection: close``, and keep-alive while 1000 other
keep-alive connections sit idle (prefork only).

    python benchmarks/wsgi.py [--duration 10] [--rounds 1]

Needs wrk (Debian package `wrk`); bjoern needs libev (Debian `libev-dev`).
A peer that does not install is left out, with a note.  Never run as a test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (chosen, free_port, open_idle_connections, parse_args, print_table,  # noqa: E402
                    run_wrk, schedule, start, stop)

REPO = HERE.parent
PEERS = HERE / ".peers"
IDLE = 1000


def peer_python() -> Path:
    """The peers' interpreter, installing what is missing; best effort per peer."""
    python = PEERS / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    # meinheld pins a greenlet that no longer builds; it runs on a current one.
    for args in (["gunicorn", "greenlet"], ["--no-deps", "meinheld"], ["bjoern"]):
        if not _importable(python, args[-1]):
            subprocess.run(pip + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return python


def _importable(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"],
                          stderr=subprocess.DEVNULL).returncode == 0


def servers(python: Path, workers: int) -> Dict[str, List[str]]:
    gunicorn = [str(python), "-m", "gunicorn", "-w", str(workers), "-b", "127.0.0.1:{port}",
                "--log-level", "warning"]
    prefork = [sys.executable, "-m", "prefork", "serve", "apps:app", "-w", str(workers),
               "-b", "127.0.0.1:{port}", "--log-level", "warning"]
    table = {
        "gunicorn sync": gunicorn + ["-k", "sync", "apps:app"],
        "gunicorn gthread": gunicorn + ["-k", "gthread", "--threads", "4", "apps:app"],
        "prefork sync": prefork + ["-k", "sync"],
        "prefork thread": prefork + ["-k", "thread", "--threads", "4"],
    }
    if _importable(python, "meinheld"):
        table["meinheld"] = gunicorn + ["-k", "meinheld.gmeinheld.MeinheldWorker", "apps:app"]
    else:
        print("note: meinheld did not install; left out", file=sys.stderr)
    if _importable(python, "bjoern"):
        table["bjoern"] = [str(python), str(HERE / "bjoern_pool.py"), "{port}", str(workers)]
    else:
        print("note: bjoern did not install (needs libev-dev); left out", file=sys.stderr)
    return table


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    table = servers(peer_python(), args.workers)
    # The idle mode right after keep-alive: the two are compared with each other,
    # and the machine drifts less over a shorter span.
    modes = {"keep-alive": "", f"keep-alive, {IDLE} idle": "idle", "Connection: close": "close"}
    results: dict = {}
    env = {"PYTHONPATH": f"{HERE}:{REPO}"}
    names = chosen(list(table), args.only)
    for mode, name in schedule(args.rounds, chosen(list(modes), args.modes), names):
        kind = modes[mode]
        if kind == "idle" and not name.startswith("prefork"):
            continue
        port = free_port()
        argv = [a.format(port=port) for a in table[name]]
        if kind == "idle":
            argv += ["--keepalive", "120"]   # the idle clients must stay connected
        proc = start(argv, port, env=env, cwd=str(HERE))
        idle = open_idle_connections(port, IDLE) if kind == "idle" else []
        try:
            results.setdefault((mode, name), []).append(
                run_wrk(port, args.duration, args.connections, close=kind == "close",
                        spread_over=args.workers))
        finally:
            for s in idle:
                s.close()
            stop(proc)
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.workers} workers each, "
          f"{args.rounds} round(s), median per cell; ratio = req/s over gunicorn sync\n")
    print_table(results, list(modes), names, "gunicorn sync")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
