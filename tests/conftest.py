"""Fixtures for the tests that start real servers (integration, reliability).

The machinery is in tests/integration/harness.py, importable from every
test folder.
"""

import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

from harness import PreforkProcess  # noqa: E402


@pytest.fixture
def prefork_server(tmp_path: Path) -> Iterator:
    """Factory: ``prefork_server("serve", "mod:Handler", "-w", "2")``."""
    started: List[PreforkProcess] = []

    def start(*args: str, env: Optional[dict] = None) -> PreforkProcess:
        proc = PreforkProcess(list(args), tmp_path, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.cleanup()

