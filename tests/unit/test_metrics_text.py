"""The status snapshot as Prometheus text, read back with prometheus_client's own parser."""

import os

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from arbiter_driver import T, running  # noqa: E402
from prefork import metrics  # noqa: E402
from prefork.scoreboard import Scoreboard  # noqa: E402
from prefork.supervisor import status  # noqa: E402
from prefork.supervisor.events import ChildExited, RecycleWanted  # noqa: E402

REPORT = {
    "pid": 100, "target": "app:application", "generation": 3, "workers_wanted": 2,
    "phase": "running", "reloading": False, "rss": 30_000_000, "started": 1700000000.5,
    "reloads": 2, "restarts": {"crash": 1, "reload": 4},
    "workers": [
        {"pid": 201, "generation": 3, "state": "ready", "busy": True, "for": 0.5,
         "age": 60.0, "requests": 12, "connections": 1, "rss": 20_000_000,
         "busy_seconds": 1.25},
        {"pid": 202, "generation": 3, "state": "booting", "busy": False, "for": 0.1,
         "age": 0.2, "requests": 0, "connections": 0, "rss": 10_000_000,
         "busy_seconds": 0.0},
    ],
}


def parse(text: str) -> dict:
    """{sample name: {frozenset(labels): value}}, and the families' names and types."""
    samples: dict = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return {"samples": samples, "types": types}


def one(parsed: dict, name: str, **labels) -> float:
    key = frozenset((k, str(v)) for k, v in labels.items())
    return parsed["samples"][name][key]


def test_the_adaptive_pool_families_only_when_it_is_on():
    assert "prefork_pool_steps" not in metrics.render(REPORT)
    report = {**REPORT, "workers_floor": 2, "workers_max": 6,
              "pool_steps": {"grow": 3, "shrink": 1}}
    parsed = parse(metrics.render(report))
    assert parsed["types"]["prefork_pool_steps"] == "counter"
    assert one(parsed, "prefork_pool_steps_total", direction="grow") == 3
    assert one(parsed, "prefork_pool_steps_total", direction="shrink") == 1
    assert (one(parsed, "prefork_workers_floor"), one(parsed, "prefork_workers_max")) == (2, 6)


def test_every_family_parses_with_its_type_and_values():
    text = metrics.render(REPORT)
    parsed = parse(text)
    assert parsed["types"] == {
        "prefork_master_info": "gauge", "prefork_master_start_time_seconds": "gauge",
        "prefork_master_rss_bytes": "gauge", "prefork_generation": "gauge",
        "prefork_reloads": "counter", "prefork_workers_wanted": "gauge",
        "prefork_workers_alive": "gauge", "prefork_workers_ready": "gauge",
        "prefork_workers_busy": "gauge", "prefork_worker_restarts": "counter",
        "prefork_worker_requests": "counter", "prefork_worker_busy_seconds": "counter",
        "prefork_worker_rss_bytes": "gauge",
    }
    assert one(parsed, "prefork_master_info", pid=100, target="app:application") == 1
    assert one(parsed, "prefork_master_start_time_seconds") == 1700000000.5
    assert one(parsed, "prefork_master_rss_bytes") == 30_000_000
    assert one(parsed, "prefork_generation") == 3
    assert one(parsed, "prefork_reloads_total") == 2
    assert one(parsed, "prefork_workers_wanted") == 2
    assert one(parsed, "prefork_workers_alive") == 2
    assert one(parsed, "prefork_workers_ready") == 1
    assert one(parsed, "prefork_workers_busy") == 1
    assert one(parsed, "prefork_worker_requests_total", pid=201, generation=3) == 12
    assert one(parsed, "prefork_worker_requests_total", pid=202, generation=3) == 0
    assert one(parsed, "prefork_worker_busy_seconds_total", pid=201, generation=3) == 1.25
    assert one(parsed, "prefork_worker_rss_bytes", pid=202, generation=3) == 10_000_000
    # Each family is introduced once, HELP then TYPE, and the text ends with a newline.
    lines = text.splitlines()
    assert text.endswith("\n")
    for name in ("prefork_worker_requests_total", "prefork_reloads_total"):
        at = lines.index(f"# TYPE {name} counter")
        assert lines[at - 1].startswith(f"# HELP {name} ")
        assert sum(line.startswith(f"# TYPE {name} ") for line in lines) == 1


def test_counters_end_in_total():
    for line in metrics.render(REPORT).splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line


