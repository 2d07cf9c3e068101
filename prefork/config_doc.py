"""Render ``etc/prefork.toml``: every setting, its help text and its default,
grouped by topic as ``prefork serve --help`` is.

    python -m prefork.config_doc > etc/prefork.toml

A unit test compares the file with this output, so the example can never
drift from :class:`prefork.config.Config`.
"""

from __future__ import annotations

import textwrap

from .config import FIELDS, GROUPS

HEADER = """\
# prefork.toml: every setting with its default.
# Every key is also a command-line flag (max_requests -> --max-requests); the flag wins.
# Use: prefork serve -c etc/prefork.toml  (HUP re-reads this file).
# Grouped by topic, in the order of `prefork serve --help`.
"""
# Defaults that depend on the machine are shown as a comment, not a value.
MACHINE_DEPENDENT = {"workers": "# workers = 2   # default: the number of CPUs",
                     "target": '# target = "myapp.wsgi:application"'}


def _value(default: object) -> str:
    if isinstance(default, tuple):
        return "[" + ", ".join(f'"{v}"' for v in default) + "]"
    if isinstance(default, str):
        return f'"{default}"'
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def render() -> str:
    out = [HEADER]
    for group in GROUPS:
        out += ["# " + "=" * 76, f"# {group}", "# " + "=" * 76, ""]
        for name, field in FIELDS.items():
            if field.metadata["group"] != group:
                continue
            out += ["# " + line for line in textwrap.wrap(field.metadata["help"], 76)]
            out.append(MACHINE_DEPENDENT.get(name) or f"{name} = {_value(field.default)}")
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
