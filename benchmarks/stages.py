"""Where the compiled build's instructions go, stage by stage, for one keep-alive request.

Runs sansio.py's plain GET (the real connection, a fake socket, no system
call) under valgrind's callgrind, collecting only inside the compiled entry
point ``HttpConnection._on_readable`` (``--toggle-collect``), so Python's
start-up, the imports and the benchmark's own loop are left out; the counts
are divided by the number of requests.  PYTHONHASHSEED=0: the same count
every run.

    python benchmarks/stages.py                  # this tree's compiled build
    python benchmarks/stages.py --count 5000 --keep /tmp/cg.out  # keep callgrind's files

The method, printed with the table: each mypyc function belongs to the
module its C name starts with (``CPyDef_parser___RequestParser___next_head``:
parser); a module is charged its functions' own (exclusive) instructions
plus everything they call that is not compiled code (mypyc's runtime
helpers, CPython's C API, libc, and the interpreter running whatever Python
they call back: the app, the fake socket's recv and send).  Compiled code
called back from such Python (the app's ``start_response``) would be charged
twice, to its own module and inside its caller's call into Python, so a
second run with ``--separate-callers`` finds, for each such call, the
nearest compiled function up its call chain, and takes the call's cost off
that function's module: the stages add up to the total.  Below the table,
the main compiled functions' inclusive instructions per request, as
``callgrind_annotate --inclusive=yes`` gives them (these overlap: an outer
function includes the inner ones).  Compiled builds only: with the pure
Python sources every instruction is the interpreter's.  Never run as a test.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve()
ENTRY = "CPyPy_connection___HttpConnection____on_readable"
STAGES = {
    "parse": ("parser", "protocol", "grammar"),
    "environ": ("environ", "forwarded"),
    "app + response": ("exchange", "heads", "response"),
    "connection glue": ("connection",),
    "bookkeeping": ("jobs", "scoreboard", "inflight"),
}
MODULE_STAGE = {module: stage for stage, modules in STAGES.items() for module in modules}
STUB = re.compile(r"^0x[0-9a-f]+$")
NAME = re.compile(r"^(?:CPyDef_|CPyPy_)?([a-z_]+?)___")


def module_of(function: str) -> Optional[str]:
    """The compiled module a C function belongs to, or None (not compiled code).
    With --separate-callers a name carries its callers after quotes: the first
    part is the function."""
    found = NAME.match(function.split("'", 1)[0])
    if found and found.group(1) in MODULE_STAGE:
        return found.group(1)
    return None


def stub(function: str) -> bool:
    return STUB.match(function.split("'", 1)[0]) is not None


def caller_module(function: str) -> Optional[str]:
    """The nearest compiled function among a context name's callers: its module."""
    for caller in function.split("'")[1:]:
        if module_of(caller):
            return module_of(caller)
    return None


def parse(path: Path) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int], int]:
    """A callgrind output file (one event, Ir): each function's own cost, each
    call edge's inclusive cost, and the total."""
    names: Dict[str, str] = {}
    own: Dict[str, int] = defaultdict(int)
    calls: Dict[Tuple[str, str], int] = defaultdict(int)
    current = callee = ""
    pending = False
    total = 0

    def name(value: str) -> str:
        found = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not found:
            return value
        if found.group(2) is not None:
            names[found.group(1)] = found.group(2)
        return names[found.group(1)]

    with open(path) as stream:
        for line in stream:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                current = name(line[3:])
            elif line.startswith("cfn="):
                callee = name(line[4:])
            elif line.startswith("calls="):
                pending = True
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                cost = int(fields[1]) if len(fields) > 1 else 0
                if pending:
                    calls[(current, callee)] += cost
                    pending = False
                else:
                    own[current] += cost
    return own, calls, total


