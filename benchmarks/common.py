"""What every benchmark here shares: start a server, wait for its port, run wrk, print a table.

Benchmarks run the peers side by side in one run, alternating round by
round, and print ratios: absolute numbers drift on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

Result = Dict[str, float]
REPO = Path(__file__).resolve().parent.parent


def parse_args(description: str, argv: Optional[List[str]],
               workers: int = 2, base: bool = False, wrk: bool = True,
               extra: Optional[Callable[[argparse.ArgumentParser], None]] = None
               ) -> argparse.Namespace:
    """The options every load benchmark takes (``--base`` where the script
    supports it, and what ``extra`` adds to the parser); exits when wrk is
    missing, unless the script brings its own client (``wrk=False``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=workers)
    parser.add_argument("--only", default="",
                        help="comma-separated words; run only servers whose name has one "
                             "(and none of the words written -word: --only=-gunicorn)")
    parser.add_argument("--modes", default="",
                        help="comma-separated words; run only modes whose name has one "
                             "(and none of the words written -word: --modes=-idle)")
    if base:
        parser.add_argument("--base", metavar="REV", default="",
                            help="also run prefork as of this git revision, interleaved "
                                 "with the working tree's, and compare the two")
        parser.add_argument("--current", metavar="REV", default="",
                            help="with --base: measure this revision instead of the "
                                 "working tree (which others may be editing)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if base and args.current and not args.base:
        parser.error("--current needs --base")
    if wrk and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    return args


def chosen(names: Sequence[str], words: str) -> List[str]:
    """The names that contain one of the comma-separated ``words`` (all when none)
    and none of the words written with a leading "-": "keep-alive" is part of the
    idle mode's name too, so "keep-alive,-idle" is how to leave that one out."""
    words_ = [w.strip() for w in words.split(",") if w.strip()]
    wanted = [w for w in words_ if not w.startswith("-")]
    unwanted = [w[1:] for w in words_ if w.startswith("-")]
    return [n for n in names if (not wanted or any(w in n for w in wanted))
            and not any(w in n for w in unwanted)]


def schedule(rounds: int, modes: Sequence[str], names: Sequence[str]):
    """(mode, server) pairs, round after round, the server order rotated each round
    so that no server always runs first or last."""
    for round_number in range(rounds):
        shift = round_number % len(names)
        order = list(names[shift:]) + list(names[:shift])
        for mode in modes:
            for name in order:
                yield mode, name


PEERS = Path(__file__).resolve().parent / ".peers"


def peer_python(installs: Sequence[Sequence[str]]) -> Path:
    """The peers' interpreter (benchmarks/.peers), installing what is missing, best
    effort: each item is pip's arguments for one peer, its last word the module."""
    python = PEERS / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    for args in installs:
        if not importable(python, args[-1]):
            subprocess.run(pip + list(args), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return python


def importable(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"],
                          stderr=subprocess.DEVNULL).returncode == 0


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


def started_rounds(table: Dict[str, List[str]], modes: Sequence[str], names: Sequence[str],
                   rounds: int, env: dict, cwd: str, left_out: set):
    """The schedule's (mode, server, port), each server started on a free port for its
    turn ("{port}" in its command line) and stopped after it.  A server that does
    not start is noted and added to ``left_out``, as the caller adds one that fails
    its own checks; servers in ``left_out`` are skipped from then on."""
    for mode, name in schedule(rounds, modes, names):
        if name in left_out:
            continue
        port = free_port()
        try:
            proc = start([a.format(port=port) for a in table[name]], port, env=env, cwd=cwd)
        except RuntimeError as exc:     # e.g. a build of prefork without that worker
            print(f"note: {name} did not start ({exc}); left out", file=sys.stderr)
            left_out.add(name)
            continue
        try:
            yield mode, name, port
        finally:
            stop(proc)


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


def sample_spread(port: int, spread_over: int, duration: float):
    """(a list, its timer): halfway through a run, the list gets how the server's open
    connections were spread over its ``spread_over`` processes (0: not sampled)."""
    spread: List[int] = []
    sampler = None
    if spread_over:
        sampler = threading.Timer(duration / 2,
                                  lambda: spread.extend(connection_spread(port, spread_over)))
        sampler.start()
    return spread, sampler


def run_wrk(port: int, duration: int, connections: int, close: bool = False,
            path: str = "/", threads: int = 2, spread_over: int = 0,
            scheme: str = "http") -> Result:
    """One wrk run; with ``spread_over`` (the worker count), also how wrk's
    connections were spread over the server's processes halfway through;
    ``scheme`` "https" for a TLS server."""
    spread, sampler = sample_spread(port, spread_over, duration)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
            "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + [f"{scheme}://127.0.0.1:{port}{path}"], capture_output=True,
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
                servers: Sequence[str], baseline: str, unit: str = "req/s") -> None:
    """The median of each cell's rounds; with spreads, each round's connections per
    worker and p99 (a p99 depends on how the connections were spread).  ``unit``
    names what the "rps" figures count."""
    spreads = any(r.get("spread") for runs in results.values() for r in runs)
    print(f"| mode | server | {unit} | p50 ms | p99 ms | errors | ratio |"
          + (f" each round: connections per worker, {unit}, p99 ms |" if spreads else ""))
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
                  f"| {sum(r['errors'] for r in runs)} | {_ratio(rps, base)} |"
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


def _ratio(value: float, base: float) -> str:
    # "-" rather than "nan" when the baseline was left out (--only) or failed.
    return f"{value / base:.2f}" if base and base == base else "-"


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Tuple[Path, str]]:
    """A detached checkout of ``rev`` in a temporary directory, and its short hash;
    removed on the way out, Ctrl-C and errors included.  A worktree rather than
    ``git stash`` or ``checkout``: the working tree is never touched."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--short",
                                 f"{rev}^{{commit}}"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except subprocess.CalledProcessError:
        raise SystemExit(f"--base {rev}: not a commit of {REPO}") from None
    tmp = tempfile.mkdtemp(prefix="prefork-base-")
    tree = Path(tmp) / "tree"
    # SIGTERM would end the interpreter without running the cleanup below.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                        str(tree), commit], check=True)
        yield tree, commit
    finally:
        # --force: the runs leave __pycache__ directories in it.
        removed = subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                  str(tree)], capture_output=True).returncode == 0
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        if not removed:
            print(f"note: could not unregister the worktree {tree}; `git worktree prune` will",
                  file=sys.stderr)


def describe_head() -> str:
    """HEAD's short hash, and whether prefork/ differs from it (uncommitted work)."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "--", "prefork"],
                           capture_output=True, text=True).stdout.strip()
    return f"HEAD {head}" + (" with uncommitted changes in prefork/" if dirty else "")


