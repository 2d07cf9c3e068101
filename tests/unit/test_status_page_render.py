"""The /status page renderer, its rate history, and the routing of /status(.json)."""

import json
import re
from html.parser import HTMLParser

from prefork import status_page
from prefork.status_page import History, chart, rates, render
from prefork.supervisor.metrics_server import Site, respond


def worker(pid, requests=0, busy=False, doing=None, busy_seconds=0.0, **more):
    w = {"pid": pid, "generation": 1, "state": "ready", "busy": busy, "for": 2.0,
         "age": 10.0, "requests": requests, "connections": int(busy), "rss": 20 << 20,
         "busy_seconds": busy_seconds, "doing": doing, "doing_for": 2.0 if doing else None}
    w.update(more)
    return w


def report(*workers, **more):
    r = {"pid": 100, "target": "app:main", "generation": 3, "workers_wanted": 2,
         "phase": "running", "reloading": False, "rss": 1, "started": 0.0,
         "workers": list(workers), "reloads": 2, "restarts": {"crash": 1},
         "listeners": [{"name": "127.0.0.1:8000", "queue": 4, "backlog": 128}]}
    r.update(more)
    return r


class Tags(HTMLParser):
    """Every start tag seen, to check the page parses and has no script."""

    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html):
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def test_page_has_the_summary_listeners_and_a_row_per_worker():
    page = render(report(worker(11, 5), worker(12, 7, busy=True)), [], now=100.0)
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta http-equiv="refresh" content="5">' in page
    for text in ("prefork 100 status", "app:main", "2 running / 2 wanted, 1 busy",
                 "127.0.0.1:8000", ">4<", ">128<", "crash 1"):
        assert text in page, text
    cells = re.findall(r"<tr[^>]*><td class=n>(\d+)</td>", page)
    assert cells == ["11", "12"]
    assert '<tr class="busy"><td class=n>12<' in page


def test_page_is_self_contained():
    page = render(report(worker(11)), [(0.0, 0), (5.0, 10)], now=6.0)
    found = tags(page)
    names = {t for t, _ in found}
    assert "script" not in names and "link" not in names and "img" not in names
    assert not re.search(r"(src|href)=\"?https?:", page)
    assert "svg" in names


def test_everything_from_the_report_is_escaped():
    evil = '"GET /<script>alert(1)</script>&x=\'y\' HTTP/1.1" from 1.2.3.4:5'
    page = render(report(worker(11, busy=True, doing=evil, state="<b>"),
                         target="<img src=x onerror=alert(1)>",
                         listeners=[{"name": "<i>", "queue": None, "backlog": None}]),
                  [], now=1.0)
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;x=&#x27;y&#x27;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert {t for t, _ in tags(page)} <= {"html", "head", "meta", "title", "style", "body",
                                          "h1", "h2", "dl", "dt", "dd", "table", "tr",
                                          "th", "td", "code", "svg", "line", "text", "p",
                                          "a", "rect"}


def test_chart_with_no_sample():
    svg = chart([], now=50.0)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "no samples yet" in svg and "<rect" not in svg
    assert 'data-samples="0"' in svg


def test_chart_with_one_sample():
    svg = chart([(10.0, 3)], now=12.0)
    assert "1 sample so far" in svg and "<rect" not in svg


def test_chart_with_many_samples_draws_a_bar_per_interval_scaled_to_the_peak():
    samples = [(100.0 + 5 * i, n) for i, n in enumerate([0, 10, 30, 30, 80])]
    svg = chart(samples, now=121.0, span=600.0)
    bars = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"',
                      svg)
    assert len(bars) == 4
    heights = [float(b[3]) for b in bars]
    assert heights[2] == 0.0
    assert heights[3] == max(heights) and heights[3] > heights[1] > heights[0]
    assert "peak 10.0 req/s, last 10.0 req/s" in svg
    xs = [float(b[0]) for b in bars]
    assert xs == sorted(xs) and all(0 <= x <= status_page.CHART_W for x in xs)


def test_chart_leaves_out_what_is_older_than_the_span():
    samples = [(0.0, 0), (5.0, 50), (700.0, 50), (705.0, 60)]
    svg = chart(samples, now=706.0, span=600.0)
    assert svg.count("<rect") == 2     # 5..700 reaches into the span, 0..5 does not
    assert "peak 2.0 req/s" in svg


