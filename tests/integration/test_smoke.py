import pytest

from harness import echo_once

pytestmark = pytest.mark.integration


def test_echo_answers(prefork_server):
    server = prefork_server("serve", "prefork.examples.echo:UpperEchoHandler",
                            "-b", "127.0.0.1:0", "-w", "2")
    server.wait_ready()
    assert echo_once(server.address, b"hello\nworld\n") == b"HELLO\nWORLD\n"
