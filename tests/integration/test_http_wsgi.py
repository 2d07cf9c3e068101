"""PEP 3333 end to end: write(), close(), wsgi.file_wrapper, app errors, wsgiref's
validator, SCRIPT_NAME from --root-path, and the access log in both formats.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime

import pytest

from harness import wait_until
from http_helpers import Conn, get, serving, start, wsgiapps

pytestmark = pytest.mark.integration

FILE_SIZE = 8 << 20
COMBINED = re.compile(r'^(\S+) - - \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) '
                      r'"((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsgi-files")
    data = root / "payload.bin"
    data.write_bytes(os.urandom(FILE_SIZE))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, files):
    with serving(tmp_path_factory, "wsgi", "router", "-w", "1", "-k", "sync",
                 "--access-log", str(files / "access.log"),
                 env={wsgiapps.FILE_ENV: str(files / "payload.bin")}) as served:
        yield served


def access_lines(path, count: int, timeout: float = 10.0) -> list:
    """The access log once it has ``count`` lines (each is written after its response)."""
    def lines():
        return path.read_text().splitlines() if path.exists() else []
    wait_until(lambda: len(lines()) >= count, timeout, f"{count} access log lines")
    return lines()


@pytest.mark.timeout(20)
def test_write_callable_then_iterable(server):
    resp = get(server.address, "/write/")
    assert resp.status == 200 and resp.body == b"one,two,three,four"


@pytest.mark.timeout(20)
def test_close_is_called_after_the_response(server):
    resp = get(server.address, "/closing/?id=plain&chunks=3&size=5")
    assert resp.body == b"x" * 15
    server.wait_record("plain", "close")


@pytest.mark.timeout(20)
def test_close_is_called_when_the_iterable_fails(server):
    resp = get(server.address, "/closing/?id=fails&chunks=3&size=5&fail=1")
    assert resp.status == 500
    server.wait_record("fails", "close")
    assert "boom from ClosingBody mid-iteration" in server.log()


@pytest.mark.timeout(30)
def test_close_is_called_when_the_client_disconnects_mid_response(server):
    # ~130 MiB, 5 ms between 64 KiB pieces: the response is still being
    # produced long after the client has gone.
    with Conn(server.address) as conn:
        conn.send(b"GET /closing/?id=gone&chunks=2000&size=65536&delay=0.005 HTTP/1.1\r\n"
                  b"Host: t\r\n\r\n")
        assert conn.reader.readline().startswith(b"HTTP/1.1 200")
        conn.reader.read(1 << 20)
    server.wait_record("gone", "close", timeout=5)
    assert get(server.address, "/alive").status == 200


@pytest.mark.timeout(30)
def test_file_wrapper_serves_a_real_file_intact(server, files):
    digest = hashlib.sha256((files / "payload.bin").read_bytes()).hexdigest()
    with Conn(server.address) as conn:
        resp = conn.request("GET", "/file/")
        assert resp.status == 200 and resp.header("Content-Length") == str(FILE_SIZE)
        assert hashlib.sha256(resp.body).hexdigest() == digest
        head = conn.request("HEAD", "/file/")
        assert head.header("Content-Length") == str(FILE_SIZE) and head.body == b""
        assert conn.request("GET", "/after-file").json()["path"] == "/after-file"
    with Conn(server.address) as conn:
        resp = conn.request("GET", "/file/", version="HTTP/1.0")
        assert hashlib.sha256(resp.body).hexdigest() == digest


@pytest.mark.timeout(20)
@pytest.mark.parametrize("when", ["before", "after"])
def test_app_exception_is_a_500_with_the_traceback_logged(server, when):
    with Conn(server.address) as conn:
        resp = conn.request("GET", f"/fail/?when={when}")
        assert resp.status == 500 and resp.body == b"500 Internal Server Error\n"
        assert resp.header("Connection") == "close" and conn.at_eof()
    log = server.log()
    assert f"RuntimeError: boom {when} start_response" in log
    assert re.search(r"error in the WSGI app serving \"GET /fail/\?when=" + when, log)
    assert "Traceback (most recent call last)" in log
    assert get(server.address, "/still-serving").status == 200


@pytest.mark.timeout(20)
def test_exception_after_output_started_closes_the_connection_early(server):
    with Conn(server.address) as conn:
        resp = conn.request("GET", "/fail/?when=iter")
        assert resp.status == 200 and resp.header("Content-Length") == str(4 << 20)
        assert not resp.complete and len(resp.body) < 4 << 20
        assert conn.at_eof()
    assert "RuntimeError: boom mid-iteration" in server.log()
    assert get(server.address, "/still-serving").status == 200


@pytest.mark.timeout(30)
def test_wsgiref_validator_finds_nothing(prefork_server, tmp_path):
    served = start(prefork_server, tmp_path, "router", "-w", "1")
    with Conn(served.address) as conn:
        assert conn.request("GET", "/v-echo/x?y=1").json()["query"] == "y=1"
        resp = conn.request("POST", "/v-echo/", [("Content-Type", "text/plain")], b"a" * 3000)
        assert resp.json()["body"] == "a" * 3000
        resp = conn.request("POST", "/v-echo/", [("Transfer-Encoding", "chunked")],
                            b"3\r\nabc\r\n0\r\n\r\n")
        assert resp.json()["body"] == "abc"
        assert conn.request("GET", "/v-stream/?chunks=8&size=65536").chunked
        assert conn.request("GET", "/v-write/").body == b"one,two,three,four"
        assert conn.request("HEAD", "/v-echo/").body == b""
    # A marker request: validator warnings would be written before its call.
    assert get(served.address, "/v-echo/last").status == 200
    log = served.log()
    for bad in ("Traceback", "Warning", "ERROR", "AssertionError", "without being closed"):
        assert bad not in log, log


@pytest.mark.timeout(20)
def test_root_path_sets_script_name(prefork_server, tmp_path):
    served = start(prefork_server, tmp_path, "echo", "-w", "1", "--root-path", "/api")
    with Conn(served.address) as conn:
        info = conn.request("GET", "/api/users/7?full=1").json()
        assert (info["script_name"], info["path"], info["query"]) == ("/api", "/users/7",
                                                                      "full=1")
        info = conn.request("GET", "/api").json()
        assert (info["script_name"], info["path"]) == ("/api", "")
        info = conn.request("GET", "/apiary").json()   # not under /api: left whole
        assert info["path"] == "/apiary"


@pytest.mark.timeout(20)
def test_access_log_combined_format(server, files):
    log = files / "access.log"
    # Lines are written after their responses: wait for a marker, so lines of
    # earlier tests cannot land among ours.
    get(server.address, "/marker-combined")

    def marker_lines():
        return [n for n, line in enumerate(access_lines(log, 0)) if "/marker-combined" in line]
    wait_until(marker_lines, 10, "the marker line")
    before = marker_lines()[0] + 1
    agent = 'tester/1.0 "quoted"'
    with Conn(server.address) as conn:
        ok = conn.request("GET", "/logged?x=1", [("Referer", "http://ref.example/"),
                                                 ("User-Agent", agent)])
        conn.request("POST", "/posted", body=b"12345")
    with Conn(server.address) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n")
        assert conn.response().status == 400
    lines = access_lines(log, before + 3)[before:]
    parsed = [COMBINED.match(line) for line in lines]
    assert all(parsed), lines
    first, second, third = (m.groups() for m in parsed[:3])
    assert first[0] == "127.0.0.1"
    stamp = datetime.strptime(first[1], "%d/%b/%Y:%H:%M:%S %z")
    assert abs(stamp.timestamp() - time.time()) < 60
    assert first[2:] == ("GET /logged?x=1 HTTP/1.1", "200", str(len(ok.body)),
                         "http://ref.example/", 'tester/1.0 \\"quoted\\"')
    assert second[2:4] == ("POST /posted HTTP/1.1", "200")
    assert third[2:5] == ("-", "400", "-")


@pytest.mark.timeout(20)
def test_access_log_json_format(prefork_server, tmp_path):
    log = tmp_path / "access.json"
    served = start(prefork_server, tmp_path, "echo", "-w", "1", "--access-log", str(log),
                   "--access-log-format", "json")
    resp = get(served.address, "/j?a=b", headers=[("User-Agent", "ua"), ("Referer", "r")])
    get(served.address, "/j2", method="DELETE")
    records = [json.loads(line) for line in access_lines(log, 2)]
    assert records[0]["request"] == "GET /j?a=b HTTP/1.1"
    assert records[0]["status"] == 200 and records[0]["bytes"] == len(resp.body)
    assert (records[0]["user_agent"], records[0]["referer"]) == ("ua", "r")
    assert records[0]["remote_addr"] == "127.0.0.1"
    assert records[0]["pid"] in served.proc.worker_pids()
    assert records[0]["duration_ms"] >= 0
    assert records[1]["request"] == "DELETE /j2 HTTP/1.1"
