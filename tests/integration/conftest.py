"""Fixtures for integration tests; the machinery is in harness.py."""

from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from harness import PreforkProcess


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

