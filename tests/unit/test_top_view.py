"""``prefork top`` without a terminal: reports in, rows and lines out."""

from prefork.top import SORTS, Row, Top, busy_total, header_lines, rows, sort_rows


def worker(pid, requests=0, busy_seconds=0.0, busy=False, since=1.0, rss=20 * 1048576,
           **extra):
    w = {"pid": pid, "generation": 2, "state": "ready", "busy": busy, "for": since,
         "age": 60.0, "requests": requests, "connections": int(busy), "rss": rss,
         "busy_seconds": busy_seconds, "doing": None, "doing_for": None}
    w.update(extra)
    return w


def report(*workers, pid=100, **extra):
    r = {"ok": True, "pid": pid, "target": "app:application", "generation": 2,
         "workers_wanted": 3, "phase": "running", "reloading": False, "reloads": 1,
         "workers": list(workers),
         "listeners": [{"name": "127.0.0.1:8000", "queue": 4, "backlog": 128},
                       {"name": "udp", "queue": None, "backlog": None}]}
    r.update(extra)
    return r


def test_rates_are_differences_between_two_reports():
    before = report(worker(1, 10, 0.5), worker(2, 0, 0.0), worker(3, 5, 1.0))
    after = report(worker(1, 30, 1.5), worker(2, 0, 0.0, busy=True, since=1.5),
                   worker(4, 7, 0.0))
    found = {r.pid: r for r in rows(before, after, 2.0)}
    assert found[1].rate == 10.0 and found[1].busy == 50.0
    # busy_seconds grows when a request ends; the one in flight counts meanwhile.
    assert found[2].rate == 0.0 and found[2].busy == 75.0
    assert found[2].activity == "busy 1s"
    # A worker new since the last report has no rate yet; one that left is gone.
    assert found[4].rate is None and found[4].busy is None and set(found) == {1, 2, 4}


def test_busy_is_clamped_and_first_report_has_no_rates():
    before = report(worker(1, 0, 0.0))
    after = report(worker(1, 5, 9.0))
    assert rows(before, after, 1.0)[0].busy == 100.0
    assert [r.rate for r in rows(None, after, 0.0)] == [None]
    assert busy_total(worker(1, busy_seconds=2.0, busy=True, since=0.5)) == 2.5
    assert busy_total({"pid": 1}) is None


def test_report_from_proc_has_dashes():
    # Through a pidfile only: no counts, no activity (see prefork status).
    proc = {"pid": 7, "workers": [{"pid": 8, "generation": 1, "state": "running",
                                   "busy": None, "for": 0.0, "age": 3.0, "requests": None,
                                   "rss": 0}], "note": "from /proc"}
    [row] = rows(proc, proc, 1.0)
    assert row.rate is None and row.busy is None and row.activity == "-"
    top = Top()
    top.update(proc, 0.0)
    text = "\n".join(top.lines(120, 40))
    assert "from /proc" in text and "reloads -" in text and "listen -" in text


def test_the_request_in_progress_is_shown_with_its_age():
    w = worker(1, busy=True, since=3.0, doing="GET /slow HTTP/1.1 from 10.0.0.1",
               doing_for=125.0)
    [row] = rows(None, report(w), 0.0)
    assert row.doing == "2m GET /slow HTTP/1.1 from 10.0.0.1"


def row(pid, rate=None, busy=None, rss=0, requests=None):
    return Row(pid, 1, "ready", requests, rate, busy, rss, "idle 1s", "")


def test_sort_orders_and_unknowns_last():
    found = [row(3, 1.0, 10.0, 300, 5), row(1, None, 90.0, 100, 9), row(2, 5.0, None, 200, 1)]
    pids = {key: [r.pid for r in sort_rows(found, key)] for key in SORTS}
    assert pids == {"pid": [1, 2, 3], "req/s": [2, 3, 1], "busy": [1, 3, 2],
                    "rss": [3, 2, 1], "requests": [1, 3, 2]}
    assert [r.pid for r in sort_rows(found, "pid", reverse=True)] == [3, 2, 1]
    assert [r.pid for r in sort_rows(found, "req/s", reverse=True)] == [3, 2, 1]
    # Ties: by PID, so lines do not jump between refreshes.
    tied = [row(5, 1.0), row(4, 1.0)]
    assert [r.pid for r in sort_rows(tied, "req/s")] == [4, 5]


def test_header_shows_pool_queues_and_reloads():
    lines = header_lines(report(worker(1, busy=True), worker(2), reloading=True))
    assert lines[0] == ("master 100  generation 2  running  reloading  workers 2/3  busy 1  "
                        "reloads 1")
    assert lines[1] == "listen 127.0.0.1:8000 queue 4/128  udp queue -/-"
    assert header_lines(report(), gone="no socket")[-1] == "MASTER GONE: no socket"


def test_keys_cycle_sort_and_reverse_and_quit():
    top = Top()
    seen = []
    for _ in SORTS:
        seen.append(SORTS[top.sort])
        assert top.key("s") is False
    assert seen == list(SORTS) and top.sort == 0
    top.key("r")
    assert top.reverse
    top.key("s")       # a new column starts in its own default order
    assert not top.reverse
    assert top.key("x") is False
    assert top.key("q") is True and top.key("Q") is True


def test_lines_fit_the_screen_and_mark_the_sort_column():
    top = Top(interval=0.5)
    top.update(report(worker(11, 0), worker(12, 0)), 10.0)
    top.update(report(worker(11, 4), worker(12, 8, doing="x" * 300, doing_for=1.0)), 12.0)
    lines = top.lines(80, 40)
    assert all(len(line) <= 80 for line in lines)
    assert lines[2] == "sort pid ascending  every 0.5s  keys: q quit  s sort  r reverse"
    assert lines[4].split()[:6] == ["PID*", "GEN", "STATE", "REQS", "REQ/S", "BUSY%"]
    assert [line.split()[0] for line in lines[5:]] == ["11", "12"]
    assert lines[5].split()[:5] == ["11", "2", "ready", "4", "2.0"]
    top.key("s")
    lines = top.lines(200, 40)
    assert "REQ/S*" in lines[4] and "sort req/s descending" in lines[2]
    assert [line.split()[0] for line in lines[5:]] == ["12", "11"]
    assert len(top.lines(200, 3)) == 3 and top.lines(0, 5) == [""] * 5


def test_a_new_master_resets_the_rates_and_a_lost_one_is_said():
    top = Top()
    top.update(report(worker(1, 5)), 0.0)
    top.update(report(worker(1, 50), pid=200), 1.0)    # upgraded: another master
    assert top.previous is None and top.lines(120, 40)[5].split()[4] == "-"
    top.lost("cannot reach the master at /x: No such file")
    assert "MASTER GONE: cannot reach the master at /x: No such file" in top.lines(120, 40)
    empty = Top()
    empty.lost("")
    assert empty.lines(120, 40)[:2] == ["waiting for the master...",
                                        "MASTER GONE: the master cannot be reached"]
