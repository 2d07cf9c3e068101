"""Operator hooks in real processes: where each runs, when, with what, and what a failure does.

The hooks are tests/apps/hookmods.py; they and the app (wsgiapps:hello on the
sync worker, its ASGI twin asgiapps:hello on the asyncio one) append JSON
lines to one O_APPEND file, so its line order is the order in which master
and workers got there (a worker's post_fork line before any request it
served, a pre_fork line before the post_fork of that slot).
"""

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, List

import pytest

from harness import processes_matching
from http_helpers import CALLS_ENV, app_args, get

pytestmark = pytest.mark.integration

HOOKS_ENV = "PREFORK_TEST_HOOKS"     # hookmods.HOOKS_ENV
# The same hello app on each worker kind (-k auto picks it by the app).
APPS = {"sync": "wsgiapps:hello", "asyncio": "asgiapps:hello"}
NAMES = ("on_starting", "when_ready", "pre_fork", "post_fork", "worker_exit", "on_reload",
         "on_exit")


class Run:
    """A server whose hooks and app calls go to one file."""

    def __init__(self, proc, path: Path) -> None:
        self.proc = proc
        self.path = path

    def lines(self) -> List[dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # A line being written right now is not complete yet: skip it.
        return [json.loads(l) for l in text.split("\n") if l.strip() and l.endswith("}")]

    def hooks(self, name: str) -> List[dict]:
        return [r for r in self.lines() if r["event"] == "hook" and r["hook"] == name]

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}\nrecords:\n"
                                     + "\n".join(map(str, self.lines()))
                                     + "\nlog:\n" + self.proc.log()[-3000:])
            time.sleep(0.02)

    def wait_hooks(self, name: str, count: int, timeout: float = 15.0) -> List[dict]:
        self.wait(f"{count}x {name}", lambda: len(self.hooks(name)) >= count, timeout)
        return self.hooks(name)


def hook_flags(**paths: str) -> List[str]:
    flags = []
    for name in NAMES:
        flags += ["--" + name.replace("_", "-"), paths.get(name, f"hookmods:{name}")]
    return flags


def hook_toml(**paths: str) -> str:
    return "".join(f'{name} = "{paths.get(name, "hookmods:" + name)}"\n' for name in NAMES)


def start(prefork_server, tmp_path: Path, *args: str, app: str = "hello") -> Run:
    path = tmp_path / "records.jsonl"
    proc = prefork_server(*app_args(app, *args),
                          env={CALLS_ENV: str(path), HOOKS_ENV: str(path)})
    return Run(proc, path)


def serve_some(run: Run, n: int = 6) -> List[int]:
    """``n`` requests on new connections; the worker PIDs that answered them."""
    pids = []
    for i in range(n):
        ident = uuid.uuid4().hex[:8]
        resp = get(run.proc.address, f"/?id={ident}")
        assert resp.status == 200 and resp.body == b"hello\n", resp
        (call,) = [r for r in run.lines() if r["event"] == "call" and r.get("id") == ident]
        pids.append(call["pid"])
    return pids


def index_of(lines: List[dict], predicate) -> int:
    return next(i for i, r in enumerate(lines) if predicate(r))


