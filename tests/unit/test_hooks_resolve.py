"""Operator hooks without a fork: resolving paths, config errors, calls that raise.

The hook functions live in tests/apps/hookmods.py, the module the integration
tests give the real server; each appends a JSON line to $PREFORK_TEST_HOOKS.
"""

import dataclasses
import logging
import os
import re
import sys
import uuid
from pathlib import Path

import pytest

from prefork import config
from prefork.config import Config
from prefork.errors import EXIT_CONFIG, ConfigError
from prefork.hooks import NAMES, NO_HOOKS, Hooks, WorkerInfo, resolve

APPS = Path(__file__).resolve().parents[1] / "apps"


@pytest.fixture
def hookmods(monkeypatch, tmp_path):
    """tests/apps importable, records going to a fresh file; returns (module, records())."""
    monkeypatch.syspath_prepend(str(APPS))
    import hookmods as module
    path = tmp_path / "hooks.jsonl"
    monkeypatch.setenv(module.HOOKS_ENV, str(path))
    return module, lambda: module.read(str(path))


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self):
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def prefork_log():
    """What the 'prefork' logger emits (attached directly: it may not propagate)."""
    logger = logging.getLogger("prefork")
    handler = Captured()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def config_error(function, *args):
    with pytest.raises(ConfigError) as info:
        function(*args)
    assert info.value.status == EXIT_CONFIG == 2
    return str(info.value)


# -- resolving paths -----------------------------------------------------------

def test_the_seven_hooks_are_settings():
    assert NAMES == ("on_starting", "when_ready", "pre_fork", "post_fork", "worker_exit",
                     "on_reload", "on_exit")
    for name in NAMES:
        assert getattr(Config(), name) == ""


@pytest.mark.parametrize("path", ["hookmods:on_starting", "hookmods.on_starting"])
def test_resolves_colon_and_dot_forms(hookmods, path):
    module, _ = hookmods
    assert resolve("on_starting", path) is module.on_starting


def test_resolves_a_function_in_a_package_module():
    assert resolve("on_exit", "os.path:join") is os.path.join
    assert resolve("on_exit", "os.path.join") is os.path.join


def test_hooks_resolves_every_configured_path(hookmods):
    module, _ = hookmods
    hooks = Hooks(Config(**{name: f"hookmods:{name}" for name in NAMES}))
    assert hooks
    assert hooks._calls == {name: getattr(module, name) for name in NAMES}


def test_missing_module_is_a_config_error_naming_key_and_module():
    name = f"prefork_no_such_{uuid.uuid4().hex[:8]}"
    message = config_error(Hooks, Config(post_fork=f"{name}:f"))
    assert "'post_fork'" in message
    assert name in message and "ModuleNotFoundError" in message


def test_module_that_fails_to_import_is_a_config_error(hookmods):
    # brokenapp raises RuntimeError at import: not only ImportError counts.
    sys.modules.pop("brokenapp", None)
    message = config_error(Hooks, Config(on_reload="brokenapp:app"))
    assert "'on_reload'" in message and "brokenapp" in message
    assert "RuntimeError" in message
    # The traceback names the file and line that failed, not only the module.
    assert re.search(r'File ".*brokenapp\.py", line \d+', message), message


def test_a_hook_module_with_a_syntax_error_names_its_file_and_line(tmp_path, monkeypatch):
    name = f"prefork_bad_hook_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def on_exit(config):\n    return (\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = config_error(Hooks, Config(on_exit=f"{name}:on_exit"))
    assert f"key 'on_exit' (hook '{name}:on_exit')" in message and "SyntaxError" in message
    assert f"{name}.py" in message and "line 2" in message


def test_a_hook_module_that_exits_at_import_is_a_config_error(tmp_path, monkeypatch):
    name = f"prefork_exit_hook_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = config_error(Hooks, Config(on_exit=f"{name}:on_exit"))
    assert "key 'on_exit'" in message and "SystemExit: 3" in message


@pytest.mark.parametrize("path, missing", [
    ("hookmods:no_such_hook", "no_such_hook"),
    ("hookmods.no_such_hook", "no_such_hook"),
    ("hookmods:not_callable", "not_callable"),     # an int
    ("os.path", "path"),                          # a module, not a function
])
def test_missing_or_uncallable_attribute_is_a_config_error(hookmods, path, missing):
    message = config_error(Hooks, Config(when_ready=path))
    assert "'when_ready'" in message
    assert repr(missing) in message