def test_every_known_restart_reason_is_there_even_at_zero():
    parsed = parse(metrics.render(REPORT))
    restarts = {dict(k)["reason"]: v
                for k, v in parsed["samples"]["prefork_worker_restarts_total"].items()}
    assert restarts == {"max_requests": 0, "max_rss": 0, "timeout": 0, "request_timeout": 0,
                        "crash": 1, "boot_failure": 0, "reload": 4, "scale": 0}
    # A reason the renderer does not know yet is shown all the same.
    parsed = parse(metrics.render({**REPORT, "restarts": {"upgrade": 1}}))
    assert one(parsed, "prefork_worker_restarts_total", reason="upgrade") == 1


def test_label_values_are_escaped():
    tricky = 'a "quoted"\\back\nslash'
    text = metrics.render({**REPORT, "target": tricky, "restarts": {tricky: 7}})
    assert 'target="a \\"quoted\\"\\\\back\\nslash"' in text
    parsed = parse(text)
    assert one(parsed, "prefork_master_info", pid=100, target=tricky) == 1
    assert one(parsed, "prefork_worker_restarts_total", reason=tricky) == 7


def test_help_text_is_escaped():
    out = metrics.Exposition()
    out.add("x", "gauge", "back\\slash\nnewline", [({}, 1)])
    assert out.text().splitlines()[0] == "# HELP x back\\\\slash\\nnewline"
    [family] = text_string_to_metric_families(out.text())
    assert family.documentation == "back\\slash\nnewline"


@pytest.mark.parametrize("value, shown", [
    (3, "3"), (True, "1"), (0.5, "0.5"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"),
    (float("nan"), "NaN"), (1e-7, "1e-07"),
])
def test_values(value, shown):
    out = metrics.Exposition()
    out.add("x", "gauge", "h", [({}, value)])
    assert out.text().splitlines()[-1] == f"x {shown}"


def test_a_report_from_proc_shows_only_what_proc_knows():
    # What `prefork status` builds from the pidfile and /proc, without the control socket.
    report = {"pid": 100, "rss": 5_000_000, "started": 1700000000.0, "note": "from /proc",
              "workers": [{"pid": 201, "generation": 1, "state": "running", "busy": None,
                           "for": 0.0, "age": 3.0, "requests": None, "rss": 9_000_000},
                          {"pid": 202, "generation": None, "state": "running", "busy": None,
                           "for": 0.0, "age": 3.0, "requests": None, "rss": 8_000_000}]}
    parsed = parse(metrics.render(report))
    assert set(parsed["types"]) == {
        "prefork_master_info", "prefork_master_start_time_seconds",
        "prefork_master_rss_bytes", "prefork_workers_alive", "prefork_worker_rss_bytes"}
    assert one(parsed, "prefork_workers_alive") == 2
    assert one(parsed, "prefork_worker_rss_bytes", pid=201, generation=1) == 9_000_000
    assert one(parsed, "prefork_worker_rss_bytes", pid=202, generation="") == 8_000_000


def test_an_empty_report_renders_without_error():
    parsed = parse(metrics.render({"pid": 1, "workers": []}))
    assert one(parsed, "prefork_workers_alive") == 0


def test_a_real_snapshot_from_the_arbiter_and_scoreboard():
    # The renderer reads the keys status.snapshot really writes, not only the fixture's.
    pool, (p1, p2) = running(2)
    pool.fork(pool.decide(ChildExited(p2, -9), T + 1), T + 1)    # a crash, replaced
    pool.decide(RecycleWanted(p1), T + 1)
    board = Scoreboard(16)
    try:
        for w in pool.arb.workers.values():
            board.claim(w.slot, w.pid, w.generation, T)
        slot = board.slot(pool.arb.workers[p1].slot)
        slot.request_started(T + 1)
        slot.request_finished(T + 1.5)
        report = status.snapshot(pool.arb, board, "mod:app")
    finally:
        board.close()
    parsed = parse(metrics.render(report))
    assert one(parsed, "prefork_master_info", pid=os.getpid(), target="mod:app") == 1
    assert one(parsed, "prefork_worker_requests_total", pid=p1, generation=1) == 1
    assert one(parsed, "prefork_worker_busy_seconds_total", pid=p1, generation=1) == 0.5
    assert one(parsed, "prefork_worker_restarts_total", reason="crash") == 1
    assert one(parsed, "prefork_workers_alive") == len(pool.arb.workers)
    assert one(parsed, "prefork_master_start_time_seconds") > 1e9