# -- the whole life: start, serve, HUP, TERM -----------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(APPS))
@pytest.mark.parametrize("via", ["toml", "flags"])
def test_each_hook_runs_where_and_when_documented(prefork_server, tmp_path, via, kind):
    if via == "toml":
        config = tmp_path / "prefork.toml"
        config.write_text("workers = 2\n" + hook_toml())
        run = start(prefork_server, tmp_path, "-c", str(config), app=APPS[kind])
    else:
        run = start(prefork_server, tmp_path, "-w", "2", *hook_flags(), app=APPS[kind])
    proc = run.proc
    proc.wait_ready()
    master = proc.pid
    first = proc.wait_workers(lambda p: len(p) == 2)

    # Start-up, in the master: on_starting once, then pre_fork once per worker.
    (starting,) = run.hooks("on_starting")
    assert starting["pid"] == master and starting["worker"] is None
    assert starting["target"] == APPS[kind]             # f(config): the real Config
    pre = run.wait_hooks("pre_fork", 2)
    assert len(pre) == 2
    assert all(r["pid"] == master and r["worker"]["pid"] == 0
               and r["worker"]["generation"] == 1 for r in pre)
    slots = {r["worker"]["slot"] for r in pre}
    assert len(slots) == 2
    # post_fork in each worker, as itself, with the slot its pre_fork announced.
    post = run.wait_hooks("post_fork", 2)
    assert {r["pid"] for r in post} == first
    for r in post:
        assert r["worker"]["pid"] == r["pid"] and r["worker"]["generation"] == 1
    assert {r["worker"]["slot"] for r in post} == slots
    lines = run.lines()
    for r in post:
        slot = r["worker"]["slot"]
        assert index_of(lines, lambda x: x.get("hook") == "pre_fork"
                        and x["worker"]["slot"] == slot) \
            < index_of(lines, lambda x: x.get("hook") == "post_fork" and x["pid"] == r["pid"])
    assert index_of(lines, lambda x: x.get("hook") == "on_starting") == 0
    (ready,) = run.wait_hooks("when_ready", 1)
    assert ready["pid"] == master
    assert not run.hooks("on_reload") and not run.hooks("worker_exit") \
        and not run.hooks("on_exit")

    # Every request was served by a worker whose post_fork line came first.
    served = serve_some(run)
    lines = run.lines()
    for pid in set(served):
        assert pid in first
        assert index_of(lines, lambda x: x.get("hook") == "post_fork" and x["pid"] == pid) \
            < index_of(lines, lambda x: x["event"] == "call" and x["pid"] == pid)

    # HUP: on_reload in the master, a new generation forked and ready, the old
    # workers leave through worker_exit.
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"reload complete")
    (reload,) = run.wait_hooks("on_reload", 1)
    assert reload["pid"] == master and reload["workers"] == 2
    ready = run.wait_hooks("when_ready", 2)
    assert [r["pid"] for r in ready] == [master, master]
    pre = [r for r in run.hooks("pre_fork") if r["worker"]["generation"] == 2]
    assert len(pre) == 2 and all(r["pid"] == master and r["worker"]["pid"] == 0 for r in pre)
    second = proc.wait_workers(lambda p: len(p) == 2 and not p & first)
    post = [r for r in run.hooks("post_fork") if r["worker"]["generation"] == 2]
    assert {r["pid"] for r in post} == second
    lines = run.lines()
    assert index_of(lines, lambda x: x.get("hook") == "on_reload") \
        < index_of(lines, lambda x: x.get("hook") == "pre_fork"
                   and x["worker"]["generation"] == 2)
    exits = run.wait_hooks("worker_exit", 2)
    assert {r["pid"] for r in exits} == first
    for r in exits:
        assert r["worker"]["pid"] == r["pid"] and r["worker"]["generation"] == 1
    assert set(serve_some(run)) <= second

    # TERM: the last workers leave through worker_exit, then on_exit in the master.
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    lines = run.lines()
    exits = run.hooks("worker_exit")
    assert {r["pid"] for r in exits} == first | second
    (leaving,) = run.hooks("on_exit")
    assert leaving["pid"] == master
    assert lines[-1] == leaving                          # nothing ran after it
    assert len(run.hooks("on_starting")) == 1 and len(run.hooks("on_reload")) == 1
    assert len(run.hooks("pre_fork")) == len(run.hooks("post_fork")) == 4
    assert "raised" not in proc.log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(APPS))
def test_a_respawned_worker_runs_pre_fork_and_post_fork(prefork_server, tmp_path, kind):
    run = start(prefork_server, tmp_path, "-w", "1", *hook_flags(), app=APPS[kind])
    run.proc.wait_ready()
    (old,) = run.proc.wait_workers(lambda p: len(p) == 1)
    run.proc.seen_pids.add(old)
    os.kill(old, signal.SIGKILL)
    (new,) = run.proc.wait_workers(lambda p: len(p) == 1 and old not in p)
    post = run.wait_hooks("post_fork", 2)
    assert post[-1]["pid"] == new and post[-1]["worker"]["generation"] == 1
    assert len(run.hooks("pre_fork")) == 2
    # Killed: no worker_exit for it (the hook runs only when a worker leaves by itself).
    assert all(r["pid"] != old for r in run.hooks("worker_exit"))
    assert serve_some(run, 2) == [new, new]


# -- hooks that raise ----------------------------------------------------------

