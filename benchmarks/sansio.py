"""In-process cost of one keep-alive WSGI request with no system call at all.

inprocess.py measures the real connection over a socketpair, so two
send/recv pairs and a select are part of every figure.  Here the accepted
connection's socket is swapped for a fake one whose ``recv`` hands back the
request and whose ``send`` takes the whole reply, and the connection's
``_on_readable`` is called in a loop: what is left is parse, environ, app,
response bytes and the adapter around them, the part a compiled build
(mypyc) can make faster.

    python benchmarks/sansio.py                      # this tree
    python benchmarks/sansio.py --base-tree ../base  # and a base commit's tree
    python benchmarks/sansio.py --profile            # where the time goes, per function
    python benchmarks/sansio.py --base-tree ../base --pure-too --instructions

``--pure-too`` adds this tree once more with ``PREFORK_PURE_PYTHON=1`` (its
plain-Python sources, compiled modules or not); ``--instructions`` adds the
user-space instructions per request under valgrind's callgrind for each
entry: deterministic (PYTHONHASHSEED=0), the difference between 1,200 and
200 requests, so start-up and import are left out.  ``stages.py`` splits the
compiled build's count by stage.

It prints which build of the HTTP layer it measured: ``prefork.compiled``'s
``describe()`` when that module exists, else "pure Python", and whether
``prefork.servers.http.parser`` was loaded from an extension (``.so``).
The calls column counts what sys.setprofile sees: calls made inside
mypyc-compiled modules are native and unseen, so it compares two builds of
the same kind only.  ``--profile`` runs cProfile over the requests and
prints the top functions by own time; cProfile's hooks inflate every call,
so read the shares, not the absolute microseconds.  Never run as a test.
"""

from __future__ import annotations

import cProfile
import importlib
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from inprocess import CASES, connect, tree_options  # noqa: E402


class FakeSocket:
    """Stands for the client socket: every recv is one whole request, every send
    is taken whole (and counted, so a request left unanswered shows)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.sends = 0
        self.first = b""

    def recv(self, size: int) -> bytes:
        return self.request

    def send(self, data: Any) -> int:
        if not self.sends:
            self.first = bytes(data)
        self.sends += 1
        return len(data)

    def fileno(self) -> int:      # nothing should ask; -1 makes a stray select fail loudly
        return -1


def implementation() -> str:
    """Which build of the HTTP layer is imported: what prefork.compiled says of
    itself (a compiled build provides it), and where the parser came from."""
    package = Path(str(importlib.import_module("prefork").__file__)).parent
    parser = importlib.import_module("prefork.servers.http.parser")
    origin = "compiled (.so)" if str(parser.__file__).endswith(".so") else "from .py"
    build = "pure Python"
    try:
        compiled = importlib.import_module("prefork.compiled")
    except ImportError:
        compiled = None
    # An editable install can find prefork.compiled in another checkout than the
    # one measured: only this tree's own counts.
    if compiled is not None and Path(str(compiled.__file__)).parent == package:
        describe = getattr(compiled, "describe", None)
        if callable(describe):
            build = describe()
    return f"{build}; parser {origin}"


def prepared(request: bytes) -> Tuple[Callable[[], None], FakeSocket, Callable[[], None]]:
    """A connection past its accept, its socket replaced: (one request, the fake
    socket, a closer)."""
    loop, client, close = connect()
    (connection,) = loop.connections
    fake = FakeSocket(request)
    # The real socket stays registered in the loop's selector; the fake one is
    # never registered, since a keep-alive connection keeps wanting to read.
    real, connection.sock = connection.sock, fake

    def done() -> None:
        connection.sock = real
        close()
    return connection._on_readable, fake, done


def measure(request: bytes, rounds: int, count: int) -> Tuple[float, float]:
    """Best-of-rounds microseconds per request, and calls (Python and C) per request."""
    one, fake, done = prepared(request)
    best = float("inf")
    for n in range(rounds + 1):
        before = fake.sends
        start = time.perf_counter()
        for _ in range(count):
            one()
        elapsed = time.perf_counter() - start
        if fake.sends - before != count:
            raise AssertionError(f"{fake.sends - before} replies to {count} requests")
        if n:                       # the first round warms the caches up
            best = min(best, elapsed / count * 1e6)
    assert fake.first.startswith(b"HTTP/1.1 200"), fake.first
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" or event == "c_call":
            calls += 1

    sys.setprofile(profile)
    for _ in range(1000):
        one()
    sys.setprofile(None)
    done()
    return best, calls / 1000


def profile_table(request: bytes, count: int, top: int = 25) -> List[str]:
    """The ``top`` functions by own time over ``count`` requests, in Markdown."""
    one, fake, done = prepared(request)
    for _ in range(1000):           # warm up outside the profile
        one()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        one()
    profiler.disable()
    done()
    stats = pstats.Stats(profiler).stats      # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    lines = ["| function | calls/request | own us/request | own % | with callees us/request |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for (path, line, name), (_, calls, own, cumulative, _) in rows:
        where = name if path == "~" else f"{name} ({short(path)}:{line})"
        lines.append(f"| `{where}` | {calls / count:.2f} | {own / count * 1e6:.2f} "
                     f"| {own / total:.1%} | {cumulative / count * 1e6:.2f} |")
    lines.append(f"| all functions | | {total / count * 1e6:.2f} | 100% | |")
    return lines


def short(path: str) -> str:
    """A file's path from the package or benchmark directory on."""
    parts = Path(path).parts
    for anchor in ("prefork", "benchmarks"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) - 1:])
    return Path(path).name


