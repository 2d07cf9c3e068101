"""Handler classes under load: prefork against the stdlib servers, side by side.

Serves prefork.examples.hello:HelloHandler (an http.server handler, HTTP/1.1
keep-alive) with each server in turn on 127.0.0.1, runs wrk against it, and
prints requests/s, p50 and p99 latency and the ratio to the stdlib's
ThreadingHTTPServer.  Servers alternate round by round, so drift on this
shared machine hits all of them alike; only the ratios mean something.

    python benchmarks/handlers.py [--duration 10] [--rounds 2] [--connections 64]

Needs wrk (Debian package `wrk`).  Never run as a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
HANDLER = "prefork.examples.hello:HelloHandler"

STDLIB_THREADING = """
import sys
from http.server import ThreadingHTTPServer
from prefork.examples.hello import HelloHandler
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), HelloHandler).serve_forever()
"""
STDLIB_FORKING = """
import sys, socketserver
from http.server import HTTPServer
from prefork.examples.hello import HelloHandler
class Server(socketserver.ForkingMixIn, HTTPServer):
    pass
Server(("127.0.0.1", int(sys.argv[1])), HelloHandler).serve_forever()
"""


def servers(workers: int) -> Dict[str, List[str]]:
    py = sys.executable
    prefork = [py, "-m", "prefork", "serve", HANDLER, "-w", str(workers), "--log-level", "warning"]
    return {
        "stdlib ThreadingHTTPServer": [py, "-c", STDLIB_THREADING],
        "stdlib ForkingMixIn": [py, "-c", STDLIB_FORKING],
        f"prefork -k thread -w {workers}": prefork + ["-k", "thread"],
        f"prefork -k sync -w {workers}": prefork + ["-k", "sync"],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {deadline} s")


def start(name: str, argv: List[str]) -> Tuple[subprocess.Popen, int]:
    port = free_port()
    if argv[1] == "-c":
        argv = argv + [str(port)]
    else:
        argv = argv + ["-b", f"127.0.0.1:{port}"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_port(port)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        # The stdlib forking server leaves children; they share its session.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _seconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)?", text).groups()
    unit = unit or "s"
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(port: int, duration: int, connections: int, close: bool) -> Dict[str, float]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=duration + 30).stdout
    if "Requests/sec" not in out or "50%" not in out:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": -1}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    # Not "read": wrk counts every server-side close as a read error, so in
    # Connection: close mode that number is just the request count.
    errors = sum(int(n) for n in re.findall(r"(?:connect|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99,
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    table = servers(args.workers)
    modes = {"keep-alive": False, "Connection: close": True}
    results: Dict[Tuple[str, str], List[Dict[str, float]]] = {}
    for _ in range(args.rounds):
        for mode, close in modes.items():
            for name, server_argv in table.items():
                if not close and "sync" in name:
                    continue   # 2 sync workers serve 2 of 64 keep-alive clients: not comparable
                proc, port = start(name, server_argv)
                try:
                    results.setdefault((mode, name), []).append(
                        run_wrk(port, args.duration, args.connections, close))
                finally:
                    stop(proc)
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} round(s), "
          f"median per cell; ratio = req/s over stdlib ThreadingHTTPServer\n")
    print(f"| mode | server | req/s | p50 ms | p99 ms | errors | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for mode in modes:
        base = median(r["rps"] for r in results[(mode, "stdlib ThreadingHTTPServer")])
        for name in table:
            runs = results.get((mode, name))
            if not runs:
                continue
            rps = median(r["rps"] for r in runs)
            print(f"| {mode} | {name} | {rps:,.0f} | {median(r['p50'] for r in runs) * 1e3:.2f} "
                  f"| {median(r['p99'] for r in runs) * 1e3:.2f} "
                  f"| {sum(r['errors'] for r in runs)} | {rps / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
