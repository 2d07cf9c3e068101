"""What every benchmark here shares: start a server, wait for its port, run wrk, print a table.

Benchmarks run the peers side by side in one run, alternating round by
round, and print ratios: absolute numbers drift on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from statistics import median
from typing import Dict, List, Optional, Sequence, Tuple

Result = Dict[str, float]


def parse_args(description: str, argv: Optional[List[str]],
               workers: int = 2) -> argparse.Namespace:
    """The options every load benchmark takes; exits when wrk is missing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=workers)
    parser.add_argument("--only", default="",
                        help="comma-separated words; run only servers whose name has one")
    parser.add_argument("--modes", default="",
                        help="comma-separated words; run only modes whose name has one")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    return args


def chosen(names: Sequence[str], words: str) -> List[str]:
    """The names that contain one of the comma-separated ``words`` (all when empty)."""
    wanted = [w.strip() for w in words.split(",") if w.strip()]
    return [n for n in names if not wanted or any(w in n for w in wanted)]


def schedule(rounds: int, modes: Sequence[str], names: Sequence[str]):
    """(mode, server) pairs, round after round, the server order rotated each round
    so that no server always runs first or last."""
    for round_number in range(rounds):
        shift = round_number % len(names)
        order = list(names[shift:]) + list(names[:shift])
        for mode in modes:
            for name in order:
                yield mode, name


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {deadline} s")


def start(argv: Sequence[str], port: Optional[int], env: Optional[dict] = None,
          cwd: Optional[str] = None) -> subprocess.Popen:
    """Start a server in its own session (so its children can be killed with it);
    wait for a TCP port unless ``port`` is None."""
    proc = subprocess.Popen(list(argv), env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if port is not None:
            wait_port(port)
    except RuntimeError:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # forked children share the session
    except ProcessLookupError:
        pass
    proc.wait(5)


def _seconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)?", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit or "s"]


def connection_spread(port: int, processes: int) -> List[int]:
    """Established connections to ``port`` per server process, largest first
    (from ``ss``), padded with zeros up to ``processes``; [] without ``ss``."""
    try:
        out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    counts = sorted(Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)
    return counts + [0] * (processes - len(counts))


def run_wrk(port: int, duration: int, connections: int, close: bool = False,
            path: str = "/", threads: int = 2, spread_over: int = 0) -> Result:
    """One wrk run; with ``spread_over`` (the worker count), also how wrk's
    connections were spread over the server's processes halfway through."""
    spread: List[int] = []
    sampler = None
    if spread_over:
        sampler = threading.Timer(duration / 2,
                                  lambda: spread.extend(connection_spread(port, spread_over)))
        sampler.start()
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
            "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + [f"http://127.0.0.1:{port}{path}"], capture_output=True,
                         text=True, timeout=duration + 30).stdout
    if sampler is not None:
        sampler.join()
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
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0), "spread": spread}


def open_idle_connections(port: int, count: int) -> List[socket.socket]:
    """Keep-alive clients that connected, sent one request, and then just sit there."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        s.recv(65536)
    return socks


def print_table(results: Dict[Tuple[str, str], List[Result]], modes: Sequence[str],
                servers: Sequence[str], baseline: str) -> None:
    """The median of each cell's rounds; with spreads, each round's connections per
    worker and p99 (a p99 depends on how the connections were spread)."""
    spreads = any(r.get("spread") for runs in results.values() for r in runs)
    print("| mode | server | req/s | p50 ms | p99 ms | errors | ratio |"
          + (" each round: connections per worker, req/s, p99 ms |" if spreads else ""))
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" --- |" if spreads else ""))
    for mode in modes:
        # A mode the baseline was not run in is compared with its first mode.
        base_runs = results.get((mode, baseline)) or results.get((modes[0], baseline))
        base = median(r["rps"] for r in base_runs) if base_runs else float("nan")
        for name in servers:
            runs = results.get((mode, name))
            if not runs:
                continue
            rps = median(r["rps"] for r in runs)
            print(f"| {mode} | {name} | {rps:,.0f} | {median(r['p50'] for r in runs) * 1e3:.2f} "
                  f"| {median(r['p99'] for r in runs) * 1e3:.2f} "
                  f"| {sum(r['errors'] for r in runs)} | {rps / base if base else 0:.2f} |"
                  + (f" {_spreads(runs)} |" if spreads else ""))


def _spreads(runs: List[Result]) -> str:
    """Each round's spread, req/s and p99; "none open" where the server closes
    every connection after its response (no spread to see)."""
    return "; ".join(f"{_spread(r.get('spread', []))} {r['rps'] / 1e3:.1f}k {r['p99'] * 1e3:.1f}"
                     for r in runs)


def _spread(counts: List[int]) -> str:
    if not counts:
        return "?"
    return "/".join(map(str, counts)) if any(counts) else "none open"
