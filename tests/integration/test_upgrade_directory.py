"""Where a new master starts (USR2): the directory the operator launched prefork from.

--chdir moves the master, but the command line's relative paths (``-c
etc/prefork.toml``) mean the launch directory.  That directory is taken
when the master starts and handed down, not read when a module is imported.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from harness import REPO, child_env, pid_alive, wait_until
from prefork.supervisor import upgrade

pytestmark = pytest.mark.integration


def test_importing_the_upgrade_module_reads_no_working_directory(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    # In a directory that was removed, os.getcwd() raises: an import must not call it.
    code = ("import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
            "import prefork.supervisor.upgrade")
    result = subprocess.run([sys.executable, "-c", code, str(gone)], capture_output=True,
                            text=True, env=child_env(), cwd=str(REPO), timeout=30)
    assert result.returncode == 0, result.stderr


def test_the_new_master_is_executed_in_the_directory_it_is_given(tmp_path, monkeypatch):
    # A stand-in for the new master: it reports its working directory as its "failure".
    report = ("import json, os; fd = json.loads(os.environ['PREFORK_UPGRADE'])['ready']; "
              "os.write(fd, ('fail 1 ' + os.getcwd() + '\\n').encode())")
    monkeypatch.setattr(upgrade, "command_line", lambda: [sys.executable, "-c", report])
    started = upgrade.Upgrade.start(upgrade.Inheritance(), str(tmp_path))
    try:
        deadline = time.monotonic() + 20
        outcome = None
        while outcome is None:
            assert time.monotonic() < deadline, "no word from the stand-in"
            time.sleep(0.02)
            outcome = started.read()
        assert outcome == (1, str(tmp_path))
        assert started.read_fd == -1       # said once: its pipe is closed
    finally:
        started.close()
        os.waitpid(started.pid, 0)


@pytest.mark.timeout(60)
def test_usr2_after_chdir_finds_the_relative_config(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "etc" / "prefork.toml").write_text(
        'bind = ["127.0.0.1:0"]\nworkers = 1\nchdir = "elsewhere"\n')
    log = tmp_path / "prefork.log"
    proc = subprocess.Popen([sys.executable, "-m", "prefork", "serve", "wsgiapps:router",
                             "-c", "etc/prefork.toml", "--error-log", str(log)],
                            cwd=str(tmp_path), env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    new = 0
    try:
        wait_until(lambda: log.exists() and "ready: serving" in log.read_text(), 20,
                   "the master to be ready")
        os.kill(proc.pid, signal.SIGUSR2)
        wait_until(lambda: "is serving; this master" in log.read_text()
                   or "upgrade failed" in log.read_text(), 30, "the upgrade's outcome")
        text = log.read_text()
        assert "upgrade failed" not in text, text
        new = int(text.split("upgrade: the new master ", 1)[1].split()[0])
        assert proc.wait(30) == 0
        assert os.readlink(f"/proc/{new}/cwd") == str(tmp_path / "elsewhere")
    finally:
        for pid in (proc.pid, new):
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
        if new:
            wait_until(lambda: not pid_alive(new), 30, "the new master to stop")
        proc.wait(30)