def test_rates_between_samples_never_negative():
    assert rates([]) == [] and rates([(1.0, 5)]) == []
    assert rates([(0.0, 0), (2.0, 10), (4.0, 4)]) == [(0.0, 2.0, 5.0), (2.0, 4.0, 0.0)]


def test_history_counts_across_worker_replacement_and_keeps_a_ring():
    h = History(step=5.0, span=20.0)
    assert h.due(0.0)
    h.add(0.0, report(worker(1, 10), worker(2, 0)))
    assert not h.due(4.9) and h.due(5.0)
    h.add(5.0, report(worker(1, 15), worker(3, 2)))     # 2 replaced by 3
    h.add(10.0, report(worker(1, 15), worker(3, 6)))
    assert list(h.samples) == [(0.0, 10), (5.0, 17), (10.0, 21)]
    for t in (15.0, 20.0, 25.0, 30.0):
        h.add(t, report(worker(1, 15), worker(3, 6)))
    assert len(h.samples) == 5 and h.samples[0][0] == 10.0
    assert h.previous(30.5) == (25.0, h.reports[0][1])     # the newest is too recent
    assert h.previous(31.0)[0] == 30.0


def test_a_new_master_resumes_the_history_it_was_bequeathed():
    old = History(step=5.0, span=20.0)
    for t, count in ((0.0, 10), (5.0, 20), (10.0, 30), (15.0, 40), (20.0, 50), (25.0, 60)):
        old.add(t, report(worker(1, count)))
    bequeathed = [[taken, total] for taken, total in old.samples]   # through JSON
    new = History(step=5.0, span=20.0)
    new.resume(bequeathed)
    assert list(new.samples) == list(old.samples)
    # The new master's workers count from 0 on top of the old total.
    new.add(30.0, report(worker(7, 4)))
    assert new.samples[-1] == (30.0, 64) and len(new.samples) == 5
    empty = History()
    empty.resume([])
    assert list(empty.samples) == [] and empty.due(0.0)


def test_per_worker_rates_come_from_the_previous_report():
    before = report(worker(11, 10, busy_seconds=1.0))
    now = report(worker(11, 30, busy_seconds=3.0))
    page = render(now, [], now=20.0, previous=(10.0, before))
    row = re.search(r"<tr><td class=n>11</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[3] == "2.0" and cells[4] == "20"     # req/s, busy %


def test_json_is_the_report():
    r = report(worker(11))
    assert json.loads(status_page.to_json(r)) == r


def split(response: bytes):
    head, body = response.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields, body


def site():
    history = History()
    history.add(0.0, report(worker(11, 0)))
    history.add(5.0, report(worker(11, 50)))
    return Site(lambda: "metric 1\n", lambda: report(worker(11, 50)), history,
                clock=lambda: 7.0)


def test_site_routes_status_json_and_metrics():
    s = site()
    code, fields, body = split(respond(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", s))
    assert code == 200 and fields["Content-Type"] == "text/html; charset=utf-8"
    assert b"<td class=n>11</td>" in body and b"peak 10.0 req/s" in body
    code, fields, body = split(respond(b"GET /status.json?x=1 HTTP/1.0\r\n\r\n", s))
    assert code == 200 and fields["Content-Type"] == "application/json"
    assert json.loads(body)["workers"][0]["pid"] == 11
    code, fields, body = split(respond(b"GET /metrics HTTP/1.1\r\n\r\n", s))
    assert code == 200 and body == b"metric 1\n" and s() == "metric 1\n"
    code, _, body = split(respond(b"GET /status/ HTTP/1.1\r\n\r\n", s))
    assert code == 404 and b"/status.json" in body
    code, _, body = split(respond(b"HEAD /status HTTP/1.1\r\n\r\n", s))
    assert code == 200 and body == b""
    code, fields, _ = split(respond(b"POST /status HTTP/1.1\r\n\r\n", s))
    assert code == 405


def test_a_plain_render_serves_only_metrics():
    code, _, body = split(respond(b"GET /status HTTP/1.1\r\n\r\n", lambda: "m 1\n"))
    assert code == 404 and b"/metrics" in body


def test_a_broken_page_is_a_500_not_a_crash():
    def broken():
        raise RuntimeError("bug")
    s = Site(lambda: "m\n", broken, History())
    assert split(respond(b"GET /status HTTP/1.1\r\n\r\n", s))[0] == 500
    assert split(respond(b"GET /status.json HTTP/1.1\r\n\r\n", s))[0] == 500
