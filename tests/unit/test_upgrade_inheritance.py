"""What a new master reads from PREFORK_UPGRADE: the old master's fds and state."""

import json
import os

import pytest

from prefork.supervisor.upgrade import ENV, Inheritance, inherited


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_the_inheritance_round_trips_and_the_variable_is_removed(pipe, monkeypatch):
    sent = Inheritance(ready=pipe[1], generation=3, history=[[1.5, 10], [6.5, 42]])
    monkeypatch.setenv(ENV, sent.encode())
    got = inherited()
    assert got == sent and ENV not in os.environ
    assert not os.get_inheritable(pipe[1])


def test_what_a_newer_master_adds_is_left_so_a_usr2_back_to_this_version_works(pipe,
                                                                               monkeypatch):
    data = json.loads(Inheritance(ready=pipe[1], generation=2).encode())
    data["a_later_field"] = {"anything": 1}
    monkeypatch.setenv(ENV, json.dumps(data))
    got = inherited()
    assert got.generation == 2 and got.ready == pipe[1] and got.history == []


def test_a_bad_inheritance_stops_the_new_master_saying_why(monkeypatch):
    monkeypatch.setenv(ENV, json.dumps({"ready": 987654}))      # not an open fd
    with pytest.raises(SystemExit, match="bad PREFORK_UPGRADE"):
        inherited()
