"""The TLS files over a server's life: a file that cannot be loaded is a config error at
start (exit 2, naming the key and the file) and a failed reload later (the old
generation keeps serving); a HUP with renewed files rotates the certificate under
load without one failed request."""

from __future__ import annotations

import signal
import ssl
import threading
import time
from pathlib import Path
from typing import List

import pytest
from cryptography.hazmat.primitives import serialization

from edge_helpers import (KINDS, Certs, EdgeServed, ask, connect, edge_server, info,
                          make_certs)
from harness import run_prefork

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ECHO = "prefork.examples.echo:UpperEchoHandler"
# One of each family: the line and http.server handlers, WSGI, ASGI; both worker styles.
ROTATED = [kind for kind in KINDS
           if kind.name in ("handler-sync", "http.server-thread", "wsgi-thread", "asgi-asyncio")]


def _encrypted_key(certs: Certs, password: bytes) -> Path:
    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    path = certs.directory / "encrypted-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(password)))
    return path


@pytest.mark.parametrize("case", ["missing certfile", "garbage certfile", "garbage keyfile",
                                  "wrong password", "no password", "tls:// without certfile"])
def test_start_errors_name_the_key_and_the_file(tmp_path, certs, case):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    missing = tmp_path / "missing.pem"
    encrypted = str(_encrypted_key(certs, b"right password"))
    args, key, path = {
        "missing certfile": (["--certfile", str(missing), "--keyfile", str(certs.key)],
                             "certfile", missing),
        "garbage certfile": (["--certfile", str(garbage), "--keyfile", str(certs.key)],
                             "certfile", garbage),
        "garbage keyfile": (["--certfile", str(certs.cert), "--keyfile", str(garbage)],
                            "keyfile", garbage),
        "wrong password": (["--certfile", str(certs.cert), "--keyfile", encrypted,
                            "--keyfile-password", "wrong"], "keyfile_password", encrypted),
        "no password": (["--certfile", str(certs.cert), "--keyfile", encrypted],
                        "keyfile_password", encrypted),
        "tls:// without certfile": ([], "certfile", None),
    }[case]
    done = run_prefork(["serve", ECHO, "-w", "1", "-b", "tls://127.0.0.1:0", *args], tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"key '{key}'" in done.stderr
    assert path is None or str(path) in done.stderr
    assert "ready: serving" not in done.stderr


@pytest.mark.parametrize("form", ["encrypted key and its password", "key in the certfile"])
def test_key_forms_that_serve(tmp_path, certs, form):
    if form == "key in the certfile":
        combined = tmp_path / "combined.pem"
        combined.write_text(certs.cert.read_text() + certs.key.read_text())
        args = ["--certfile", str(combined)]
    else:
        args = ["--certfile", str(certs.cert), "--keyfile",
                str(_encrypted_key(certs, b"right password")), "--keyfile-password",
                "right password"]
    kind = KINDS[0]
    with edge_server(tmp_path, kind, "-b", "tls://127.0.0.1:0", *args) as served:
        context = ssl.create_default_context(cafile=str(certs.ca_file))
        assert info(kind, served.tls, "key-form", context)["scheme"] == "https"


def _peer_cert(address: tuple, context: ssl.SSLContext) -> bytes:
    with connect(address, context) as sock:
        return sock.getpeercert(binary_form=True)


def _live_files(directory: Path, certs: Certs) -> Certs:
    """The paths the server is given: copies it reads again on HUP."""
    live = Certs(certs.ca, directory, certs.ca_file, directory / "live-cert.pem",
                 directory / "live-key.pem", certs.client)
    live.cert.write_bytes(certs.cert.read_bytes())
    live.key.write_bytes(certs.key.read_bytes())
    return live


@pytest.mark.parametrize("kind", ROTATED, ids=str)
def test_reload_with_a_broken_certfile_keeps_the_old_generation(tmp_path, certs, kind):
    live = _live_files(tmp_path, certs)
    with edge_server(tmp_path, kind, "-b", "tls://127.0.0.1:0", *live.args()) as served:
        context = ssl.create_default_context(cafile=str(certs.ca_file))
        before = _peer_cert(served.tls, context)
        pid = served.worker()
        live.cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        served.proc.signal(signal.SIGHUP)
        line = served.proc.wait_for(r".*reload failed.*")[0].group(0)
        assert "certfile" in line and str(live.cert) in line
        assert _peer_cert(served.tls, context) == before
        assert info(kind, served.tls, "still-served", context)["pid"] == pid
        assert served.proc.live_workers() == {pid}


class Looping:
    """Client threads on fresh TLS connections until told to stop; every failure kept."""

    def __init__(self, served: EdgeServed, context: ssl.SSLContext, threads: int = 3) -> None:
        self.served, self.context = served, context
        self.stop = threading.Event()
        self.done = 0
        self.failures: List[str] = []
        self.peers: set = set()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                        for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, number: int) -> None:
        count = 0
        while not self.stop.is_set():
            count += 1
            try:
                with connect(self.served.tls, self.context) as sock:
                    peer = sock.getpeercert(binary_form=True)
                    answer = ask(self.served.kind, sock, f"loop-{number}-{count}")
                assert answer["scheme"] == "https", answer
                self.peers.add(peer)
                self.done += 1
            except Exception as exc:       # noqa: BLE001 (every failure counts)
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def finish(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", ROTATED, ids=str)
def test_certificate_rotation_on_hup_loses_no_request(tmp_path, certs, kind):
    renewed = make_certs(tmp_path, "renewed")         # a new CA too: no doubt which is which
    live = _live_files(tmp_path, certs)
    both = ssl.create_default_context(cafile=str(certs.ca_file))
    both.load_verify_locations(cafile=str(renewed.ca_file))
    with edge_server(tmp_path, kind, "-b", "tls://127.0.0.1:0", *live.args()) as served:
        old_cert, old_worker = _peer_cert(served.tls, both), served.worker()
        clients = Looping(served, both)
        try:
            time.sleep(0.5)        # load before the HUP (the test's point, not a readiness wait)
            live.cert.write_bytes(renewed.cert.read_bytes())
            live.key.write_bytes(renewed.key.read_bytes())
            served.proc.signal(signal.SIGHUP)
            served.proc.wait_ready(count=2)
            # The old worker may accept for a moment after the reload is complete,
            # until its TERM arrives (any reload's hand-over): wait until it is gone.
            served.proc.wait_workers(lambda pids: old_worker not in pids)
            new_only = ssl.create_default_context(cafile=str(renewed.ca_file))
            new_cert = _peer_cert(served.tls, new_only)
            time.sleep(0.5)        # and load after it
        finally:
            clients.finish()
        assert clients.failures == [], clients.failures[:5]
        assert clients.done > 20 and {old_cert, new_cert} <= clients.peers
        assert new_cert != old_cert
        answer = info(kind, served.tls, "after-rotation", new_only)
        if kind.target.endswith(":asgi"):
            assert answer["extra"]["server_cert"] == renewed.cert.read_text()
        assert "reload failed" not in served.proc.log()
