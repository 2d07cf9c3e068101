"""Bad input ends start-up with the documented exit status and a message naming the culprit.

0 clean stop; 1 runtime failure; 2 usage or config error; 3 target cannot be
imported; 4 cannot bind.
"""

import re
import socket
import uuid

import pytest

from harness import pid_alive, processes_matching, run_prefork

pytestmark = pytest.mark.integration

ECHO = "prefork.examples.echo:UpperEchoHandler"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("toml, key", [
    ('bind = ["127.0.0.1:0"]\nworkerz = 2\n', "workerz"),       # unknown key
    ('bind = ["127.0.0.1:0"]\nworkers = "two"\n', "workers"),   # wrong type
    ('bind = ["127.0.0.1:0"]\ntimeout = true\n', "timeout"),    # bool is not a number
])
def test_bad_config_file_exits_2_naming_key_and_file(prefork_server, tmp_path, toml, key):
    config = tmp_path / "prefork.toml"
    config.write_text(toml)
    server = prefork_server("serve", ECHO, "-c", str(config))
    assert server.wait_exit() == 2
    error = server.log()
    assert f"'{key}'" in error and str(config) in error, error
    assert "listening at" not in error   # refused before binding anything


@pytest.mark.timeout(30)
def test_missing_target_module_exits_3_and_leaves_nothing_running(prefork_server):
    # Unique, so that a concurrent run of this suite cannot match below.
    module = f"no_such_module_{uuid.uuid4().hex[:12]}"
    server = prefork_server("serve", f"{module}:Handler", "-b", "127.0.0.1:0", "-w", "2")
    assert server.wait_exit(timeout=20) == 3
    error = server.log()
    assert f"cannot import module '{module}'" in error, error
    # Workers log the import error under their own PIDs: all of them are gone.
    failed = {int(pid) for pid in re.findall(r"\[(\d+)\] \[ERROR\] cannot import module", error)}
    failed.discard(server.pid)
    assert failed, error
    assert not [pid for pid in failed if pid_alive(pid)]
    assert processes_matching(f"[{module}:Handler]") == []


@pytest.mark.timeout(30)
def test_missing_attribute_exits_3(prefork_server):
    server = prefork_server("serve", "testapps:NoSuchHandler", "-b", "127.0.0.1:0", "-w", "1")
    assert server.wait_exit(timeout=20) == 3
    assert "NoSuchHandler" in server.log()


@pytest.mark.timeout(30)
def test_address_in_use_exits_4_naming_the_address(prefork_server):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        address = "127.0.0.1:%d" % holder.getsockname()[1]
        server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-b", address, "-w", "1")
        assert server.wait_exit() == 4
    error = server.log()
    assert address in error and "already in use" in error, error
    assert "starting generation" not in error   # no worker was forked


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", ["nocolon", "mod:", ":Name", "mod:Name(x)"])
def test_malformed_target_exits_2(prefork_server, bad):
    server = prefork_server("serve", bad, "-b", "127.0.0.1:0")
    assert server.wait_exit() == 2
    assert repr(bad) in server.log() or bad in server.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args, named", [
    (["-b", "nonsense"], "'nonsense'"),
    (["-b", "127.0.0.1:99999"], "99999"),
    (["-w", "0"], "'workers'"),
    (["-k", "fork"], "'fork'"),
    (["--timeout", "soon"], "'soon'"),
])
def test_bad_command_line_exits_2(prefork_server, args, named):
    server = prefork_server("serve", ECHO, *args)
    assert server.wait_exit() == 2
    assert named in server.log(), server.log()


@pytest.mark.timeout(30)
def test_check_ok_exits_0(tmp_path):
    result = run_prefork(["check", ECHO, "-b", "127.0.0.1:0"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and ECHO in result.stdout


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target, status, named", [
    ("no_such_module_for_prefork_tests:Handler", 3, "no_such_module_for_prefork_tests"),
    ("testapps:NoSuchHandler", 3, "NoSuchHandler"),
    ("os:sep", 3, "os:sep"),   # importable, but neither a handler class nor callable
    ("nocolon", 2, "nocolon"),
])
def test_check_bad_target(tmp_path, target, status, named):
    result = run_prefork(["check", target], tmp_path)
    assert result.returncode == status, (result.stdout, result.stderr)
    assert named in result.stderr


@pytest.mark.timeout(30)
def test_check_bad_config_exits_2(tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text("max_requests = -1\n")
    result = run_prefork(["check", ECHO, "-c", str(config)], tmp_path)
    assert result.returncode == 2
    assert "max_requests" in result.stderr and str(config) in result.stderr
