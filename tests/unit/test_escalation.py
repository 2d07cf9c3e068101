"""Signal, then KILL: the one escalation the arbiter uses for workers and new masters."""

import signal

from prefork.supervisor.escalation import Escalation

T = 1000.0


def test_unarmed_nothing_is_due():
    e = Escalation()
    assert not e.armed and e.due(T) is None


def test_kill_at_the_deadline():
    e = Escalation()
    e.arm(T + 2)
    assert e.due(T + 1.99) is None
    assert e.due(T + 2) == signal.SIGKILL
    assert e.killed and not e.armed and e.due(T + 10) is None


def test_a_first_signal_then_kill_after_the_grace():
    e = Escalation()
    e.arm(T + 30, signal.SIGABRT, 2.0)
    assert e.due(T + 30) == signal.SIGABRT and e.warned
    assert e.at == T + 32 and e.due(T + 31) is None
    assert e.due(T + 32) == signal.SIGKILL


def test_a_second_arming_never_gives_more_time():
    e = Escalation()
    e.arm(T + 2)
    e.arm(T + 30, signal.SIGABRT, 2.0)     # a graceful stop after an abort
    assert e.at == T + 2 and e.due(T + 2) == signal.SIGABRT
    e = Escalation()
    e.arm(T + 30, signal.SIGABRT, 2.0)
    e.arm(T + 5)                           # a fast stop after a graceful one
    assert e.due(T + 5) == signal.SIGKILL
