"""--reload's pure parts and its polling watcher, driven with explicit clocks."""

import os
import sys
import types
from pathlib import Path

import pytest

from prefork import config as config_mod
from prefork.errors import ConfigError
from prefork.reports import ReportPipe, module_files
from prefork.supervisor import reloader
from prefork.supervisor.events import ReloadWanted
from prefork.supervisor.reloader import Debouncer, Reloader, glob_root


@pytest.mark.parametrize("pattern, root", [
    ("templates/*.html", "templates"),
    ("templates/**/*.html", "templates"),
    ("/srv/app/conf/site.ini", "/srv/app/conf"),
    ("*.txt", "."),
    ("/a/b*/c", "/a"),
])
def test_glob_root(pattern, root):
    assert glob_root(pattern) == root


def test_debouncer_gives_one_path_once_changes_settle():
    d = Debouncer(0.3)
    assert d.deadline() is None and d.due(0.0) is None
    d.saw("a.py", 10.0)
    d.saw("b.py", 10.2)
    assert d.deadline() == pytest.approx(10.5)
    assert d.due(10.4) is None
    assert d.due(10.5) == "a.py"
    assert d.due(11.0) is None and d.deadline() is None


def test_module_files_keeps_the_apps_own_sources(tmp_path):
    own = tmp_path / "app.py"
    own.write_text("")
    modules = [types.SimpleNamespace(__file__=str(own)), os, sys,   # sys has no __file__
               types.SimpleNamespace(__file__=pytest.__file__),     # installed
               types.SimpleNamespace(__file__=reloader.__file__),   # prefork's own
               types.SimpleNamespace(__file__=str(tmp_path / "gone.py")),
               types.SimpleNamespace(__file__=str(tmp_path / "native.so"))]
    assert module_files(modules) == [str(own.resolve())]
    traced = tmp_path / "broken.py"
    traced.write_text("def (")
    assert module_files([], [str(traced)]) == [str(traced.resolve())]


def test_report_modules_writes_one_file_per_worker_only_when_asked(tmp_path):
    pipe = ReportPipe()
    try:
        pipe.report_modules(123)        # reload off: nothing, nowhere
        pipe.modules_dir = str(tmp_path)
        broken = tmp_path / "broken.py"
        broken.write_text("def (")
        pipe.report_modules(123, f'  File "{broken}", line 1\nSyntaxError: invalid syntax')
    finally:
        pipe.close()
    assert sorted(os.listdir(tmp_path)) == ["123", "broken.py"]
    assert str(broken.resolve()) in (tmp_path / "123").read_text().splitlines()


def _config(**values):
    return config_mod.build({}, {"target": "app:app", **values})


def test_reload_with_preload_is_a_config_error():
    with pytest.raises(ConfigError, match="reload cannot be combined with preload"):
        _config(reload=True, preload=True)
    assert _config(reload=True).reload_extra_file == ()
    assert _config(reload_extra_file=["a/*.txt"]).reload_extra_file == ("a/*.txt",)
    assert config_mod.build({"reload_extra_file": []}, {}).reload_extra_file == ()


def test_reload_off_does_nothing():
    pipe = ReportPipe()
    try:
        r = Reloader(_config(), pipe)
        assert not pipe.modules_dir
        assert r.waiting() == [] and r.next_deadline() is None and r.events([], 5.0) == []
        r.close()
    finally:
        pipe.close()


@pytest.fixture
def polling(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFORK_RELOAD_POLL", "1")
    monkeypatch.chdir(tmp_path)
    made = []

    def make(*patterns):
        pipe = ReportPipe()
        r = Reloader(_config(reload=True, reload_extra_file=list(patterns)), pipe)
        made.append((r, pipe))
        return r, pipe

    yield make
    for r, pipe in made:
        r.close()
        pipe.close()


def _report(pipe: ReportPipe, pid: int, *files: Path) -> None:
    Path(pipe.modules_dir, str(pid)).write_text("\n".join(str(f) for f in files))


def _touch(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # a coarse clock moves too


def test_polling_reload_of_a_reported_module_debounced(polling, tmp_path):
    app = tmp_path / "app.py"
    app.write_text("v1")
    r, pipe = polling()
    assert r.waiting() == [] and os.path.isdir(pipe.modules_dir)
    _report(pipe, 7, app)
    assert r.events([], 0.0) == []          # reported: watched, not a change
    assert os.listdir(pipe.modules_dir) == []
    assert r.events([], 1.0) == []
    _touch(app, "v2")
    assert r.events([], 2.0) == []          # seen, settling
    assert r.next_deadline() == pytest.approx(2.0 + reloader.DEBOUNCE / 3)
    _touch(app, "v3")
    assert r.events([], 2.1) == []          # a second save in the burst
    assert r.events([], 2.3) == []
    assert r.events([], 2.45) == [ReloadWanted(f"file changed: {app}")]
    assert r.events([], 4.0) == []          # one reload for the burst
    directory = pipe.modules_dir
    r.close()
    assert not os.path.exists(directory)


def test_polling_sees_new_and_changed_files_matching_a_glob(polling, tmp_path):
    (tmp_path / "templates").mkdir()
    page = tmp_path / "templates" / "page.txt"
    page.write_text("one")
    r, _ = polling("templates/*.txt")
    assert r.events([], 0.0) == []
    _touch(page, "two")
    r.events([], 1.0)
    assert r.events([], 1.5) == [ReloadWanted(f"file changed: {page}")]
    new = tmp_path / "templates" / "new.txt"
    new.write_text("x")
    r.events([], 3.0)
    assert r.events([], 3.5) == [ReloadWanted(f"file changed: {new}")]
    (tmp_path / "templates" / "other.html").write_text("x")
    r.events([], 5.0)
    assert r.events([], 5.5) == []