@pytest.mark.timeout(60)
def test_raising_on_starting_and_post_fork_are_logged_and_the_server_serves(
        prefork_server, tmp_path):
    run = start(prefork_server, tmp_path, "-w", "2", "--on-starting", "hookmods:raising",
                "--post-fork", "hookmods:raising", "--when-ready", "hookmods:when_ready")
    proc = run.proc
    proc.wait_ready()
    workers = proc.wait_workers(lambda p: len(p) == 2)
    # Each ran (master once, each worker once) and each failure is logged by
    # the process it ran in, with the hook's traceback.
    raised = run.wait_hooks("raising", 3)
    assert sorted(r["pid"] for r in raised) == sorted([proc.pid, *workers])
    log = proc.log()
    starting = proc.wait_for(rf"\[{proc.pid}\] \[ERROR\] hook on_starting \(hookmods:raising\) "
                             r"raised; going on:\nTraceback \(most recent call last\):\n"
                             r"(?:  .*\n)+RuntimeError: boom from hookmods\.raising")
    assert len(starting) == 1
    for pid in workers:
        assert len(proc.wait_for(rf"\[{pid}\] \[ERROR\] hook post_fork \(hookmods:raising\) "
                                 r"raised; going on:\nTraceback(?:.*\n)+?RuntimeError: "
                                 r"boom from hookmods\.raising")) == 1
    assert log.index("hook on_starting") < log.index("listening at")
    run.wait_hooks("when_ready", 1)
    assert set(serve_some(run)) <= workers
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(APPS))
def test_every_hook_raising_never_stops_master_or_workers(prefork_server, tmp_path, kind):
    run = start(prefork_server, tmp_path, "-w", "2",
                *hook_flags(**{name: "hookmods:raising" for name in NAMES}), app=APPS[kind])
    proc = run.proc
    proc.wait_ready()
    first = proc.wait_workers(lambda p: len(p) == 2)
    serve_some(run, 3)
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"reload complete")
    second = proc.wait_workers(lambda p: len(p) == 2 and not p & first)
    assert set(serve_some(run, 3)) <= second
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    log = proc.log()
    expected = {"on_starting": 1, "when_ready": 2, "pre_fork": 4, "post_fork": 4,
                "worker_exit": 4, "on_reload": 1, "on_exit": 1}
    for name, count in expected.items():
        found = proc.wait_for(rf"hook {name} \(hookmods:raising\) raised; going on:\n"
                              r"Traceback")
        assert len(found) == count, (name, len(found), log[-4000:])
    assert log.count("RuntimeError: boom from hookmods.raising") == sum(expected.values())
    assert "worker crashed" not in log and "Traceback" not in log.split("raised; going on")[0]


# -- bad hook paths ------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("how, key, path, words", [
    ("flag", "when_ready", "prefork_no_such_hooks_mod:f", ["prefork_no_such_hooks_mod",
                                                          "ModuleNotFoundError"]),
    ("flag", "post_fork", "hookmods:no_such_hook", ["'no_such_hook'"]),
    ("toml", "worker_exit", "hookmods:not_callable", ["'not_callable'"]),
    ("toml", "on_exit", "brokenapp:app", ["brokenapp", "RuntimeError"]),
    ("flag", "pre_fork", "not a dotted path", ["dotted path", "command line"]),
    ("toml", "on_reload", "hookmods", ["dotted path"]),
])
def test_a_bad_hook_path_exits_2_naming_the_key_and_starts_nothing(
        prefork_server, tmp_path, how, key, path, words):
    # A uniquely named target, so that any process left behind would show.
    module = f"hooktarget_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text("from wsgiapps import hello as app\n")
    records = tmp_path / "records.jsonl"
    args = ["serve", f"{module}:app", "-b", "127.0.0.1:0", "-w", "2",
            "--on-starting", "hookmods:on_starting"]
    if how == "toml":
        config = tmp_path / "prefork.toml"
        config.write_text(f'{key} = "{path}"\n')
        args += ["-c", str(config)]
        words = words + [str(config)] if "dotted path" in words else words
    else:
        args += ["--" + key.replace("_", "-"), path]
    proc = prefork_server(*args, env={HOOKS_ENV: str(records)})
    assert proc.wait_exit() == 2
    error = proc.log()
    assert "prefork: error: " in error and f"key '{key}'" in error, error
    for word in words:
        assert word in error, (word, error)
    # Refused before binding, forking or running any hook.
    assert "listening at" not in error and "starting generation" not in error
    assert not records.exists()
    assert processes_matching(module) == []


@pytest.mark.timeout(60)
def test_hup_with_a_bad_hook_path_keeps_the_old_generation(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text("workers = 2\n" + hook_toml())
    run = start(prefork_server, tmp_path, "-c", str(config))
    proc = run.proc
    proc.wait_ready()
    first = proc.wait_workers(lambda p: len(p) == 2)

    config.write_text("workers = 2\n" + hook_toml(on_reload="hookmods:no_such_hook"))
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"reload failed: .*'on_reload'.*'no_such_hook'.*generation 1 keeps serving")
    assert not run.hooks("on_reload") and not run.hooks("worker_exit")
    assert set(serve_some(run)) <= first
    assert proc.live_workers() == first

    # Fixed: the next HUP resolves the paths again and reloads.
    config.write_text("workers = 2\n" + hook_toml())
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"reload complete")
    assert [r["pid"] for r in run.wait_hooks("on_reload", 1)] == [proc.pid]
    assert {r["pid"] for r in run.wait_hooks("worker_exit", 2)} == first


@pytest.mark.timeout(60)
def test_master_hooks_after_a_reload_get_the_reloaded_config(prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text("workers = 1\n" + hook_toml())
    run = start(prefork_server, tmp_path, "-c", str(config))
    proc = run.proc
    proc.wait_ready()
    config.write_text("workers = 2\n" + hook_toml())
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"reload complete")
    assert [r["workers"] for r in run.wait_hooks("on_reload", 1)] == [2]
    assert [r["workers"] for r in run.wait_hooks("when_ready", 2)] == [1, 2]
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    (leaving,) = run.hooks("on_exit")
    assert leaving["workers"] == 2     # the config in force, not the one it started with
