"""A worker's memory after 1,000 and after 100,000 keep-alive requests, per worker kind.

Starts a real ``prefork serve`` with one worker on a free port, for each
kind: the sync worker with apps.py's WSGI hello world, the asyncio worker
with asgi_apps.py's ASGI one (``--loop auto``: uvloop when installed), and
the thread worker with prefork.examples.hello's ``http.server`` handler.
One client connection sends the requests one after the other (keep-alive,
no pipelining, each reply read whole), and after 1,000, 10,000 and all of
them the worker's memory is read from /proc: RSS, and what only that
process holds (Private_Clean + Private_Dirty of smaps_rollup: pages shared
with the master since the fork do not count).  Growth between the two
readings is what a long-lived worker would keep adding.

    python benchmarks/memory.py [--requests 100000] [--tree CHECKOUT]

Linux only.  Never run as a test.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import check_import, free_port, start, stop  # noqa: E402
from profile_paths import GET, exchange  # noqa: E402

KINDS = {
    "sync + WSGI (apps:app)": ["apps:app", "-k", "sync"],
    "asyncio + ASGI (asgi_apps:app)": ["asgi_apps:app", "-k", "asyncio"],
    "thread + handler (HelloHandler)": ["prefork.examples.hello:HelloHandler", "-k", "thread"],
}
READINGS = (1000, 10000, 100000)     # and after the last request: a plateau or a steady climb


def worker_pid(master: int, deadline: float = 20.0) -> int:
    """The master's one worker (its child whose title says so)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            try:
                title = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"worker" in title:
                return int(child)
        time.sleep(0.05)
    raise RuntimeError(f"no worker under master {master} after {deadline} s")


def memory(pid: int) -> Tuple[int, int]:
    """(RSS, private) in KiB, from /proc/PID/smaps_rollup."""
    fields: Dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[name] = int(rest.split()[0])
    return fields["Rss"], fields["Private_Clean"] + fields["Private_Dirty"]


def measure(target: List[str], tree: Path, requests: int, limit: float
            ) -> List[Tuple[int, int, int, float]]:
    """(requests so far, RSS KiB, private KiB, seconds) at each of READINGS below
    ``requests``, and after all of them."""
    port = free_port()
    argv = [sys.executable, "-m", "prefork", "serve", *target, "-w", "1",
            "--log-level", "warning", "-b", f"127.0.0.1:{port}"]
    proc = start(argv, port, env={"PYTHONPATH": f"{tree}:{HERE}"}, cwd=str(HERE))
    readings = []
    try:
        pid = worker_pid(proc.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            done, started = 0, time.monotonic()
            for goal in [n for n in READINGS if n < requests] + [requests]:
                # In steps, so that a slow machine stops at ``limit`` seconds.
                while done < goal and time.monotonic() - started < limit:
                    step = min(goal - done, 1000)
                    exchange(sock, GET, step)
                    done += step
                readings.append((done, *memory(pid), time.monotonic() - started))
        if readings[-1][0] < requests:
            print(f"note: stopped at {readings[-1][0]} requests after {limit:.0f} s",
                  file=sys.stderr)
    finally:
        stop(proc)
    return readings


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--limit", type=float, default=60.0,
                        help="seconds of requests per worker kind at most")
    parser.add_argument("--tree", type=Path, default=HERE.parent,
                        help="measure the prefork in this checkout (default: this one)")
    parser.add_argument("--only", default="", help="run only kinds whose name has this word")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    check_import(f"{tree}:{HERE}", tree / "prefork", str(HERE))
    print(f"prefork from {tree}; one worker; one keep-alive connection, requests one at a time\n")
    print("| worker | requests | RSS MiB | private MiB | req/s so far |")
    print("| --- | ---: | ---: | ---: | ---: |")
    growth = []
    for name, target in KINDS.items():
        if args.only not in name:
            continue
        readings = measure(target, tree, args.requests, args.limit)
        for done, rss, private, seconds in readings:
            print(f"| {name} | {done:,} | {mib(rss)} | {mib(private)} | {done / seconds:,.0f} |")
        (n0, rss0, private0, _), (n1, rss1, private1, _) = readings[0], readings[-1]
        growth.append(f"{name}: {private1 - private0:+,} KiB private, {rss1 - rss0:+,} KiB RSS "
                      f"from {n0:,} to {n1:,} requests")
    print("\n" + "\n".join(growth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
