"""How evenly prefork spreads requests over its workers: one shared socket vs --reuse-port.

By default every worker waits on one shared listening socket with
EPOLLEXCLUSIVE (a connection wakes one waiting worker); with
``--reuse-port`` each worker has a socket of its own and the kernel hashes
connections over them.  For each accept mode, alternating and rotated round
by round, this starts ``prefork serve apps:app -w N`` (default 4 workers),
drives one bounded load, and reads every worker's ``requests`` from the
scoreboard (``prefork status --json``).  Loads: wrk keep-alive (few long
connections), wrk ``Connection: close`` (every request an accept), one
connection at a time as fast as it goes (``wrk -t1 -c1``), a light paced
load (one connection every 5 ms, so that every worker is idle when it
arrives), and UDP echo datagrams from 32 client sockets
(``prefork.examples.echo:UDPEchoHandler``).  Sync workers throughout.

    python benchmarks/distribution.py [--duration 10] [--rounds 1] [--workers 4]

Prints req/s, each worker's share (largest first), max/mean and the
coefficient of variation (stdev/mean) of the per-worker counts.  The loads
are fixed (``--connections`` is not used).  Needs wrk.
Never run as a test.
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median, pstdev
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, parse_args, run_wrk, schedule, start, stop  # noqa: E402

REPO = HERE.parent
MODES = {"shared (EPOLLEXCLUSIVE)": [], "--reuse-port": ["--reuse-port"]}
UDP_CLIENTS = 32
PACE = 0.005
LOADS = {   # name: wrk (threads, connections, Connection: close), "paced" or "udp"
    "keep-alive, wrk -t2 -c64": (2, 64, False),
    "Connection: close, wrk -t2 -c64": (2, 64, True),
    "Connection: close, wrk -t1 -c1": (1, 1, True),
    f"paced: 1 connection per {PACE * 1e3:.0f} ms": "paced",
    f"UDP echo, {UDP_CLIENTS} client sockets": "udp",
}


def worker_requests(control: str) -> Dict[int, int]:
    """Each ready worker's request count, from the scoreboard."""
    try:
        out = subprocess.run([sys.executable, "-m", "prefork", "status", "--json",
                              "--control-socket", control],
                             capture_output=True, text=True, timeout=30).stdout
        workers = json.loads(out)["workers"]
    except (subprocess.TimeoutExpired, ValueError, KeyError):
        return {}
    return {w["pid"]: w["requests"] for w in workers if w["state"] == "ready"}


def wait_ready(control: str, workers: int, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while len(worker_requests(control)) < workers:
        if time.monotonic() > end:
            raise RuntimeError(f"{workers} workers not ready after {deadline} s")
        time.sleep(0.1)


def paced_load(port: int, duration: int) -> Dict[str, float]:
    """Sequential ``Connection: close`` requests, a pause after each."""
    done, begin = 0, time.monotonic()
    while time.monotonic() < begin + duration:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: paced\r\nConnection: close\r\n\r\n")
            while s.recv(4096):
                pass
        done += 1
        time.sleep(PACE)
    return {"rps": done / (time.monotonic() - begin), "errors": 0}


def udp_load(port: int, duration: int, clients: int = UDP_CLIENTS) -> Dict[str, float]:
    """Each client socket (its own source port) keeps one datagram in flight;
    one unanswered for 0.5 s is counted lost and sent again."""
    sel = selectors.DefaultSelector()
    sent: Dict[socket.socket, float] = {}
    for _ in range(clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        s.send(b"ping")
        sent[s] = time.monotonic()
    replies = lost = 0
    begin = time.monotonic()
    end, next_check = begin + duration, begin + 0.1
    while (now := time.monotonic()) < end:
        for key, _ in sel.select(0.1):
            try:
                key.fileobj.recv(64)
            except OSError:
                continue
            replies += 1
            key.fileobj.send(b"ping")
            sent[key.fileobj] = time.monotonic()
        if now >= next_check:
            next_check = now + 0.1
            for s, at in sent.items():
                if now - at > 0.5:
                    lost += 1
                    s.send(b"ping")
                    sent[s] = now
    for s in sent:
        sel.unregister(s)
        s.close()
    return {"rps": replies / (time.monotonic() - begin), "errors": lost}


def run_once(mode: str, load: str, args, scratch: str, run: int) -> Dict[str, object]:
    control = f"{scratch}/control-{run}.sock"
    shape = LOADS[load]
    if shape == "udp":
        port = free_port(socket.SOCK_DGRAM)
        target, bind = "prefork.examples.echo:UDPEchoHandler", f"udp://127.0.0.1:{port}"
        wait = None     # not a TCP port: wait_ready alone says when it serves
    else:
        port = free_port()
        target, bind, wait = "apps:app", f"127.0.0.1:{port}", port
    argv = [sys.executable, "-m", "prefork", "serve", target, "-w", str(args.workers),
            "-k", "sync", "-b", bind, "--control-socket", control,
            "--log-level", "warning"] + MODES[mode]
    proc = start(argv, wait, env={"PYTHONPATH": f"{HERE}:{REPO}"}, cwd=str(HERE))
    try:
        wait_ready(control, args.workers)
        before = worker_requests(control)
        if shape == "udp":
            result = udp_load(port, args.duration)
        elif shape == "paced":
            result = paced_load(port, args.duration)
        else:
            threads, connections, close = shape
            result = run_wrk(port, args.duration, connections, close=close, threads=threads)
        after = worker_requests(control)
    finally:
        stop(proc)
    counts = [after[pid] - before.get(pid, 0) for pid in after]
    return {"rps": result["rps"], "errors": result["errors"], "counts": counts}


def evenness(counts: List[int]) -> Dict[str, object]:
    total = sum(counts) or 1
    average = mean(counts) or 1
    return {"shares": sorted((100 * c / total for c in counts), reverse=True),
            "max/mean": max(counts) / average, "cv": pstdev(counts) / average}


def print_table(results: Dict[tuple, List[dict]], workers: int) -> None:
    print("| load | accept mode | req/s | per-worker share % (largest first) "
          "| max/mean (worst) | CV | errors |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
    for load in LOADS:
        for mode in MODES:
            runs = results.get((load, mode))
            if not runs:
                continue
            even = [evenness(r["counts"]) for r in runs if len(r["counts"]) == workers]
            if not even:
                print(f"| {load} | {mode} | – | workers changed, or status failed | | | |")
                continue
            shares = " / ".join(f"{median(e['shares'][i] for e in even):.0f}"
                                for i in range(workers))
            ratios = [e["max/mean"] for e in even]
            print(f"| {load} | {mode} | {median(r['rps'] for r in runs):,.0f} | {shares} "
                  f"| {median(ratios):.2f} ({max(ratios):.2f}) "
                  f"| {median(e['cv'] for e in even):.2f} | {sum(r['errors'] for r in runs)} |")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, workers=4)
    results: Dict[tuple, List[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="prefork-dist-") as scratch:
        for run, (load, mode) in enumerate(schedule(args.rounds, list(LOADS), list(MODES))):
            results.setdefault((load, mode), []).append(run_once(mode, load, args, scratch, run))
    print(f"{args.workers} sync workers, {args.duration} s per run, {args.rounds} round(s); "
          "req/s and shares are medians over rounds (shares per rank), max/mean "
          "median (worst round), CV = stdev/mean of per-worker requests\n")
    print_table(results, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
