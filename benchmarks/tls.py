"""A hello world over TLS under load: prefork against gunicorn (``--certfile``) and
granian, and for ASGI against uvicorn and granian, side by side.

Makes one certificate per run with trustme (a CA of its own and a server
certificate for 127.0.0.1, ECDSA P-256, the key written as PKCS#8, the only
form granian reads) in a temporary directory, and serves it from every server,
each with 2 workers on 127.0.0.1, in their TLS defaults.  Installs the peers
into benchmarks/.peers (made on first use).  Modes, alternating servers round
by round:

- keep-alive: ``wrk -t2 -c64 https://...``, a handshake per connection at the
  start and then requests only;
- ``Connection: close``, wrk: a new connection per request, but wrk offers the
  session of the connection it replaces, so each handshake is a TLS 1.3
  resumption (a PSK from the server's ticket, still with a fresh key exchange,
  no certificate and no signature) wherever the server accepts the ticket;
- full handshake, ab: two ``ab`` processes of 32 connections each (HTTP/1.0,
  so the server closes), which never offer a session: every handshake is a
  full one, certificate and signature included.  p50 and p99 there count the
  connect and the handshake (wrk's count from the request's write), and are
  the two processes' figures averaged, weighted by their requests.

Before the rounds, an in-process TLS server checks what each client does
(sessions it resumed out of those it could have).  Before each wrk
``Connection: close`` run, a Python client reports the server's protocol,
cipher suite and key exchange group (from ``openssl s_client``), how many of
16 connections made at once, each offering an earlier session, it resumed,
and whether it closes with a close_notify alert.  Ratios: req/s over
prefork's (sync for WSGI, asyncio for ASGI).

    python benchmarks/tls.py [--duration 10] [--rounds 3] [--interface wsgi|asgi|both]

Needs wrk (Debian package `wrk`) and ab (Debian `apache2-utils`), and openssl
for the key exchange column.  A server that does not install or start is
left out, with a note.  Never run as a test.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from apps import BODY  # noqa: E402
from common import (Result, chosen, importable, parse_args, peer_python,  # noqa: E402
                    print_table, run_wrk, sample_spread, started_rounds)

REPO = HERE.parent
PEER_INSTALLS = (["gunicorn"], ["granian"], ["uvicorn", "httptools", "uvloop"])
BASELINES = {"wsgi": "prefork sync", "asgi": "prefork asyncio"}
PEERS = {"wsgi": ("gunicorn sync", "granian wsgi"), "asgi": ("uvicorn", "granian asgi")}
KEEP_ALIVE, RESUMED, FULL = ("keep-alive", "Connection: close, wrk (resumed)",
                             "full handshake, ab")
PROBES = 16


class Certificate:
    """A CA and a server certificate for 127.0.0.1, as PEM files in ``directory``."""

    def __init__(self, directory: str) -> None:
        import trustme
        from cryptography.hazmat.primitives import serialization

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        self.cert, self.key, self.ca = (os.path.join(directory, name)
                                        for name in ("cert.pem", "key.pem", "ca.pem"))
        with open(self.key, "wb") as file:
            file.write(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        with open(self.cert, "wb") as file:
            file.write(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        ca.cert_pem.write_to_path(self.ca)
        self.kind = f"ECDSA {key.curve.name}"     # trustme's default key type


def servers(python: Optional[Path], workers: int, cert: Certificate
            ) -> Dict[str, Dict[str, List[str]]]:
    """The servers' command lines per interface; prefork's alone when ``python``
    (the peers' interpreter) is None."""
    prefork = [sys.executable, "-m", "prefork", "serve", "-w", str(workers),
               "-b", "tls://127.0.0.1:{port}", "--certfile", cert.cert, "--keyfile", cert.key,
               "--log-level", "warning"]
    table = {"wsgi": {"prefork sync": prefork + ["apps:app", "-k", "sync"]},
             "asgi": {"prefork asyncio": prefork + ["asgi_apps:app", "-k", "asyncio"]}}
    if python is None:
        return table
    granian = [str(python), "-m", "granian", "--workers", str(workers), "--port", "{port}",
               "--ssl-certificate", cert.cert, "--ssl-keyfile", cert.key,
               "--log-level", "warning"]
    peers = {
        "wsgi": {
            "gunicorn sync": ("gunicorn", [str(python), "-m", "gunicorn", "-k", "sync",
                                           "-w", str(workers), "-b", "127.0.0.1:{port}",
                                           "--certfile", cert.cert, "--keyfile", cert.key,
                                           "--log-level", "warning", "apps:app"]),
            "granian wsgi": ("granian", granian + ["--interface", "wsgi", "apps:app"]),
        },
        "asgi": {
            "uvicorn": ("uvicorn", [str(python), "-m", "uvicorn", "asgi_apps:app",
                                    "--workers", str(workers), "--port", "{port}",
                                    "--http", "httptools", "--loop", "uvloop",
                                    "--ssl-certfile", cert.cert, "--ssl-keyfile", cert.key,
                                    "--log-level", "warning", "--no-access-log"]),
            "granian asgi": ("granian", granian + ["--interface", "asgi", "asgi_apps:app"]),
        },
    }
    for interface, entries in peers.items():
        for name, (module, argv) in entries.items():
            if importable(python, module):
                table[interface][name] = argv
            else:
                print(f"note: {module} did not install; {name} left out", file=sys.stderr)
    # The baseline first, as in the other scripts' tables.
    return {interface: dict(sorted(entries.items(),
                                   key=lambda item: item[0] != BASELINES[interface]))
            for interface, entries in table.items()}


def run_ab(port: int, duration: int, connections: int, processes: int = 2,
           spread_over: int = 0) -> Result:
    """``processes`` ab runs side by side, ``connections`` in all: req/s summed,
    p50 and p99 (connect, handshake and request) averaged, weighted by requests.
    Errors: failed connects, receives and exceptions, non-2xx responses, and
    responses without the whole body.  ab's own "Length" count is not used: over
    TLS it reads the first response's length as 0 and then counts every other
    response as a failure when the server closes without a close_notify alert
    (see server_facts); the body bytes it received are checked instead.  A
    process that gave up on a response counts 1 error and no latencies."""
    tmp = tempfile.mkdtemp(prefix="tls-ab-")
    spread, sampler = sample_spread(port, spread_over, duration)
    try:
        procs = []
        for i in range(processes):
            csv = os.path.join(tmp, f"{i}.csv")
            # -t before -n: -t alone caps the run at 50,000 requests.
            argv = ["ab", "-q", "-r", "-t", str(duration), "-n", "100000000",
                    "-c", str(connections // processes), "-e", csv,
                    f"https://127.0.0.1:{port}/"]
            procs.append((subprocess.Popen(argv, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True), csv))
        parts = []
        for proc, csv in procs:
            out, _ = proc.communicate(timeout=duration + 60)
            parts.append(_ab_figures(out, csv, duration))
    finally:
        if sampler is not None:
            sampler.join()
        shutil.rmtree(tmp, ignore_errors=True)
    done = sum(p["done"] for p in parts)
    if not done:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": -1}
    return {"rps": sum(p["rps"] for p in parts),
            "p50": sum(p["p50"] * p["done"] for p in parts) / done,
            "p99": sum(p["p99"] * p["done"] for p in parts) / done,
            "errors": sum(p["errors"] for p in parts), "spread": spread}


def _ab_figures(out: str, csv: str, duration: int) -> Dict[str, float]:
    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else 0.0

    if "Requests per second" not in out or not os.path.exists(csv):
        # ab gives up on a response that takes over 30 s, and then prints no figures.
        last = [line for line in out.splitlines() if "SSL" not in line][-3:]
        print(f"note: ab stopped: {' / '.join(last)}", file=sys.stderr)
        done = int(number(r"Total of (\d+) requests completed"))
        return {"rps": done / duration, "done": done, "p50": float("nan"),
                "p99": float("nan"), "errors": 1}
    with open(csv) as file:
        percent = dict(line.strip().split(",") for line in file.readlines()[1:])
    done = int(number(r"Complete requests:\s+(\d+)"))
    failed = sum(int(n) for n in re.findall(r"(?:Connect|Receive|Exceptions): (\d+)", out))
    short = max(0, done - int(number(r"HTML transferred:\s+(\d+)")) // len(BODY))
    return {"rps": number(r"Requests per second:\s+([\d.]+)"), "done": done,
            "p50": float(percent["50"]) / 1e3, "p99": float(percent["99"]) / 1e3,
            "errors": failed + int(number(r"Non-2xx responses:\s+(\d+)")) + short}


def server_facts(port: int, cert: Certificate) -> Tuple[str, str, str, int, int, int]:
    """Protocol, cipher suite, key exchange group; how many of PROBES new
    connections, made all at once (so they land on both workers) and each
    offering the session of its own earlier connection (as wrk does), the
    server resumed; and how many of the 2 * PROBES it closed with a
    close_notify alert after its response.  The certificate is verified
    against the run's CA: the same one everywhere."""
    context = ssl.create_default_context(cafile=cert.ca)
    found: Dict[str, list] = {"version": [], "cipher": [], "resumed": [], "clean": []}

    def connect(session: Optional[ssl.SSLSession], slot: List) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1", session=session,
                                        suppress_ragged_eofs=False) as conn:
                found["version"].append(conn.version() or "?")
                found["cipher"].append(conn.cipher()[0])
                conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                try:
                    while conn.recv(65536):     # the tickets come after the handshake
                        pass
                    found["clean"].append(1)
                except ssl.SSLEOFError:         # a TCP close without close_notify
                    found["clean"].append(0)
                if session is not None:
                    found["resumed"].append(conn.session_reused)
                slot.append(conn.session)
        except (OSError, ssl.SSLError) as exc:
            print(f"note: TLS probe of port {port}: {exc}", file=sys.stderr)

    slots: List[List] = [[] for _ in range(PROBES)]
    for offer in (lambda slot: None, lambda slot: slot[0] if slot else None):
        threads = [threading.Thread(target=connect, args=(offer(slot), slot)) for slot in slots]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    protocol = ", ".join(sorted(set(found["version"]))) or "?"
    cipher = ", ".join(sorted(set(found["cipher"]))) or "?"
    resumed, tried, clean = (sum(found["resumed"]), len(found["resumed"]), sum(found["clean"]))
    group = "?"
    if shutil.which("openssl"):
        out = subprocess.run(["openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{port}"],
                             input="", capture_output=True, text=True, timeout=10).stderr
        found = re.search(r"(?:Server|Peer) Temp Key: (\w+)", out)
        group = found.group(1) if found else "?"
    return protocol, cipher, group, resumed, tried, clean


def client_resumption(cert: Certificate) -> Dict[str, str]:
    """What share of their handshakes wrk (Connection: close) and ab resume: a
    one-thread TLS server with Python's ssl counts ``session_reused``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    port = listener.getsockname()[1]
    counts = [0, 0]
    response = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(BODY), BODY))

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    counts[0] += 1
                    counts[1] += conn.session_reused
                    conn.recv(65536)
                    conn.sendall(response)
            except OSError:
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    found = {}
    url = f"https://127.0.0.1:{port}/"
    for client, argv in (("wrk", ["wrk", "-t1", "-c1", "-d1s", "-H", "Connection: close", url]),
                         ("ab", ["ab", "-q", "-n", "200", "-c", "1", url])):
        counts[:] = [0, 0]
        subprocess.run(argv, capture_output=True, timeout=60)
        time.sleep(0.1)
        found[client] = f"{counts[1]:,} of {counts[0]:,} handshakes resumed"
    listener.close()
    return found


def main(argv: Optional[List[str]] = None) -> int:
    def extra(parser) -> None:
        parser.add_argument("--interface", choices=("wsgi", "asgi", "both"), default="both")
        parser.set_defaults(rounds=3)

    args = parse_args(__doc__.splitlines()[0], argv, extra=extra)
    if not shutil.which("ab"):
        raise SystemExit("ab is not installed (apt-get install apache2-utils)")
    interfaces = ["wsgi", "asgi"] if args.interface == "both" else [args.interface]
    directory = tempfile.mkdtemp(prefix="prefork-tls-bench-")
    try:
        cert = Certificate(directory)
        clients = client_resumption(cert)
        peers = [name for i in interfaces for name in PEERS[i]]
        python = peer_python(PEER_INSTALLS) if chosen(peers, args.only) else None
        tables = servers(python, args.workers, cert)
        outcome = [run_interface(args, tables[i], cert) for i in interfaces]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{args.workers} workers each, {args.rounds} round(s) of {args.duration} s, "
          f"median per cell; certificate {cert.kind} from a trustme CA; "
          f"wrk -t2 -c{args.connections}; ab: 2 processes of {args.connections // 2} "
          f"connections. Resumption by the clients: wrk {clients['wrk']}, "
          f"ab {clients['ab']}.")
    for interface, (results, names, modes, facts) in zip(interfaces, outcome):
        print(f"\n{interface.upper()}: ratio = req/s over {BASELINES[interface]}\n")
        print_table(results, modes, names, BASELINES[interface])
        print("\n| server | protocol | cipher suite | key exchange | sessions resumed "
              "| closed with close_notify |")
        print("| --- | --- | --- | --- | ---: | ---: |")
        for name in names:
            seen = facts.get(name, [])
            if seen:
                kinds = lambda i: ", ".join(sorted({f[i] for f in seen}))  # noqa: E731
                print(f"| {name} | {kinds(0)} | {kinds(1)} | {kinds(2)} "
                      f"| {sum(f[3] for f in seen)} of {sum(f[4] for f in seen)} "
                      f"| {sum(f[5] for f in seen)} of {len(seen) * 2 * PROBES} |")
    return 0


def run_interface(args, table: Dict[str, List[str]], cert: Certificate):
    modes = chosen([KEEP_ALIVE, RESUMED, FULL], args.modes)
    results: Dict[Tuple[str, str], List[Result]] = {}
    facts: Dict[str, list] = {}
    failed: set = set()
    names = chosen(list(table), args.only)
    for mode, name, port in started_rounds(table, modes, names, args.rounds,
                                           {"PYTHONPATH": f"{HERE}:{REPO}"}, str(HERE), failed):
        if mode == RESUMED:
            facts.setdefault(name, []).append(server_facts(port, cert))
        if mode == FULL:
            result = run_ab(port, args.duration, args.connections, spread_over=args.workers)
        else:
            result = run_wrk(port, args.duration, args.connections, close=mode == RESUMED,
                             spread_over=args.workers, scheme="https")
        results.setdefault((mode, name), []).append(result)
        print(f"{mode} | {name}: {result['rps']:,.0f} req/s, p99 "
              f"{result['p99'] * 1e3:.1f} ms, errors {result['errors']}", file=sys.stderr)
    return results, [n for n in names if n not in failed], modes, facts


if __name__ == "__main__":
    raise SystemExit(main())
