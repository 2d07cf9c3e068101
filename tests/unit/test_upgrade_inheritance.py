"""What a new master reads from PREFORK_UPGRADE: the old master's fds and state."""

import json
import os

import pytest

from prefork.supervisor.upgrade import ENV, HISTORY_ENV, Inheritance, inherited


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_the_inheritance_round_trips_and_the_variable_is_removed(pipe, monkeypatch):
    sent = Inheritance(ready=pipe[1], generation=3, history=[[1.5, 10], [6.5, 42]])
    for name, value in sent.encode().items():
        monkeypatch.setenv(name, value)
    got = inherited()
    assert got == sent and ENV not in os.environ and HISTORY_ENV not in os.environ
    assert not os.get_inheritable(pipe[1])


def test_the_history_travels_apart_so_an_older_master_is_not_refused_for_it(pipe):
    variables = Inheritance(ready=pipe[1], history=[[1.5, 10]]).encode()
    assert "history" not in json.loads(variables[ENV])
    assert json.loads(variables[HISTORY_ENV]) == [[1.5, 10]]


@pytest.mark.parametrize("history", ["not json", '{"a": 1}', '[[1, "x"]]', '[[1, 2, 3]]'])
def test_a_history_that_is_not_understood_is_dropped_not_fatal(pipe, monkeypatch, history):
    variables = Inheritance(ready=pipe[1]).encode()
    monkeypatch.setenv(ENV, variables[ENV])
    monkeypatch.setenv(HISTORY_ENV, history)
    assert inherited().history == []


def test_what_a_newer_master_adds_is_left_so_a_usr2_back_to_this_version_works(pipe,
                                                                               monkeypatch):
    data = json.loads(Inheritance(ready=pipe[1], generation=2).encode()[ENV])
    data["a_later_field"] = {"anything": 1}
    monkeypatch.setenv(ENV, json.dumps(data))
    got = inherited()
    assert got.generation == 2 and got.ready == pipe[1] and got.history == []


def test_a_bad_inheritance_stops_the_new_master_saying_why(monkeypatch):
    monkeypatch.setenv(ENV, json.dumps({"ready": 987654}))      # not an open fd
    with pytest.raises(SystemExit, match="bad PREFORK_UPGRADE"):
        inherited()
