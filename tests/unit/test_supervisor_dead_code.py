"""No dead code in the master: every function, class and method in prefork/supervisor is
named somewhere in the package besides its own definition.

A crude count of the name as a word, in the package's source (tests do not
count: code only a test calls is still dead in production).  It caught
``upgrade.listener_socket``, which nothing called.
"""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "prefork"


def definitions(path: Path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            yield node.name
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef) and not member.name.startswith("__"):
                    yield member.name


def test_every_supervisor_definition_is_used():
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    unused = [f"{path.name}: {name}" for path in sorted(PACKAGE.glob("supervisor/*.py"))
              for name in definitions(path)
              if len(re.findall(rf"\b{re.escape(name)}\b", source)) < 2]
    assert not unused, "defined, never named elsewhere:\n" + "\n".join(unused)
