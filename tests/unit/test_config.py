"""Config: defaults, TOML loading, validation messages, CLI precedence and the CLI parser."""

import dataclasses
import os
import sys

import pytest

from prefork import cli, config
from prefork.config import Config, ConfigError
from prefork.errors import EXIT_CONFIG


def toml(tmp_path, text, name="prefork.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load_error(path, cli_values=None):
    with pytest.raises(ConfigError) as info:
        config.load(path, {"target": "app:handler", **(cli_values or {})})
    assert info.value.status == EXIT_CONFIG == 2
    return str(info.value)


# -- defaults and loading ------------------------------------------------------

def test_defaults():
    c = Config()
    assert c.bind == ("127.0.0.1:8000",)
    assert c.workers == (os.cpu_count() or 1)
    assert (c.worker_class, c.threads, c.backlog) == ("auto", 32, 2048)
    assert (c.timeout, c.graceful_timeout, c.idle_timeout) == (30.0, 30.0, 15.0)
    assert (c.max_requests, c.max_requests_jitter) == (0, 0)
    assert (c.error_log, c.log_level) == ("-", "info")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().workers = 3
    assert Config().replace(workers=3).workers == 3


def test_cli_values_alone():
    c = config.load(None, {"target": "app:handler", "workers": 3})
    assert (c.target, c.workers, c.bind) == ("app:handler", 3, ("127.0.0.1:8000",))


def test_toml_file_is_loaded(tmp_path):
    path = toml(tmp_path, 'target = "app:handler"\nworkers = 3\nworker_class = "sync"\n'
                          'bind = ["127.0.0.1:9000", "[::1]:9000"]\ntimeout = 12.5\n'
                          'log_level = "debug"\n')
    c = config.load(path, {})
    assert (c.target, c.workers, c.worker_class, c.timeout, c.log_level) == (
        "app:handler", 3, "sync", 12.5, "debug")
    assert c.bind == ("127.0.0.1:9000", "[::1]:9000")
    assert c.backlog == 2048                          # untouched keys keep their default


def test_cli_wins_over_the_file(tmp_path):
    path = toml(tmp_path, 'target = "file:app"\nworkers = 3\nbind = ":9000"\n')
    c = config.load(path, {"target": "cli:app", "workers": 5})
    assert (c.target, c.workers, c.bind) == ("cli:app", 5, (":9000",))


def test_bind_as_a_string_or_a_list(tmp_path):
    assert config.load(toml(tmp_path, 'bind = ":1"'), {"target": "a:b"}).bind == (":1",)
    assert config.load(toml(tmp_path, 'bind = [":1", ":2"]'), {"target": "a:b"}).bind == (
        ":1", ":2")
    assert config.load(None, {"target": "a:b", "bind": [":3", ":4"]}).bind == (":3", ":4")


def test_int_is_accepted_for_a_float_key(tmp_path):
    c = config.load(toml(tmp_path, "timeout = 5\ngraceful_timeout = 0\n"), {"target": "a:b"})
    assert c.timeout == 5.0 and type(c.timeout) is float
    assert c.graceful_timeout == 0.0 and type(c.graceful_timeout) is float


# -- errors name the key and the file -----------------------------------------

@pytest.mark.parametrize("line, words", [
    ("wrokers = 2", ["unknown key 'wrokers'"]),
    ("[server]\nworkers = 2", ["unknown key 'server'"]),
    ('workers = "2"', ["key 'workers'", "expected an integer", "'2'"]),
    ("workers = 2.5", ["key 'workers'", "expected an integer"]),
    ("workers = true", ["key 'workers'", "expected an integer", "True"]),
    ("timeout = true", ["key 'timeout'", "expected a number"]),
    ('timeout = "5"', ["key 'timeout'", "expected a number"]),
    ("log_level = 3", ["key 'log_level'", "expected a string"]),
    ('worker_class = "gevent"', ["key 'worker_class'", "'gevent' is not one of auto, sync, "
                                 "thread"]),
    ('log_level = "loud"', ["key 'log_level'", "'loud' is not one of debug, info"]),
    ("workers = 0", ["key 'workers'", "0 is below the minimum 1"]),
    ("threads = -1", ["key 'threads'", "below the minimum 1"]),
    ("timeout = 0.05", ["key 'timeout'", "0.05 is below the minimum 0.1"]),
    ("graceful_timeout = -1", ["key 'graceful_timeout'", "below the minimum 0"]),
    ("max_requests = -1", ["key 'max_requests'", "below the minimum 0"]),
    ("bind = []", ["key 'bind'", "must not be empty"]),
    ("bind = 8000", ["key 'bind'", "expected a list of strings"]),
    ('bind = [":1", 2]', ["key 'bind'", "expected a list of strings"]),
])
def test_bad_file_values_name_the_key_and_the_file(tmp_path, line, words):
    path = toml(tmp_path, line + "\n")
    message = load_error(path)
    assert message.startswith(path + ": ")
    for word in words:
        assert word in message


@pytest.mark.parametrize("key", ["timeout", "graceful_timeout", "idle_timeout"])
def test_nan_is_rejected(tmp_path, key):
    # TOML allows nan; a nan timeout never expires, so stuck workers are never killed.
    assert f"key '{key}'" in load_error(toml(tmp_path, f"{key} = nan\n"))


def test_bad_cli_values_name_the_command_line():
    message = load_error(None, {"workers": 0})
    assert message.startswith("command line: key 'workers'")
    assert load_error(None, {"nope": 1}) == "command line: unknown key 'nope'"


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.toml")
    assert load_error(path) == f"{path}: no such config file"


def test_unreadable_path(tmp_path):
    assert load_error(str(tmp_path)).startswith(f"{tmp_path}: cannot read config file")


def test_invalid_toml(tmp_path):
    path = toml(tmp_path, "workers = = 2\n")
    assert load_error(path).startswith(f"{path}: not valid TOML")


def test_missing_target(tmp_path):
    with pytest.raises(ConfigError, match="no TARGET given"):
        config.load(None, {})
    path = toml(tmp_path, "workers = 2\n")
    with pytest.raises(ConfigError, match=f"'target' in {path}"):
        config.load(path, {})


def test_every_field_has_a_known_type():
    for name in config.FIELDS:
        assert config.field_type(name) in (int, float, str, bool, tuple)


# -- the CLI parser ------------------------------------------------------------

SAMPLE = {int: "3", float: "2.5", str: "x", tuple: "127.0.0.1:1"}


def parse(*argv):
    return cli.build_parser().parse_args(["serve", *argv])


@pytest.mark.parametrize("name", [n for n in config.FIELDS if n != "target"])
def test_every_setting_is_a_flag(name):
    kind = config.field_type(name)
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        assert parse("app:h", flag).__dict__[name] is True
        assert parse("app:h", "--no-" + flag[2:]).__dict__[name] is False
        return
    choices = config.FIELDS[name].metadata["choices"]
    value = choices[-1] if choices else SAMPLE[kind]
    args = parse("app:h", flag, value)
    expected = [value] if kind is tuple else kind(value)
    assert getattr(args, name) == expected


def test_short_flags_and_repeatable_bind():
    args = parse("app:h", "-w", "4", "-k", "sync", "-b", ":1", "-b", "[::1]:2", "-c", "f.toml")
    assert (args.target, args.workers, args.worker_class, args.bind, args.config) == (
        "app:h", 4, "sync", [":1", "[::1]:2"], "f.toml")


def test_only_typed_flags_are_set():
    # Unset flags must not exist at all, or they would override the config file.
    assert set(vars(parse("app:h", "--max-requests", "10"))) == {
        "command", "config", "target", "max_requests"}


@pytest.mark.parametrize("argv", [["-k", "gevent"], ["-w", "many"], ["--timeout", "x"],
                                  ["--log-level", "loud"], ["--no-such-flag"]])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse("app:h", *argv)
    assert info.value.code == 2


def test_cli_and_file_together(tmp_path):
    path = toml(tmp_path, 'target = "file:app"\nworkers = 3\nbind = ":9000"\nthreads = 4\n')
    args = parse("-c", path, "-w", "5", "-b", ":1", "-b", ":2")
    c = config.load(args.config, {k: v for k, v in vars(args).items() if k in config.FIELDS})
    assert (c.target, c.workers, c.bind, c.threads) == ("file:app", 5, (":1", ":2"), 4)


# -- `prefork check`: the CLI's error paths end in the documented statuses ----

@pytest.fixture
def main(monkeypatch, capsys):
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() prepends the cwd

    def run(*argv):
        status = cli.main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err
    return run


def test_check_ok(main):
    status, out, _ = main("check", "socketserver:StreamRequestHandler", "-w", "2", "-b", ":1")
    assert status == 0
    assert out == "OK: socketserver:StreamRequestHandler is a socketserver handler class; " \
                  "2 workers on :1\n"


def test_check_bad_config_is_status_2(main, tmp_path):
    path = toml(tmp_path, "wrokers = 2\n")
    assert main("check", "-c", path, "a:b") == (2, "", f"prefork: error: {path}: unknown key "
                                                       "'wrokers'\n")


@pytest.mark.parametrize("argv", [["no_such_module_xyz:app"], ["socketserver:Nope"],
                                  ["string:ascii_letters"]])
def test_check_bad_target_is_status_3(main, argv):
    status, _, err = main("check", *argv)
    assert status == 3 and err.startswith("prefork: error: ")


def test_check_bad_bind_is_status_2(main):
    status, _, err = main("check", "socketserver:StreamRequestHandler", "-b", "nonsense")
    assert status == 2 and "'nonsense'" in err
