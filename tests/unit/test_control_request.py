"""control.request: a status the master dropped unanswered is asked again; a command is not."""

import json
import socket
import threading

import pytest

from prefork.errors import PreforkError
from prefork.supervisor import control


def serve(path: str, drops: int, seen: list, answers: int = 1) -> threading.Thread:
    """A stand-in master: closes the first ``drops`` connections unanswered, then
    answers ``answers`` more."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(10)

    def run() -> None:
        with listener:
            for n in range(drops + answers):
                try:
                    conn, _ = listener.accept()
                except socket.timeout:
                    return
                with conn:
                    conn.settimeout(5)
                    line = conn.recv(4096)
                    seen.append(json.loads(line))
                    if n < drops:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                        continue        # closed with no reply
                    conn.sendall(b'{"ok": true}\n')
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(20)
def test_a_dropped_status_request_is_asked_again(tmp_path):
    seen: list = []
    thread = serve(str(tmp_path / "c.sock"), 2, seen)
    assert control.request(str(tmp_path / "c.sock"), {"cmd": "status"}) == {"ok": True}
    thread.join(5)
    assert seen == [{"cmd": "status"}] * 3


@pytest.mark.timeout(20)
def test_a_dropped_command_is_not_repeated(tmp_path):
    seen: list = []
    thread = serve(str(tmp_path / "c.sock"), 1, seen, answers=0)
    with pytest.raises(PreforkError, match="cannot reach|without a reply"):
        control.request(str(tmp_path / "c.sock"), {"cmd": "scale", "workers": 1,
                                                   "relative": True})
    thread.join(5)
    assert seen == [{"cmd": "scale", "workers": 1, "relative": True}]
