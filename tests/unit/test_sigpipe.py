"""SignalPipe: signals become bytes on its pipe, once each, even while an event loop
(uvloop, as it starts) holds the wakeup fd.  Real signals sent to this process."""

from __future__ import annotations

import os
import signal

import pytest

from prefork.sigpipe import SignalPipe


@pytest.fixture
def pipe():
    pipe = SignalPipe([signal.SIGUSR1, signal.SIGUSR2])
    try:
        yield pipe
    finally:
        pipe.close()


def test_each_signal_arrives_once_in_order(pipe):
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR2)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert pipe.read() == [signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1]
    assert pipe.read() == []


def test_a_signal_while_another_pipe_holds_the_wakeup_fd_is_not_lost(pipe):
    # What uvloop does when it starts running: the wakeup fd points at its pipe.
    theirs_r, theirs_w = os.pipe()
    os.set_blocking(theirs_w, False)
    try:
        assert signal.set_wakeup_fd(theirs_w) == pipe._w
        os.kill(os.getpid(), signal.SIGUSR1)
        assert pipe.read() == [signal.SIGUSR1]
        # ...and the wakeup fd is this pipe's again: the next one is not doubled.
        assert signal.set_wakeup_fd(pipe._w) == pipe._w
        os.kill(os.getpid(), signal.SIGUSR2)
        assert pipe.read() == [signal.SIGUSR2]
    finally:
        os.close(theirs_r)
        os.close(theirs_w)


def test_close_restores_the_defaults():
    pipe = SignalPipe([signal.SIGUSR1])
    pipe.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1
