"""--reload: edits of the app's files start a new generation under looping clients.

Half the clients keep one connection open, half open a new one per request
(load_clients.Load); no request may fail across a good edit, an edit with a
syntax error (the last good generation keeps serving) and the fix.  Both
ways of seeing a change are run: watchfiles (when installed) and polling
(PREFORK_RELOAD_POLL=1).
"""

import http.client
import time
from pathlib import Path

import pytest

from harness import run_prefork, wait_until
from load_clients import Load

pytestmark = pytest.mark.integration

APP = '''\
from helper import VERSION

TEMPLATE = open("templates/page.txt").read().strip()


def app(environ, start_response):
    body = (TEMPLATE if environ["PATH_INFO"] == "/page" else VERSION).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

try:
    import watchfiles  # noqa: F401
    WATCHERS = ["watchfiles", "polling"]
except ImportError:
    WATCHERS = ["polling"]


def _get(address: tuple, path: str = "/") -> bytes:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def _wait_body(address: tuple, body: bytes, path: str = "/", timeout: float = 20.0) -> None:
    wait_until(lambda: _get(address, path) == body, timeout, f"{path} serving {body!r}")


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _project(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    _write(tmp_path / "templates" / "page.txt", "page one\n")
    _write(tmp_path / "helper.py", 'VERSION = "v1"\n')
    _write(tmp_path / "app.py", APP)


def _serve(prefork_server, tmp_path: Path, watcher: str, *extra: str):
    _project(tmp_path)
    env = {"PREFORK_RELOAD_POLL": "1" if watcher == "polling" else "0"}
    server = prefork_server("serve", "app:app", "-b", "127.0.0.1:0", "-w", "2",
                            "--reload", *extra, env=env)
    server.wait_ready()
    server.wait_for(f"with {watcher}")
    return server


@pytest.mark.timeout(120)
@pytest.mark.parametrize("watcher", WATCHERS)
def test_edits_reload_without_failures_and_a_syntax_error_keeps_the_last_good(
        prefork_server, tmp_path, watcher):
    server = _serve(prefork_server, tmp_path, watcher)
    assert _get(server.address) == b"v1"
    # Let the workers' module reports reach the master before the first edit.
    time.sleep(0.5)
    with Load(server.address, clients=4, path="/",
              check=lambda body: body in (b"v1", b"v2", b"v3")) as load:
        time.sleep(0.5)
        # An imported module, not the target's own: v2 after a bounded wait.
        _write(tmp_path / "helper.py", 'VERSION = "v2"\n')
        server.wait_for(r"file changed: .*helper\.py", timeout=15)
        server.wait_for(r"reload complete", timeout=20)
        _wait_body(server.address, b"v2")
        # A syntax error: the new generation fails to boot, v2 goes on serving.
        _write(tmp_path / "app.py", APP + "\ndef broken(:\n")
        server.wait_for(r"SyntaxError", timeout=15)
        server.wait_for(r"reload failed: .*generation \d+ keeps serving", timeout=20)
        time.sleep(0.5)
        assert _get(server.address) == b"v2"
        # The fix and a new version at once: picked up.
        _write(tmp_path / "helper.py", 'VERSION = "v3"\n')
        _write(tmp_path / "app.py", APP)
        server.wait_for(r"reload complete", count=2, timeout=20)
        _wait_body(server.address, b"v3")
        time.sleep(0.5)     # load on the new generation while the old one drains
        served = load.count()
    assert load.failed == [], load.failed[:5]
    assert served > 50, served
    assert b"v2" in load.bodies and b"v3" in load.bodies


@pytest.mark.timeout(60)
@pytest.mark.parametrize("watcher", WATCHERS)
def test_a_file_matching_reload_extra_file_triggers_a_reload(prefork_server, tmp_path,
                                                              watcher):
    server = _serve(prefork_server, tmp_path, watcher,
                    "--reload-extra-file", "templates/*.txt")
    assert _get(server.address, "/page") == b"page one"
    _write(tmp_path / "templates" / "page.txt", "page two\n")
    server.wait_for(r"file changed: .*page\.txt", timeout=15)
    _wait_body(server.address, b"page two", "/page")
    # Several saves in a row make one reload.
    for n in range(3):
        _write(tmp_path / "templates" / "page.txt", f"page three {n}\n")
        time.sleep(0.05)
    _wait_body(server.address, b"page three 2", "/page")
    time.sleep(1.5)
    assert len(server.wait_for(r"reload complete", count=2)) == 2
    assert server.log().count("file changed") == 2, server.log()


def test_reload_without_a_change_does_nothing(prefork_server, tmp_path):
    server = _serve(prefork_server, tmp_path, "polling")
    time.sleep(2.5)
    assert "file changed" not in server.log()
    assert _get(server.address) == b"v1"


def test_reload_with_preload_is_refused(tmp_path):
    _project(tmp_path)
    done = run_prefork(["check", "app:app", "--reload", "--preload"], tmp_path)
    assert done.returncode == 2, done
    assert "reload cannot be combined with preload" in done.stderr