def stage_table(own: Dict[str, int], calls: Dict[Tuple[str, str], int], total: int,
                count: int) -> List[str]:
    charged: Dict[str, int] = defaultdict(int)
    for function, cost in own.items():
        module = module_of(function)
        if module:
            charged[module] += cost
    # Calls from one compiled function to another go through PLT stubs, which
    # callgrind names by address: a stub leading to compiled code is compiled code.
    into_compiled = {caller for (caller, callee) in calls if stub(caller) and module_of(callee)}
    twice: Dict[str, int] = defaultdict(int)
    for (caller, callee), cost in calls.items():
        if stub(caller):
            continue
        compiled_callee = module_of(callee) or callee in into_compiled
        if module_of(caller) and not compiled_callee:
            charged[module_of(caller) or ""] += cost
        elif compiled_callee and not module_of(caller) and callee.split("'")[0] != ENTRY:
            # called back from Python: already inside the nearest compiled caller's
            # call into Python, so taken off there
            twice[caller_module(callee) or "?"] += cost
    for module, cost in twice.items():
        if module != "?":
            charged[module] -= cost
    lines = ["| stage | modules | instructions/request | share |", "| --- | --- | ---: | ---: |"]
    for stage, modules in STAGES.items():
        cost = sum(charged[m] for m in modules)
        detail = ", ".join(f"{m} {charged[m] / count:,.0f}" for m in modules if charged[m])
        lines.append(f"| {stage} | {detail or ', '.join(modules) + ': none'} "
                     f"| {cost / count:,.0f} | {cost / total:.1%} |")
    if twice["?"]:
        lines.append(f"| called back from Python, caller not found (counted twice) "
                     f"| | -{twice['?'] / count:,.0f} | -{twice['?'] / total:.1%} |")
    left = total - sum(charged.values()) + twice["?"]
    lines.append(f"| not under compiled code (should be ~0) | | {left / count:,.0f} "
                 f"| {left / total:.1%} |")
    lines.append(f"| total, inside `_on_readable` | | {total / count:,.0f} | 100% |")
    return lines


def inclusive(path: Path, count: int, top: int) -> List[str]:
    """The ``top`` compiled functions by inclusive cost, from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          "--auto=no", str(path)], capture_output=True, text=True,
                         check=True).stdout
    rows: Dict[str, int] = {}
    for line in out.splitlines():
        found = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\S*?:(\S+)", line)
        if found and module_of(found.group(2)) and found.group(2).startswith("CPyDef_"):
            # the summary lists a function twice (file:function, function:file)
            rows.setdefault(found.group(2), int(found.group(1).replace(",", "")))
    lines = ["| stage | function | inclusive instructions/request |", "| --- | --- | ---: |"]
    for cost, function in sorted(((c, f) for f, c in rows.items()),
                                  reverse=True)[:top]:
        stage = MODULE_STAGE[module_of(function) or ""]
        lines.append(f"| {stage} | `{function[len('CPyDef_'):]}` | {cost / count:,.0f} |")
    return lines


def callgrind(args: argparse.Namespace, out: Path, extra: List[str]) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("PREFORK_PURE_PYTHON", None)
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          "--collect-atstart=no", f"--toggle-collect={ENTRY}", *extra,
                          sys.executable, str(HERE.parent / "sansio.py"), "--tree",
                          str(args.tree.resolve()), "--serve", args.case,
                          "--count", str(args.count)], capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(run.stderr[-2000:])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree", type=Path, default=HERE.parent.parent,
                        help="the checkout whose compiled build to measure (default: this one)")
    parser.add_argument("--case", default="GET, keep-alive", help="one of sansio.py's requests")
    parser.add_argument("--count", type=int, default=2000, help="requests (default 2000)")
    parser.add_argument("--top", type=int, default=20, help="functions listed (default 20)")
    parser.add_argument("--keep", type=Path, help="write callgrind's output here")
    args = parser.parse_args(argv)
    out = args.keep or Path(tempfile.mkstemp(suffix=".callgrind")[1])
    plain = out.with_name(out.name + ".plain")
    callgrind(args, out, ["--separate-callers=12"])
    callgrind(args, plain, [])
    own, calls, total = parse(out)
    if not any(module_of(f) for f in own):
        raise SystemExit("no compiled function ran: is this tree's build compiled?")
    print(f"{args.case}: {args.count} requests under callgrind, collected inside {ENTRY}\n")
    print("Method: each compiled function's own instructions plus the inclusive cost of its")
    print("calls into code that is not compiled (mypyc runtime, C API, libc, interpreter),")
    print("charged to the function's module; compiled code called back from Python")
    print("(callgrind --separate-callers) taken off its nearest compiled caller's module.\n")
    print("\n".join(stage_table(own, calls, total, args.count)) + "\n")
    print("Inclusive instructions per request, callgrind_annotate --inclusive=yes "
          "(overlapping):\n")
    print("\n".join(inclusive(plain, args.count, args.top)))
    if not args.keep:
        out.unlink()
    plain.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
