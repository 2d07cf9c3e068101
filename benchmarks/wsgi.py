"""A WSGI hello world under load: prefork against gunicorn, granian, meinheld and bjoern.

Installs the peers into their own virtual environment (benchmarks/.peers,
made on first use), starts each with 2 workers on 127.0.0.1, runs
``wrk -t2 -c64`` against it, alternating servers round by round, and prints
requests/s, p50 and p99 latency and the ratio to gunicorn sync.  Modes:
keep-alive, ``Connection: close``, and keep-alive while 1000 other
keep-alive connections sit idle (prefork only).  "prefork sync (pure)" is
prefork's sync worker with PREFORK_PURE_PYTHON=1: the same server on the
sources of its compiled hot path (README, "The compiled hot path").

    python benchmarks/wsgi.py [--duration 10] [--rounds 1]
    python benchmarks/wsgi.py --base HEAD~3 --only prefork --rounds 5

``--base REV`` also runs prefork as of git revision REV (a temporary
worktree, same interpreter) beside the working tree's, interleaved, and adds
a table of current/base ratios with each one's spread over the rounds;
``--current REV`` measures REV instead of the working tree.

Needs wrk (Debian package `wrk`); bjoern needs libev (Debian `libev-dev`).
A peer that does not install is left out, with a note.  Never run as a test.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (check_import, chosen, describe_head, free_port, importable,  # noqa: E402
                    open_idle_connections, parse_args, peer_python, print_comparison,
                    print_table, run_wrk, schedule, start, stop, worktree)

REPO = HERE.parent
PEER_NAMES = ("gunicorn sync", "gunicorn gthread", "granian", "meinheld", "bjoern")
# meinheld pins a greenlet that no longer builds; it runs on a current one.
PEER_INSTALLS = (["gunicorn", "greenlet"], ["granian"], ["--no-deps", "meinheld"], ["bjoern"])
PURE = " (pure)"     # a server name's suffix: PREFORK_PURE_PYTHON=1
IDLE = 1000


def servers(python: Optional[Path], workers: int) -> Dict[str, List[str]]:
    """The servers' command lines; prefork's alone when ``python`` (the peers'
    interpreter) is None."""
    gunicorn = [str(python), "-m", "gunicorn", "-w", str(workers), "-b", "127.0.0.1:{port}",
                "--log-level", "warning"]
    prefork = [sys.executable, "-m", "prefork", "serve", "apps:app", "-w", str(workers),
               "-b", "127.0.0.1:{port}", "--log-level", "warning"]
    table = {
        "gunicorn sync": gunicorn + ["-k", "sync", "apps:app"],
        "gunicorn gthread": gunicorn + ["-k", "gthread", "--threads", "4", "apps:app"],
        "prefork sync": prefork + ["-k", "sync"],
        "prefork sync" + PURE: prefork + ["-k", "sync"],
        "prefork thread": prefork + ["-k", "thread", "--threads", "4"],
    }
    if python is None:
        return {name: argv for name, argv in table.items() if name not in PEER_NAMES}
    if importable(python, "granian"):
        table["granian"] = [str(python), "-m", "granian", "--interface", "wsgi", "--workers",
                            str(workers), "--host", "127.0.0.1", "--port", "{port}",
                            "--log-level", "warning", "apps:app"]
    else:
        print("note: granian did not install; left out", file=sys.stderr)
    if importable(python, "meinheld"):
        table["meinheld"] = gunicorn + ["-k", "meinheld.gmeinheld.MeinheldWorker", "apps:app"]
    else:
        print("note: meinheld did not install; left out", file=sys.stderr)
    if importable(python, "bjoern"):
        table["bjoern"] = [str(python), str(HERE / "bjoern_pool.py"), "{port}", str(workers)]
    else:
        print("note: bjoern did not install (needs libev-dev); left out", file=sys.stderr)
    return table


def with_base(table: Dict[str, List[str]], rev: str
              ) -> Tuple[Dict[str, List[str]], List[Tuple[str, str]]]:
    """The table with a "NAME @REV" copy right after each prefork server (the pair
    then runs back to back in most rounds), and the (current, base) pairs."""
    extended: Dict[str, List[str]] = {}
    pairs = []
    for name, argv in table.items():
        extended[name] = argv
        if name.startswith("prefork") and not name.endswith(PURE):
            extended[f"{name} @{rev}"] = argv
            pairs.append((name, f"{name} @{rev}"))
    return extended, pairs


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, base=True)
    with contextlib.ExitStack() as trees:
        current, label = REPO, f"the working tree, {describe_head()}"
        if args.current:
            current, commit = trees.enter_context(worktree(args.current))
            label = f"@{args.current} ({commit})"
        base = trees.enter_context(worktree(args.base)) if args.base else None
        return run(args, current, label, base)


def run(args, current: Path, label: str, base: Optional[Tuple[Path, str]]) -> int:
    # The peers' virtualenv is made (and filled) only when a peer is to run.
    python = peer_python(PEER_INSTALLS) if chosen(PEER_NAMES, args.only) else None
    table, pairs = servers(python, args.workers), []
    pythonpath = dict.fromkeys(table, f"{HERE}:{current}")
    if base is not None:
        tree, commit = base
        check_import(f"{HERE}:{current}", current / "prefork", str(HERE))
        check_import(f"{HERE}:{tree}", tree / "prefork", str(HERE))
        table, pairs = with_base(table, args.base)
        for _, old in pairs:
            pythonpath[old] = f"{HERE}:{tree}"
    # The idle mode right after keep-alive: the two are compared with each other,
    # and the machine drifts less over a shorter span.
    modes = {"keep-alive": "", f"keep-alive, {IDLE} idle": "idle", "Connection: close": "close"}
    results: dict = {}
    names = chosen(list(table), args.only)
    for mode, name in schedule(args.rounds, chosen(list(modes), args.modes), names):
        kind = modes[mode]
        if kind == "idle" and not name.startswith("prefork"):
            continue
        port = free_port()
        argv = [a.format(port=port) for a in table[name]]
        if kind == "idle":
            argv += ["--keepalive", "120"]   # the idle clients must stay connected
        env = {"PYTHONPATH": pythonpath[name],
               "PREFORK_PURE_PYTHON": "1" if name.endswith(PURE) else ""}
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
    if pairs:
        print(f"\nprefork: {label} over @{args.base} ({base[1]}), median req/s; each "
              f"one's rounds min-max (width over the median), and the ratio in each round\n")
        print_comparison(results, list(modes), pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
