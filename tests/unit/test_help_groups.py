"""Settings are grouped by topic: every field has one, `--help` and etc/prefork.toml follow it."""

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from prefork import cli, config, config_doc

# The flag topics, in the documented order (Application holds only the TARGET positional).
FLAG_GROUPS = [g for g in config.GROUPS if g != "Application"]


def _flag(name):
    return "--" + name.replace("_", "-")


def _sections(help_text):
    """{heading: [first long flag of each option under it]}, in the order shown."""
    sections = {}
    current = None
    for line in help_text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif current is not None and line.startswith("  -"):
            longs = [w.rstrip(",") for w in line.split() if w.startswith("--")]
            if longs:
                current.append(longs[0])
    return sections


def _subcommand_help(command):
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command].format_help()


def test_every_field_has_a_known_group():
    for f in dataclasses.fields(config.Config):
        assert f.metadata.get("group") in config.GROUPS, \
            f"setting {f.name} has no group: give setting(..., group=...) one of config.GROUPS"


def test_setting_refuses_a_missing_or_unknown_group():
    with pytest.raises(TypeError):
        config.setting(0, "no group")
    with pytest.raises(ValueError, match="Nowhere"):
        config.setting(0, "unknown group", group="Nowhere")


def test_the_documented_groups_are_suggested_ones_in_order():
    assert config.GROUPS == ("Application", "Binding", "Workers", "Timeouts", "HTTP",
                             "TLS and proxies", "Logging", "Daemon and control", "Hooks")


@pytest.mark.parametrize("command", ["serve", "check"])
def test_help_shows_each_option_under_its_group_in_order(command):
    sections = _sections(_subcommand_help(command))
    assert list(sections) == ["positional arguments", "options"] + FLAG_GROUPS
    assert sections["options"] == ["--help", "--config"]
    for group in FLAG_GROUPS:
        expected = [_flag(n) for n, f in config.FIELDS.items()
                    if f.metadata["group"] == group and n != "target"]
        assert expected, f"group {group} has no settings"
        assert sections[group] == expected, group


@pytest.mark.parametrize("group, flag", [
    ("Binding", "--bind"), ("Binding", "--backlog"), ("Workers", "--workers"),
    ("Workers", "--max-requests"), ("Timeouts", "--graceful-timeout"),
    ("Timeouts", "--keepalive"), ("HTTP", "--max-body-size"), ("HTTP", "--ws-max-size"),
    ("TLS and proxies", "--certfile"), ("TLS and proxies", "--forwarded-allow-ips"),
    ("Logging", "--access-log"), ("Daemon and control", "--pidfile"),
    ("Daemon and control", "--metrics-bind"), ("Hooks", "--on-starting"),
])
def test_well_known_options_sit_under_their_topic(group, flag):
    assert flag in _sections(_subcommand_help("serve"))[group]


def test_example_file_has_a_heading_per_group_over_its_keys():
    lines = config_doc.render().splitlines()
    headings = [i for i, line in enumerate(lines) if line[2:] in config.GROUPS
                and lines[i - 1].startswith("# ===")]
    assert [lines[i][2:] for i in headings] == list(config.GROUPS)
    bounds = dict(zip(config.GROUPS, zip(headings, headings[1:] + [len(lines)])))
    for name, f in config.FIELDS.items():
        start, end = bounds[f.metadata["group"]]
        assert any(line.lstrip("# ").startswith(f"{name} = ") for line in lines[start:end]), name


def test_prefork_serve_help_command_shows_the_groups():
    script = Path(sys.executable).with_name("prefork")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "prefork"]
    done = subprocess.run(command + ["serve", "--help"], capture_output=True, text=True,
                          timeout=30, env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\nTimeouts:\n" in out and "\nTLS and proxies:\n" in out
    assert out.index("\nBinding:\n") < out.index("\nWorkers:\n") < out.index("\nHooks:\n")
    timeouts = out.index("\nTimeouts:\n")
    assert timeouts < out.index("\n  --graceful-timeout S") < out.index("\nHTTP:\n")