@pytest.mark.parametrize("name", NAMES)
def test_the_error_names_whichever_key_is_wrong(hookmods, name):
    good = {other: f"hookmods:{other}" for other in NAMES}
    good[name] = "hookmods:nope"
    message = config_error(Hooks, Config(**good))
    assert f"'{name}'" in message
    assert all(f"'{other}'" not in message for other in NAMES if other != name)


def test_resolving_runs_no_hook(hookmods):
    _, records = hookmods
    Hooks(Config(**{name: f"hookmods:{name}" for name in NAMES}))
    assert records() == []


# -- the _dotted check in prefork.config.build ---------------------------------

@pytest.mark.parametrize("value", ["mod:f", "pkg.mod:f", "pkg.sub.mod:_f1", "mod.f", ""])
def test_build_accepts_dotted_paths(value):
    assert config.build({}, {"pre_fork": value}).pre_fork == value


@pytest.mark.parametrize("value", ["mod", "mod:", ":f", "mod::f", "mod:f()", "mod:a.b",
                                   "1mod:f", "my-mod:f", "mod:f g", "mod/x:f", " mod:f",
                                   "mod.", "pkg..mod:f"])
@pytest.mark.parametrize("name", NAMES)
def test_build_rejects_a_bad_shape_naming_the_key(name, value):
    message = config_error(config.build, {}, {name: value})
    assert f"key '{name}'" in message and "command line" in message
    assert "dotted path" in message


def test_build_rejects_a_bad_shape_from_the_file_naming_the_file(tmp_path):
    path = tmp_path / "prefork.toml"
    path.write_text('on_exit = "not a path"\n')
    message = config_error(config.load, str(path), {"target": "app:handler"})
    assert str(path) in message and "key 'on_exit'" in message


def test_build_rejects_a_hook_that_is_not_a_string(tmp_path):
    path = tmp_path / "prefork.toml"
    path.write_text("when_ready = 1\n")
    message = config_error(config.load, str(path), {"target": "app:handler"})
    assert str(path) in message and "key 'when_ready'" in message


def test_cli_flags_reach_the_config():
    from prefork import cli
    flags = []
    for name in NAMES:
        flags += ["--" + name.replace("_", "-"), f"hookmods:{name}"]
    args = cli.build_parser().parse_args(["serve", "app:handler", *flags])
    built = config.build({}, {k: v for k, v in vars(args).items() if k in config.FIELDS})
    assert {name: getattr(built, name) for name in NAMES} == {
        name: f"hookmods:{name}" for name in NAMES}


# -- calling -------------------------------------------------------------------

def test_call_passes_config_and_worker(hookmods):
    _, records = hookmods
    cfg = Config(target="app:handler", on_starting="hookmods:on_starting",
                 post_fork="hookmods:post_fork")
    hooks = Hooks(cfg)
    hooks.call("on_starting", cfg)
    hooks.call("post_fork", cfg, WorkerInfo(1234, 3, 7))
    got = records()
    assert [(r["hook"], r["pid"], r["target"], r["worker"]) for r in got] == [
        ("on_starting", os.getpid(), "app:handler", None),
        ("post_fork", os.getpid(), "app:handler", {"pid": 1234, "generation": 3, "slot": 7}),
    ]


def test_a_hook_that_raises_is_logged_with_its_traceback(hookmods, prefork_log):
    _, records = hookmods
    cfg = Config(on_starting="hookmods:raising", worker_exit="hookmods:raising")
    hooks = Hooks(cfg)
    assert hooks.call("on_starting", cfg) is None          # returned normally
    hooks.call("worker_exit", cfg, WorkerInfo(1, 1, 0))
    assert [r["hook"] for r in records()] == ["raising", "raising"]   # it did run
    errors = [r for r in prefork_log.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    first = errors[0].getMessage()
    assert "on_starting" in first and "hookmods:raising" in first
    assert "Traceback (most recent call last)" in first
    assert "in _fail" in first                              # the hook's own frames
    assert "RuntimeError: boom from hookmods.raising" in first
    assert "worker_exit" in errors[1].getMessage()


def test_unset_hooks_are_no_ops(hookmods, prefork_log):
    _, records = hookmods
    cfg = Config(on_starting="hookmods:on_starting")
    hooks = Hooks(cfg)
    for name in NAMES:
        if name != "on_starting":
            assert hooks.call(name, cfg) is None
    assert not Hooks(Config())
    assert not NO_HOOKS
    for name in NAMES:
        NO_HOOKS.call(name, cfg, WorkerInfo(0, 1, 0))
    assert records() == [] and prefork_log.records == []


def test_worker_info_is_frozen():
    info = WorkerInfo(0, 2, 5)
    assert (info.pid, info.generation, info.slot) == (0, 2, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.pid = 1
