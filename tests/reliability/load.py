"""Load for the reliability scenarios: wrk, read to the last socket error.

Unlike benchmarks/common.py, every error counts here: a read error on a
keep-alive connection means the server closed it under a request.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Sequence

import pytest


@dataclass
class WrkResult:
    requests: int
    connect: int
    read: int
    write: int
    timeout: int
    non_2xx: int
    rps: float
    p99_ms: float

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    def counts(self) -> dict:
        return {"requests": self.requests, "socket_errors": self.socket_errors,
                "non_2xx": self.non_2xx, "req_per_s": round(self.rps),
                "p99_ms": round(self.p99_ms, 1)}


def need_wrk() -> str:
    path = shutil.which("wrk")
    if not path:
        pytest.skip("wrk is not installed (apt-get install wrk); .ci/run installs it")
    return path


def start_wrk(address: tuple, duration: float, connections: int = 64, path: str = "/",
              headers: Sequence[str] = ()) -> subprocess.Popen:
    """wrk in the background: ``finish_wrk(proc)`` once the scenario is done."""
    argv = [need_wrk(), "-t2", f"-c{connections}", f"-d{max(1, round(duration))}s",
            "--latency", "--timeout", "5s"]
    for header in headers:
        argv += ["-H", header]
    return subprocess.Popen(argv + [f"http://{address[0]}:{address[1]}{path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_wrk(proc: subprocess.Popen, timeout: float = 60) -> WrkResult:
    out = proc.communicate(timeout=timeout)[0]
    return parse_wrk(out)


def run_wrk(address: tuple, duration: float, **kw) -> WrkResult:
    return finish_wrk(start_wrk(address, duration, **kw), timeout=duration + 60)


def parse_wrk(out: str) -> WrkResult:
    done = re.search(r"(\d+) requests in", out)
    assert done, f"wrk said:\n{out}"
    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out)
    if found:
        errors = dict(zip(errors, map(int, found.groups())))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return WrkResult(int(done.group(1)), errors["connect"], errors["read"], errors["write"],
                     errors["timeout"], int(non_2xx.group(1)) if non_2xx else 0,
                     float(rps.group(1)) if rps else 0.0,
                     float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"))


def lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]
