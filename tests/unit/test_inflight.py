"""The worker's side of request_timeout: which request its slot shows, and since when."""

import threading

import pytest

from prefork.scoreboard import Scoreboard
from prefork.addresses import client
from prefork.worker.inflight import AsyncInFlight, InFlight, ThreadedInFlight, tracker

BOTH = pytest.mark.parametrize("kind", [InFlight, ThreadedInFlight])


class Clock:
    def __init__(self):
        self.now = 100.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def board():
    b = Scoreboard(2)
    b.claim(0, 10, 1, 1.0)
    yield b
    b.close()


def test_the_kind_follows_the_dispatcher(board):
    assert type(tracker(board.slot(0), False)) is InFlight
    assert type(tracker(board.slot(0), True)) is ThreadedInFlight


@BOTH
def test_a_job_is_shown_while_it_runs_and_described_once(board, clock, kind):
    calls = []

    def describe():
        calls.append(1)
        return '"GET / HTTP/1.1" from 127.0.0.1:5000'

    requests = kind(board.slot(0), clock.monotonic)
    requests.begin(describe)
    assert board.running(0) == (100.0, '"GET / HTTP/1.1" from 127.0.0.1:5000')
    requests.end()
    assert board.running(0) == (0.0, "") and calls == [1]


def test_a_timed_job_is_shown_only_while_it_runs_even_if_it_fails(board, clock):
    requests = ThreadedInFlight(board.slot(0), clock.monotonic)
    seen = []

    def boom():
        seen.append(board.running(0))
        raise RuntimeError("boom")
    job = requests.timed(boom, lambda: "x")
    assert board.running(0) == (0.0, "")     # wrapping is not starting
    with pytest.raises(RuntimeError):
        job()
    assert seen == [(100.0, "x")] and board.running(0) == (0.0, "")


def test_the_oldest_of_concurrent_requests_is_shown(board, clock):
    tracker = ThreadedInFlight(board.slot(0), clock.monotonic)
    release = {name: threading.Event() for name in "ABC"}
    started = {name: threading.Event() for name in "ABC"}

    def start(name, at):
        clock.now = at

        def job():
            started[name].set()
            release[name].wait(5)
        t = threading.Thread(target=tracker.timed(job, lambda: f"request {name}"))
        t.start()
        assert started[name].wait(5)
        return t

    def finish(name, thread):
        release[name].set()
        thread.join(5)

    a = start("A", 10.0)
    b = start("B", 11.0)
    c = start("C", 12.0)
    assert board.running(0) == (10.0, "request A")
    finish("B", b)                       # not the one shown: nothing changes
    assert board.running(0) == (10.0, "request A")
    finish("A", a)                       # the next oldest takes its place
    assert board.running(0) == (12.0, "request C")
    finish("C", c)
    assert board.running(0) == (0.0, "")


@BOTH
def test_waiting_for_the_client_does_not_count(board, clock, kind):
    requests = kind(board.slot(0), clock.monotonic)
    requests.begin(lambda: "EchoHandler for 127.0.0.1:5000")
    clock.now = 101.0
    requests.pause()                 # blocked in recv: an idle keep-alive connection
    assert board.running(0) == (0.0, "")
    clock.now = 130.0
    requests.resume()                # the next request arrived
    assert board.running(0) == (130.0, "EchoHandler for 127.0.0.1:5000")
    requests.end()
    assert board.running(0) == (0.0, "")


@BOTH
def test_pause_and_resume_outside_a_request_do_nothing(board, clock, kind):
    requests = kind(board.slot(0), clock.monotonic)
    requests.pause()
    requests.resume()
    assert board.running(0) == (0.0, "")


@pytest.mark.parametrize("address, text", [
    (("127.0.0.1", 4000), "127.0.0.1:4000"),
    (("::1", 4000, 0, 0), "[::1]:4000"),
    ("/run/app.sock", "/run/app.sock"),
    ("", "a client"),
])
def test_client(address, text):
    assert client(address) == text


class Shown:
    """A request as the asyncio worker hands it over; counts how often it is formatted."""

    def __init__(self, name):
        self.name, self.formatted = name, 0

    def shown_as(self):
        self.formatted += 1
        return self.name


def test_asyncio_requests_show_the_oldest_still_open(board):
    requests = AsyncInFlight(board.slot(0))
    a, b, c = Shown('"GET /a HTTP/1.1"'), Shown('"GET /b HTTP/1.1"'), Shown('"GET /c HTTP/1.1"')
    requests.begin(a, 10.0)
    requests.begin(b, 11.0)
    requests.begin(c, 12.0)
    assert board.running(0) == (10.0, a.name)
    requests.end(b)                      # not the one shown: nothing rewritten
    assert board.running(0) == (10.0, a.name)
    requests.end(a)
    assert board.running(0) == (12.0, c.name)
    requests.end(c)
    assert board.running(0) == (0.0, "")
    # Only a request that became the one shown was ever formatted.
    assert (a.formatted, b.formatted, c.formatted) == (1, 0, 1)


def test_asyncio_end_of_an_unknown_request_is_ignored(board):
    requests = AsyncInFlight(board.slot(0))
    a = Shown("a")
    requests.begin(a, 5.0)
    requests.end(Shown("b"))
    requests.end(a)
    requests.end(a)
    assert board.running(0) == (0.0, "")


def test_a_worker_that_times_its_own_requests_says_so_until_the_slot_is_reused(board):
    assert not board.times_own_requests(0)
    board.slot(0).times_own_requests()
    assert board.times_own_requests(0)
    board.claim(0, 11, 2, 2.0)
    assert not board.times_own_requests(0)
