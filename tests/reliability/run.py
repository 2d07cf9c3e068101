"""The long form of the reliability scenarios, and the figures in RELIABILITY.md.

    python tests/reliability/run.py [--quick] [pytest arguments]

Runs tests/reliability with ``PREFORK_RELIABILITY=long`` (each scenario
for longer, under more load), then rewrites the figures table of
RELIABILITY.md, between its two markers, from the counts the scenarios
recorded.  ``--quick`` runs the CI form instead (and says so in the table).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "RELIABILITY.md"
BEGIN, END = "<!-- figures: begin -->", "<!-- figures: end -->"


def table(entries: List[dict], form: str, status: int) -> str:
    rows = [f"Last run: {datetime.date.today()}, {form} form "
            f"(`python tests/reliability/run.py{' --quick' if form == 'quick' else ''}`), "
            f"pytest exit status {status}.", "",
            "| scenario | counts |", "| --- | --- |"]
    for entry in entries:
        counts = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("test", "form"))
        rows.append(f"| `{entry['test']}` | {counts} |")
    return "\n".join(rows)


def main(argv: List[str]) -> int:
    quick = "--quick" in argv
    args = [a for a in argv if a != "--quick"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "figures.jsonl"
        env = dict(os.environ, PREFORK_RELIABILITY_REPORT=str(report),
                   PREFORK_RELIABILITY="quick" if quick else "long")
        status = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                  str(REPO / "tests" / "reliability"), *args],
                                 cwd=str(REPO), env=env)
        entries = [json.loads(line) for line in report.read_text().splitlines()] \
            if report.exists() else []
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{table(entries, 'quick' if quick else 'long', status)}\n"
                   f"{END}{tail}")
    print(f"figures of {len(entries)} scenario run(s) written to {DOC}")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
