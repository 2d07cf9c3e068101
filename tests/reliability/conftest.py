"""Reliability scenarios: real processes on loopback under load, faults and hostile input.

Each scenario runs briefly by default (the quick form, in CI) and longer
with ``PREFORK_RELIABILITY=long`` (``python tests/reliability/run.py``,
which also writes the figures into RELIABILITY.md).  A scenario records
what it counted with the ``figures`` fixture; the counts are printed at
the end of the run and, when ``PREFORK_RELIABILITY_REPORT`` names a file,
appended to it as JSON lines.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List

import pytest

LONG = os.environ.get("PREFORK_RELIABILITY") == "long"
REPORT = os.environ.get("PREFORK_RELIABILITY_REPORT", "")
_RECORDED: List[dict] = []


def seconds(quick: float, long: float) -> float:
    """A scenario's duration: ``quick`` in CI, ``long`` in the long form."""
    return long if LONG else quick


@pytest.fixture
def figures(request) -> Callable[..., None]:
    """``figures(scenario="...", requests=N, failed=0, ...)``: record one scenario's counts."""
    def record(**counts: object) -> None:
        entry: Dict[str, object] = {"test": request.node.nodeid.split("::", 1)[1],
                                    "form": "long" if LONG else "quick", **counts}
        _RECORDED.append(entry)
        if REPORT:
            with open(REPORT, "a") as f:
                f.write(json.dumps(entry) + "\n")
    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _RECORDED:
        return
    terminalreporter.section("reliability figures")
    for entry in _RECORDED:
        terminalreporter.write_line(json.dumps(entry))