def check_import(pythonpath: str, expected: Path, cwd: str) -> None:
    """Exit unless ``python -m prefork`` with this PYTHONPATH imports the package
    from ``expected``: an editable install of prefork in the virtualenv must not
    win over the tree being measured."""
    out = subprocess.run([sys.executable, "-c", "import prefork; print(prefork.__file__)"],
                         env={**os.environ, "PYTHONPATH": pythonpath}, cwd=cwd,
                         capture_output=True, text=True)
    where = Path(out.stdout.strip() or "?").resolve()
    if out.returncode or expected.resolve() not in where.parents:
        raise SystemExit(f"prefork imports from {where}, not from {expected}: "
                         f"{out.stderr.strip()[-500:]}")


def print_comparison(results: Dict[Tuple[str, str], List[Result]], modes: Sequence[str],
                     pairs: Sequence[Tuple[str, str]]) -> None:
    """Per mode and (current, base) pair: each one's median req/s with its rounds'
    min-max and width (max-min over the median), the ratio of the medians, and each
    round's ratio (the two ran a few seconds apart in that round).  A ratio is
    within noise when it lies inside what the rounds' widths and per-round ratios
    span."""
    print("| mode | server | req/s | rounds min-max | base req/s | base rounds min-max "
          "| current/base | each round's ratio |")
    print("| --- | --- | ---: | --- | ---: | --- | ---: | --- |")
    for mode in modes:
        for current, base in pairs:
            now, then = results.get((mode, current)), results.get((mode, base))
            if not now or not then:
                continue
            each = ", ".join(_ratio(a["rps"], b["rps"]) for a, b in zip(now, then))
            print(f"| {mode} | {current} | {median(r['rps'] for r in now):,.0f} | {_range(now)} "
                  f"| {median(r['rps'] for r in then):,.0f} | {_range(then)} "
                  f"| {_ratio(median(r['rps'] for r in now), median(r['rps'] for r in then))} "
                  f"| {each} |")


def _range(runs: List[Result]) -> str:
    low, high, mid = (min(r["rps"] for r in runs), max(r["rps"] for r in runs),
                      median(r["rps"] for r in runs))
    width = f" ({(high - low) / mid:.0%})" if mid else ""
    return f"{low / 1e3:.1f}k-{high / 1e3:.1f}k{width}"
