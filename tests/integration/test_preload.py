"""--preload: the target is imported once, in the master, and the workers fork with it.

tests/apps/preloadapp.py records the PID of the process importing it in
$PREFORK_TEST_IMPORTS and answers with the PID that served and the PID that
imported it.  (HUP with preload re-executes the master, as USR2 does: that path
is tested with the upgrades.)
"""

import json
import os
import signal
import uuid
from pathlib import Path
from typing import List

import pytest

from harness import echo_once, processes_matching
from http_helpers import get

pytestmark = pytest.mark.integration

IMPORTS_ENV = "PREFORK_TEST_IMPORTS"    # preloadapp.IMPORTS_ENV


def imports(path: Path) -> List[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(l)["pid"] for l in text.split("\n") if l.endswith("}")]


def start(prefork_server, tmp_path: Path, target: str, *args: str):
    path = tmp_path / "imports.jsonl"
    proc = prefork_server("serve", target, "-b", "127.0.0.1:0", *args,
                          env={IMPORTS_ENV: str(path)})
    return proc, path


def ask(proc, kind: str) -> tuple:
    """(served_by, imported_by) from one request on a new connection."""
    if kind in ("wsgi", "asgi"):
        resp = get(proc.address, "/")
        assert resp.status == 200, resp
        answer = resp.json()
        return answer["served_by"], answer["imported_by"]
    served, imported = echo_once(proc.address, b"?\n").split()
    return int(served), int(imported)


TARGETS = {"wsgi": "preloadapp:app", "handler": "preloadapp:Handler",
           "asgi": "preloadapp:asgi_app"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_preload_imports_the_target_once_in_the_master(prefork_server, tmp_path, kind):
    proc, path = start(prefork_server, tmp_path, TARGETS[kind], "-w", "2", "--preload")
    proc.wait_ready()
    master = proc.pid
    workers = proc.wait_workers(lambda p: len(p) == 2)
    assert imports(path) == [master]
    proc.wait_for(rf"\[{master}\] \[INFO\] preloaded {TARGETS[kind]} in the master")
    log = proc.log()
    assert log.index("listening at") < log.index("preloaded") < log.index("starting generation")
    for _ in range(6):
        served, imported = ask(proc, kind)
        assert served in workers and imported == master

    # A worker forked later (TTIN, or a replacement for a killed one) gets the
    # preloaded target too: still one import.
    proc.signal(signal.SIGTTIN)
    proc.wait_for(r"worker ready", count=3)
    three = proc.wait_workers(lambda p: len(p) == 3)
    victim = sorted(workers)[0]
    proc.seen_pids.add(victim)
    os.kill(victim, signal.SIGKILL)
    proc.wait_workers(lambda p: len(p) == 3 and victim not in p)
    proc.wait_for(r"worker ready", count=4)
    assert imports(path) == [master]
    for _ in range(4):
        assert ask(proc, kind)[1] == master
    assert len(three) == 3
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_without_preload_each_worker_imports_the_target(prefork_server, tmp_path, kind):
    proc, path = start(prefork_server, tmp_path, TARGETS[kind], "-w", "2")
    proc.wait_ready()
    workers = proc.wait_workers(lambda p: len(p) == 2)
    assert sorted(imports(path)) == sorted(workers)
    assert proc.pid not in imports(path)
    assert "preloaded" not in proc.log()
    for _ in range(6):
        served, imported = ask(proc, kind)
        assert served == imported and served in workers


@pytest.mark.timeout(60)
def test_preload_serves_a_bundled_handler_class(prefork_server, tmp_path):
    proc, _ = start(prefork_server, tmp_path, "prefork.examples.echo:UpperEchoHandler",
                    "-w", "2", "--preload")
    proc.wait_ready()
    proc.wait_for(r"preloaded prefork\.examples\.echo:UpperEchoHandler in the master")
    for _ in range(4):
        assert echo_once(proc.address, b"preloaded\n") == b"PRELOADED\n"


@pytest.mark.timeout(60)
def test_preload_from_the_config_file(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text("preload = true\nworkers = 2\n")
    proc, path = start(prefork_server, tmp_path, TARGETS["wsgi"], "-c", str(config))
    proc.wait_ready()
    assert imports(path) == [proc.pid]
    assert ask(proc, "wsgi")[1] == proc.pid


def unique_module(tmp_path: Path, source: str) -> str:
    """A module only this test imports (the server's cwd, tmp_path, is on its sys.path)."""
    name = f"preloadtarget_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(source)
    return name


@pytest.mark.timeout(30)
@pytest.mark.parametrize("source, attribute, words", [
    ("raise RuntimeError('no import for you')\n", "app", ["RuntimeError: no import for you"]),
    ("import prefork_no_such_dependency\n", "app",
     ["ModuleNotFoundError", "prefork_no_such_dependency"]),
    ("def broken(:\n", "app", ["SyntaxError"]),
    ("app = None\n", "nope", ["no attribute 'nope'"]),
])
def test_preload_import_error_exits_3_naming_the_module(prefork_server, tmp_path, source,
                                                        attribute, words):
    module = unique_module(tmp_path, source)
    proc = prefork_server("serve", f"{module}:{attribute}", "-b", "127.0.0.1:0", "-w", "2",
                          "--preload")
    assert proc.wait_exit() == 3
    error = proc.log()
    assert "prefork: error: " in error and f"'{module}'" in error, error
    for word in words:
        assert word in error, (word, error)
    # The master failed in its own import: no worker was ever forked.
    assert "starting generation" not in error and "worker" not in error
    assert "preloaded" not in error
    assert processes_matching(module) == []


@pytest.mark.timeout(30)
def test_preload_of_a_missing_module_exits_3(prefork_server):
    module = f"prefork_no_such_module_{uuid.uuid4().hex[:12]}"
    proc = prefork_server("serve", f"{module}:app", "-b", "127.0.0.1:0", "--preload")
    assert proc.wait_exit() == 3
    error = proc.log()
    assert f"cannot import module '{module}'" in error and "starting generation" not in error


@pytest.mark.timeout(30)
def test_preload_of_a_target_that_is_not_servable_exits_3(prefork_server, tmp_path):
    module = unique_module(tmp_path, "app = 42\n")
    proc = prefork_server("serve", f"{module}:app", "-b", "127.0.0.1:0", "-w", "2",
                          "--preload")
    assert proc.wait_exit() == 3
    error = proc.log()
    assert f"'{module}:app'" in error and "neither" in error, error
    assert processes_matching(module) == []
