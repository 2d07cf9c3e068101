"""Operator hooks for tests/unit/test_hooks_resolve.py and tests/integration/test_hooks.py.

Every hook appends one JSON line to the file named by $PREFORK_TEST_HOOKS:
``{"event": "hook", "hook": NAME, "pid": os.getpid(), "target": config.target,
"worker": {"pid", "generation", "slot"} or null, "time"}``.  The "event" key
lets a test point $PREFORK_TEST_CALLS (tests/apps/wsgiapps.py) at the same
file, so one O_APPEND file orders hook calls and requests across processes.
"""

import json
import os
import time

from wsgiapps import append_json_line

HOOKS_ENV = "PREFORK_TEST_HOOKS"

not_callable = 42


def record(name, config, worker=None, **fields):
    path = os.environ.get(HOOKS_ENV)
    if not path:
        return
    line = {"event": "hook", "hook": name, "pid": os.getpid(), "time": time.time(),
            "target": getattr(config, "target", None),
            "worker": None if worker is None else {
                "pid": worker.pid, "generation": worker.generation, "slot": worker.slot}}
    line.update(fields)
    append_json_line(path, line)


def read(path):
    """The hook records in ``path`` (a missing file is no records)."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        return []
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in lines if r.get("event") == "hook"]


def on_starting(config):
    record("on_starting", config)


def when_ready(config):
    record("when_ready", config, workers=config.workers)


def pre_fork(config, worker):
    record("pre_fork", config, worker)


def post_fork(config, worker):
    record("post_fork", config, worker)


def worker_exit(config, worker):
    record("worker_exit", config, worker)


def on_reload(config):
    record("on_reload", config, workers=config.workers)


def on_exit(config):
    record("on_exit", config, workers=config.workers)


def raising(config, worker=None):
    """Records itself as 'raising', then raises: the process must log it and go on."""
    record("raising", config, worker)
    return _fail()


def _fail():
    raise RuntimeError("boom from hookmods.raising")


ALL = ("on_starting", "when_ready", "pre_fork", "post_fork", "worker_exit", "on_reload",
       "on_exit")