def serve_only(request: bytes, count: int) -> None:
    """``count`` requests and nothing else: what --instructions and stages.py count."""
    one, fake, done = prepared(request)
    for _ in range(count):
        one()
    if fake.sends != count or not fake.first.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"{fake.sends} replies to {count} requests: {fake.first[:40]!r}")
    done()


def serve_command(tree: Path, label: str, count: int) -> List[str]:
    return [sys.executable, str(HERE), "--tree", str(tree), "--serve", label,
            "--count", str(count)]


def instructions(tree: Path, label: str, env: Dict[str, str]) -> Optional[int]:
    """User-space instructions per request under callgrind, from the difference
    between 1200 and 200 requests (the hash seed fixed, so the count is exact)."""
    totals = []
    for count in (200, 1200):
        run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                              *serve_command(tree, label, count)], capture_output=True,
                             text=True, env={**os.environ, **env, "PYTHONHASHSEED": "0"})
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode or not found:
            print(f"valgrind failed for {label}: {run.stderr[-400:]}", file=sys.stderr)
            return None
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // 1000


def run_here(rounds: int, count: int) -> Dict[str, Any]:
    results: Dict[str, Any] = {label: measure(request, rounds, count)
                               for label, request in CASES.items()}
    results["implementation"] = implementation()
    results["prefork"] = importlib.import_module("prefork").__file__
    return results


def run_tree(tree: Path, rounds: int, count: int, env: Dict[str, str]) -> Dict[str, Any]:
    """The measurement in a fresh process that imports prefork from ``tree``."""
    out = subprocess.run([sys.executable, str(HERE), "--tree", str(tree), "--json",
                          "--rounds", str(rounds), "--count", str(count)],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, **env}).stdout
    result = json.loads(out)
    if tree not in Path(result["prefork"]).resolve().parents:
        raise SystemExit(f"{tree}: prefork imported from {result['prefork']}")
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = tree_options(__doc__, "measure the prefork in this checkout (default: this one)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile COUNT requests of each case; print the top 25 functions")
    parser.add_argument("--pure-too", action="store_true",
                        help="also this tree with PREFORK_PURE_PYTHON=1 (its sources)")
    args = parser.parse_args(argv)
    # The tree measured comes first: neither the editable install nor a compiled
    # build elsewhere may stand in for it (a mypyc build's shared helper module
    # sits at the tree's top level).
    sys.path.insert(0, str((args.tree or HERE.parent.parent).resolve()))
    if args.serve:
        serve_only(CASES[args.serve], args.count)
        return 0
    if args.json:
        print(json.dumps(run_here(args.rounds, args.count)))
        return 0
    if args.profile:
        print(f"implementation: {implementation()}\n")
        for label, request in CASES.items():
            print(f"### {label}: cProfile over {args.count} requests\n")
            print("\n".join(profile_table(request, args.count)) + "\n")
        return 0
    here = (args.tree or HERE.parent.parent).resolve()
    # Each entry: a tree and what its processes get in their environment.
    trees: Dict[str, Tuple[Path, Dict[str, str]]] = {"this tree": (here, {})}
    if args.pure_too:
        trees["this tree (pure)"] = (here, {"PREFORK_PURE_PYTHON": "1"})
    if args.base_tree is not None:
        trees = {"base": (args.base_tree.resolve(), {}), **trees}
    results: Dict[str, List[dict]] = {name: [] for name in trees}
    for _ in range(args.processes):
        for name, (tree, env) in trees.items():
            results[name].append(run_tree(tree, args.rounds, args.count, env))
    for name in trees:
        print(f"{name}: {results[name][0]['implementation']}")
    print(f"\n{args.processes} processes per tree, each the best of {args.rounds} rounds "
          f"of {args.count} requests\n")
    counted = args.instructions and shutil.which("valgrind") is not None
    print("| request | tree | best us/request | median us/request | calls/request |"
          + (" instructions/request |" if counted else ""))
    print("| --- | --- | ---: | ---: | ---: |" + (" ---: |" if counted else ""))
    for label in CASES:
        for name, (tree, env) in trees.items():
            values = [r[label][0] for r in results[name]]
            calls = results[name][0][label][1]
            row = (f"| {label} | {name} | {min(values):.2f} | {statistics.median(values):.2f} "
                   f"| {calls:.0f} |")
            if counted:
                row += f" {instructions(tree, label, env) or '-'} |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
