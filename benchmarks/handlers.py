"""Handler classes under load: prefork against the stdlib servers, side by side.

Serves prefork.examples.hello:HelloHandler (an http.server handler, HTTP/1.1
keep-alive) with each server in turn on 127.0.0.1, runs wrk against it, and
prints requests/s, p50 and p99 latency and the ratio to the stdlib's
ThreadingHTTPServer.

    python benchmarks/handlers.py [--duration 10] [--rounds 1] [--connections 64]

Needs wrk (Debian package `wrk`).  Never run as a test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (free_port, parse_args, print_table, run_wrk, schedule,  # noqa: E402
                    start, stop)

REPO = Path(__file__).resolve().parents[1]
HANDLER = "prefork.examples.hello:HelloHandler"

STDLIB = """
import sys, socketserver
from http.server import HTTPServer, ThreadingHTTPServer
from prefork.examples.hello import HelloHandler
class ForkingHTTPServer(socketserver.ForkingMixIn, HTTPServer):
    pass
kind = ThreadingHTTPServer if sys.argv[1] == "threading" else ForkingHTTPServer
kind(("127.0.0.1", int(sys.argv[2])), HelloHandler).serve_forever()
"""


def servers(workers: int) -> Dict[str, List[str]]:
    py = sys.executable
    prefork = [py, "-m", "prefork", "serve", HANDLER, "-w", str(workers), "--log-level",
               "warning", "-b", "127.0.0.1:{port}"]
    return {
        "stdlib ThreadingHTTPServer": [py, "-c", STDLIB, "threading", "{port}"],
        "stdlib ForkingMixIn": [py, "-c", STDLIB, "forking", "{port}"],
        f"prefork -k thread -w {workers}": prefork + ["-k", "thread"],
        f"prefork -k sync -w {workers}": prefork + ["-k", "sync"],
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    table = servers(args.workers)
    modes = {"keep-alive": False, "Connection: close": True}
    results: dict = {}
    for mode, name in schedule(args.rounds, list(modes), list(table)):
        close = modes[mode]
        if not close and "sync" in name:
            continue   # 2 sync workers serve 2 of 64 keep-alive clients: not comparable
        port = free_port()
        proc = start([a.format(port=port) for a in table[name]], port,
                     env={"PYTHONPATH": str(REPO)})
        try:
            results.setdefault((mode, name), []).append(
                run_wrk(port, args.duration, args.connections, close))
        finally:
            stop(proc)
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} round(s), median "
          "per cell; ratio = req/s over stdlib ThreadingHTTPServer\n")
    print_table(results, list(modes), list(table), "stdlib ThreadingHTTPServer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
