"""The scoreboard's slots: what the master writes, what a worker writes, what is read back."""

import pytest

from prefork.scoreboard import (BOOTING, DOING_SIZE, DRAINING, FREE, READY, STATE_NAMES,
                                Scoreboard, SlotView)


@pytest.fixture
def board():
    b = Scoreboard(4)
    yield b
    b.close()


def test_a_new_scoreboard_is_all_free(board):
    assert list(board) == []
    assert board.read(3) == SlotView(3, 0, 0, FREE, 0, 0, 0.0, 0.0, 0.0)
    assert STATE_NAMES == {FREE: "free", BOOTING: "booting", READY: "ready",
                           DRAINING: "draining"}


def test_claim_resets_the_slot_for_a_booting_worker(board):
    board.claim(1, 4242, 3, 100.5)
    assert board.read(1) == SlotView(1, 4242, 3, BOOTING, 0, 0, 100.5, 100.5, 0.0)
    assert list(board) == [board.read(1)]
    assert board.heartbeat_of(1) == 100.5


def test_set_pid(board):
    # The master claims before fork (pid 0), then fills in the child's PID.
    board.claim(2, 0, 1, 5.0)
    assert list(board) == []
    board.set_pid(2, 777)
    assert board.read(2).pid == 777 and board.read(2).booted == 5.0


def test_heartbeat_and_state_are_visible_to_the_master(board):
    board.claim(0, 10, 1, 1.0)
    slot = board.slot(0)
    slot.heartbeat(7.25)
    slot.set_state(READY)
    view = board.read(0)
    assert (view.heartbeat, view.state, view.booted) == (7.25, READY, 1.0)
    assert board.heartbeat_of(0) == 7.25
    slot.set_state(DRAINING)
    assert board.read(0).state == DRAINING


def test_request_counters(board):
    board.claim(0, 10, 1, 1.0)
    slot = board.slot(0)
    slot.request_started(20.0)
    view = board.read(0)
    assert (view.requests, view.connections, view.request_start) == (0, 1, 20.0)
    slot.request_started(21.0)
    assert board.read(0).connections == 2
    slot.request_finished(22.0)
    view = board.read(0)
    assert (view.requests, view.connections) == (1, 1)
    assert view.request_start == 20.0            # a request is still in progress
    slot.request_finished(23.0)
    view = board.read(0)
    # Idle now: request_start holds when the worker became idle.
    assert (view.requests, view.connections, view.request_start) == (2, 0, 23.0)


def test_busy_seconds_count_time_with_a_request_in_flight(board):
    board.claim(0, 10, 1, 1.0)
    slot = board.slot(0)
    slot.request_started(10.0)
    slot.request_started(11.0)       # overlapping (thread worker): counted once
    slot.request_finished(12.0)
    assert board.read(0).busy_seconds == 0.0     # still busy: added when it ends
    slot.request_finished(13.0)
    assert board.read(0).busy_seconds == 3.0
    slot.request_started(20.0)       # the idle gap 13..20 is not counted
    slot.request_finished(20.5)
    assert board.read(0).busy_seconds == 3.5


def test_release_frees_the_slot(board):
    board.claim(1, 11, 2, 3.0)
    slot = board.slot(1)
    slot.request_started(4.0)
    slot.request_finished(5.0)
    board.release(1)
    assert board.read(1) == SlotView(1, 0, 0, FREE, 0, 0, 0.0, 0.0, 0.0)
    assert list(board) == []


def test_a_reclaimed_slot_starts_from_zero(board):
    board.claim(1, 11, 1, 3.0)
    old = board.slot(1)
    for _ in range(5):
        old.request_started(4.0)
        old.request_finished(5.0)
    board.claim(1, 12, 2, 9.0)
    assert board.read(1) == SlotView(1, 12, 2, BOOTING, 0, 0, 9.0, 9.0, 0.0)
    new = board.slot(1)
    new.request_started(10.0)
    new.request_finished(11.0)
    assert board.read(1).requests == 1


def test_slots_do_not_overlap(board):
    for i in range(4):
        board.claim(i, 100 + i, i + 1, float(i))
    for i in range(4):
        s = board.slot(i)
        s.heartbeat(1e9 + i)
        s.set_state(READY)
        s.request_started(2e9 + i)
    board.release(2)
    views = {v.slot: v for v in board}
    assert sorted(views) == [0, 1, 3]
    for i in (0, 1, 3):
        assert views[i] == SlotView(i, 100 + i, i + 1, READY, 0, 1, float(i), 1e9 + i, 2e9 + i)


def test_iteration_skips_free_slots_in_order(board):
    board.claim(3, 33, 1, 0.0)
    board.claim(0, 30, 1, 0.0)
    assert [v.pid for v in board] == [30, 33]


def test_the_request_running_longest_is_shown_with_its_text(board):
    board.claim(2, 20, 1, 1.0)
    slot = board.slot(2)
    assert board.running(2) == (0.0, "")
    slot.show_running(5.5, '"GET /é HTTP/1.1" from 127.0.0.1:4000'.encode())
    assert board.running(2) == (5.5, '"GET /é HTTP/1.1" from 127.0.0.1:4000')
    view = board.read(2)
    assert (view.running_since, view.doing) == (5.5, '"GET /é HTTP/1.1" from 127.0.0.1:4000')
    slot.show_running(6.0, b"short")      # a shorter text leaves nothing of the longer one
    assert board.running(2) == (6.0, "short")
    slot.show_idle()
    assert board.running(2) == (0.0, "")
    assert board.read(2).requests == 0 and board.read(1).running_since == 0.0


def test_a_long_description_is_cut_to_the_field(board):
    board.claim(0, 10, 1, 1.0)
    board.slot(0).show_running(2.0, b"x" * 1000)
    since, doing = board.running(0)
    assert len(doing) == DOING_SIZE and doing.endswith("...")
    assert board.read(1).pid == 0      # the next slot is untouched


def test_claim_and_release_forget_the_request(board):
    board.claim(0, 10, 1, 1.0)
    board.slot(0).show_running(2.0, b"old")
    board.release(0)
    assert board.running(0) == (0.0, "")
    board.slot(0).show_running(2.0, b"old")
    board.claim(0, 11, 2, 3.0)
    assert board.running(0) == (0.0, "")


def test_served_counts_finished_and_in_flight_requests(board):
    board.claim(0, 10, 1, 1.0)
    slot = board.slot(0)
    assert board.served(0) == 0
    slot.request_started(2.0)
    assert board.served(0) == 1
    slot.request_finished(3.0)
    slot.request_started(4.0)
    assert board.served(0) == 2
    board.claim(0, 11, 2, 5.0)
    assert board.served(0) == 0


def test_a_finished_request_is_a_heartbeat_too(board):
    board.claim(0, 10, 1, 1.0)
    slot = board.slot(0)
    slot.request_started(2.0)
    assert board.heartbeat_of(0) == 1.0      # starting is not: the job may hang
    slot.request_finished(7.5)
    view = board.read(0)
    assert view.heartbeat == 7.5 and view.requests == 1 and view.connections == 0
    assert view.request_start == 7.5 and view.busy_seconds == 5.5
