"""An ASGI hello world under load: prefork's asyncio worker against uvicorn, gunicorn's
ASGI worker and granian, side by side.

Installs the peers into benchmarks/.peers (made on first use): uvicorn with
httptools and uvloop, gunicorn (``--worker-class asgi``, with uvloop) and
granian.  Each server runs 2 workers on 127.0.0.1; ``wrk -t2 -c64`` runs
against it, alternating servers round by round, and the table gives
requests/s, p50 and p99 and the ratio to uvicorn.  Modes: keep-alive and
``Connection: close``.

    python benchmarks/asgi.py [--duration 10] [--rounds 3] [--only prefork,uvicorn]

Needs wrk (Debian package `wrk`).  A server that does not install or start
is left out, with a note.  Never run as a test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (chosen, importable, parse_args, peer_python, print_table,  # noqa: E402
                    run_wrk, started_rounds)

REPO = HERE.parent
PEER_NAMES = ("uvicorn", "gunicorn asgi", "granian")
PEER_INSTALLS = (["uvicorn", "httptools", "uvloop"], ["gunicorn"], ["granian"])


def servers(python: Optional[Path], workers: int) -> Dict[str, List[str]]:
    """The servers' command lines; prefork's alone when ``python`` (the peers'
    interpreter) is None."""
    prefork = [sys.executable, "-m", "prefork", "serve", "asgi_apps:app", "-k", "asyncio",
               "-w", str(workers), "-b", "127.0.0.1:{port}", "--log-level", "warning"]
    # "(pure)": the same server on the sources of its compiled hot path.
    table = {"prefork asyncio": prefork,
             "prefork asyncio (pure)": ["env", "PREFORK_PURE_PYTHON=1"] + prefork}
    if python is None:
        return table
    peers = {
        "uvicorn": ("uvicorn", [str(python), "-m", "uvicorn", "asgi_apps:app", "--workers",
                                str(workers), "--port", "{port}", "--http", "httptools",
                                "--loop", "uvloop", "--log-level", "warning", "--no-access-log"]),
        "gunicorn asgi": ("gunicorn", [str(python), "-m", "gunicorn", "asgi_apps:app",
                                       "--worker-class", "asgi", "-w", str(workers),
                                       "-b", "127.0.0.1:{port}", "--log-level", "warning"]),
        "granian": ("granian", [str(python), "-m", "granian", "--interface", "asgi",
                                "--workers", str(workers), "--port", "{port}",
                                "--log-level", "warning", "asgi_apps:app"]),
    }
    for name, (module, argv) in peers.items():
        if importable(python, module):
            table[name] = argv
        else:
            print(f"note: {module} did not install; {name} left out", file=sys.stderr)
    return table


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    python = peer_python(PEER_INSTALLS) if chosen(PEER_NAMES, args.only) else None
    table = servers(python, args.workers)
    modes = {"keep-alive": False, "Connection: close": True}
    results: dict = {}
    failed: set = set()
    names = chosen(list(table), args.only)
    for mode, name, port in started_rounds(table, chosen(list(modes), args.modes), names,
                                           args.rounds, {"PYTHONPATH": f"{HERE}:{REPO}"},
                                           str(HERE), failed):
        results.setdefault((mode, name), []).append(
            run_wrk(port, args.duration, args.connections, close=modes[mode],
                    spread_over=args.workers))
    names = [n for n in names if n not in failed]
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.workers} workers each, "
          f"{args.rounds} round(s), median per cell; ratio = req/s over uvicorn\n")
    print_table(results, list(modes), names, "uvicorn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
