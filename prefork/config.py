"""One frozen Config, built from a TOML file and the command line.

Every setting is a field of :class:`Config`; its metadata (help text, topic
group, short flag, allowed values, lower bound) is the single place the
setting is described.  The CLI flags and their help groups, the TOML
validation and ``etc/prefork.toml`` all follow from it, so a new setting is
one new field (``setting()`` refuses one without a group).

Precedence: built-in default < TOML file < command line.  Every error names
the key and where it came from and maps to exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

from . import config_checks as checks
from . import netlist, scoreboard
from .config_values import coerce, kind_of
from .errors import ConfigError


# The topics settings are grouped by, in this order, in `--help` and etc/prefork.toml.
GROUPS = ("Application", "Binding", "Workers", "Timeouts", "HTTP", "TLS and proxies",
          "Logging", "Daemon and control", "Hooks")


def setting(default: Any, help: str, *, group: str, flag: str = "",
            choices: Tuple[str, ...] = (), minimum: Optional[float] = None,
            maximum: Optional[float] = None, metavar: str = "",
            check: Optional[Callable[[Any], str]] = None) -> Any:
    """Declare one setting: a dataclass field whose metadata drives CLI and checks.

    ``group`` (one of GROUPS, required) is its topic. ``check(value)`` returns an
    error message, or "" when the value is fine.
    """
    if group not in GROUPS:
        raise ValueError(f"setting group {group!r} is not one of {GROUPS}")
    meta = {"help": help, "group": group, "flag": flag, "choices": choices,
            "minimum": minimum, "maximum": maximum, "metavar": metavar, "check": check}
    return field(default=default, metadata=meta)


CPU_COUNT = os.cpu_count() or 1
MAX_WORKERS = scoreboard.MAX_WORKERS   # half its slots: a reload runs two generations
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class Config:
    target: str = setting(
        "", "What to serve: 'module:name' (a socketserver handler class, a WSGI "
        "app or an ASGI 3 app) or 'module:factory()'. Usually given on the command line.",
        group="Application")
    bind: Tuple[str, ...] = setting(
        ("127.0.0.1:8000",), "Addresses to listen on: HOST:PORT, :PORT, [IPv6]:PORT "
        "(TCP), udp://HOST:PORT, unix:/path, unix-dgram:/path, or fd://N (a socket "
        "already open). Repeat -b for several.", flag="-b", metavar="ADDR", group="Binding")
    reuse_port: bool = setting(
        False, "TCP and UDP: each worker listens on a socket of its own (SO_REUSEPORT) "
        "and the kernel spreads connections over them. Without it the workers share "
        "one socket, waited on with EPOLLEXCLUSIVE where Linux has it.", group="Binding")
    unix_socket_mode: str = setting(
        "", "Mode of unix socket files, in octal (e.g. 660); '' leaves what the "
        "umask gives.", metavar="MODE", check=checks.octal, group="Binding")
    unix_socket_owner: str = setting(
        "", "Owner of unix socket files: USER or USER:GROUP (names or ids); '' "
        "leaves the master's.", metavar="USER[:GROUP]", check=checks.owner, group="Binding")
    backlog: int = setting(
        2048, "Listen backlog: connections the kernel queues before accept.",
        minimum=1, metavar="N", group="Binding")
    max_packet_size: int = setting(
        8192, "UDP and unix datagram: the largest datagram read; longer ones are "
        "cut (as socketserver's UDPServer does).", minimum=1, maximum=65535, metavar="N",
        group="Binding")
    workers: int = setting(
        CPU_COUNT, "Number of worker processes (default: number of CPUs).",
        flag="-w", minimum=1, maximum=MAX_WORKERS, metavar="N", group="Workers")
    max_workers: int = setting(
        0, "Adaptive pool: grow up to M workers (workers is the floor) while the listen "
        "queue builds or every worker is busy, one at a time; 0 = a fixed pool.",
        flag="--max-workers", minimum=0, maximum=MAX_WORKERS, metavar="M", group="Workers")
    idle_retire_after: float = setting(
        10.0, "With max_workers: seconds of calm (no queue, no more busy workers than the "
        "floor) before the idlest worker above the floor is retired gracefully.",
        minimum=0.1, metavar="S", group="Workers")
    worker_class: str = setting(
        "auto", "Worker kind. sync: one job at a time per worker. thread: a "
        "bounded pool of `threads` per worker. asyncio: an event loop running an "
        "ASGI 3 app's coroutines. auto: asyncio for ASGI apps, thread for handler "
        "classes (a handler owns its connection until handle() returns, so one idle "
        "keep-alive client would hold a sync worker), sync for WSGI apps (idle "
        "connections wait in the selector, not in the app).",
        flag="-k", choices=("auto", "sync", "thread", "asyncio"), group="Workers")
    threads: int = setting(
        32, "Threads per worker for the thread worker; while all are busy the "
        "worker stops accepting and new connections wait in the backlog.",
        minimum=1, metavar="N", group="Workers")
    loop: str = setting(
        "auto", "ASGI: the asyncio worker's event loop. auto: uvloop when it is "
        "installed (pip install 'prefork[uvloop]'), asyncio's own otherwise.",
        choices=("auto", "asyncio", "uvloop"), check=checks.event_loop, group="Workers")
    worker_connections: int = setting(
        1000, "Most open HTTP connections per worker (for handler classes: most "
        "connections still in their TLS handshake or PROXY header); at the limit the "
        "worker stops accepting.", minimum=1, metavar="N", group="Workers")
    preload: bool = setting(
        False, "Import the target in the master before forking, so workers share "
        "its memory copy-on-write. A HUP then re-executes the master (as USR2 "
        "does), so new code is loaded all the same.", group="Workers")
    reload: bool = setting(
        False, "Development: watch the source files of the modules the workers "
        "imported (and reload_extra_file) and reload, as on HUP, when one changes. An "
        "edit that does not import keeps the old generation serving. Uses watchfiles "
        "if installed (pip install 'prefork[reload]'), else polls once a second. Not "
        "with preload.", group="Workers")
    reload_extra_file: Tuple[str, ...] = setting(
        (), "With reload: more files to watch, as glob patterns ('**' for any depth), "
        "e.g. templates/**/*.html. Repeat for several.", metavar="GLOB", group="Workers")
    max_requests: int = setting(
        0, "Recycle a worker after this many connections (0 = never). Its "
        "replacement is started first, so capacity never dips.", minimum=0,
        metavar="N", group="Workers")
    max_requests_jitter: int = setting(
        0, "Add a random 0..N to max_requests per worker, so workers do not "
        "all recycle at once.", minimum=0, metavar="N", group="Workers")
    max_rss: int = setting(
        0, "Recycle a worker whose resident memory exceeds this many MiB (0 = no "
        "limit): it finishes its requests while its replacement starts. Turned off, "
        "with an error, if a worker is over it before serving anything.",
        minimum=0, metavar="MIB", group="Workers")
    timeout: float = setting(
        30.0, "Seconds a worker may go without a heartbeat (booting, or stuck "
        "in one request on a sync worker) before its traceback is dumped and "
        "it is killed.", minimum=0.1, metavar="S", group="Timeouts")
    graceful_timeout: float = setting(
        30.0, "Seconds in-flight requests get to finish on TERM or when a "
        "generation is retired; a worker still busy then has its traceback "
        "dumped (ABRT) and is killed.", minimum=0.0,
        metavar="S", group="Timeouts")
    idle_timeout: float = setting(
        15.0, "Socket timeout given to each connection served by a handler "
        "class: a read or write that waits longer fails, so an idle keep-alive "
        "client cannot hold a thread or worker forever. 0 = no timeout. A "
        "handler class's own `timeout` attribute wins.", minimum=0.0,
        metavar="S", group="Timeouts")
    request_timeout: float = setting(
        0.0, "Seconds a single request may run (0 = no limit). Past it the worker's "
        "Python traceback is logged with the request line and client, and the "
        "worker is killed and replaced. On the asyncio worker the request's task is "
        "cancelled instead (504 if nothing was sent), its stack logged, and the worker "
        "goes on.", minimum=0.0, metavar="S", group="Timeouts")
    keepalive: float = setting(
        5.0, "HTTP: seconds an idle keep-alive connection is kept open between "
        "requests (it waits in the worker's selector, not in a thread).", minimum=0.0,
        metavar="S", group="Timeouts")
    header_timeout: float = setting(
        10.0, "HTTP: seconds a client gets to send a whole request head, from its "
        "first byte (slowloris); then 408 and close.", minimum=0.1, metavar="S",
        group="Timeouts")
    client_timeout: float = setting(
        30.0, "HTTP: seconds a client may stall while sending a request body or "
        "reading a response before the connection is closed.", minimum=0.1, metavar="S",
        group="Timeouts")
    upgrade_timeout: float = setting(
        60.0, "Seconds the old master waits for a new one (USR2, or HUP with "
        "preload) to have its workers ready; past it the new master is killed "
        "and the old one keeps serving.", minimum=1.0, metavar="S", group="Timeouts")
    limit_request_line: int = setting(
        8190, "HTTP: longest request line in bytes; longer gets 414.", minimum=64,
        metavar="N", group="HTTP")
    limit_request_fields: int = setting(
        100, "HTTP: most header fields in a request; more gets 431.", minimum=1,
        metavar="N", group="HTTP")
    limit_request_field_size: int = setting(
        8190, "HTTP: longest header field line in bytes; longer gets 431.", minimum=64,
        metavar="N", group="HTTP")
    max_body_size: int = setting(
        64 * 1024 * 1024, "HTTP: largest request body in bytes; larger gets 413.",
        minimum=0, metavar="N", group="HTTP")
    body_buffer_size: int = setting(
        1024 * 1024, "HTTP: request bodies up to this many bytes are kept in memory, "
        "larger ones are spooled to a temporary file.", minimum=0, metavar="N",
        group="HTTP")
    root_path: str = setting(
        "", "HTTP: the path the app is mounted at, e.g. /api ('' = the root): WSGI's "
        "SCRIPT_NAME, ASGI's root_path.",
        metavar="PATH", group="HTTP")
    lifespan: str = setting(
        "auto", "ASGI: run the app's lifespan startup in each worker before it is ready "
        "and its shutdown when the worker stops. on: a startup failure or error is a "
        "boot failure; auto: the same for a failure the app reports, while an app "
        "that does not speak lifespan is served without it; off: never.",
        choices=("auto", "on", "off"), group="HTTP")
    ws_max_size: int = setting(
        16 * 1024 * 1024, "WebSocket: largest message in bytes (whole, after its "
        "fragments are joined); larger closes the connection with 1009 (0 = no limit).",
        minimum=0, metavar="N", group="HTTP")
    ws_ping_interval: float = setting(
        20.0, "WebSocket: seconds between the server's keepalive pings, which find "
        "clients that vanished without closing (0 = never ping).", minimum=0.0,
        metavar="S", group="HTTP")
    ws_ping_timeout: float = setting(
        20.0, "WebSocket: seconds to wait for the pong (or any bytes) after a ping "
        "before the connection is closed with 1011 (0 = wait forever).", minimum=0.0,
        metavar="S", group="HTTP")
    certfile: str = setting(
        "", "TLS: the server's certificate chain (PEM). With it, tls:// addresses are "
        "served over TLS, and so is every TCP address when none is tls://.",
        metavar="FILE", group="TLS and proxies")
    keyfile: str = setting(
        "", "TLS: the certificate's private key (PEM); '' if it is in certfile.",
        metavar="FILE", group="TLS and proxies")
    keyfile_password: str = setting(
        "", "TLS: the password of an encrypted keyfile.", metavar="PASSWORD",
        group="TLS and proxies")
    ca_certs: str = setting(
        "", "TLS: the CA certificates (PEM) that client certificates are verified "
        "against (mutual TLS; see cert_reqs).", metavar="FILE", group="TLS and proxies")
    cert_reqs: str = setting(
        "none", "TLS: ask clients for a certificate? none: never; optional: verified "
        "if sent; required: no connection without a valid one.",
        choices=("none", "optional", "required"), group="TLS and proxies")
    ssl_min_version: str = setting(
        "TLSv1.2", "TLS: the oldest protocol version accepted.",
        choices=("TLSv1.2", "TLSv1.3"), group="TLS and proxies")
    ciphers: str = setting(
        "", "TLS: the TLS 1.2 cipher suites, in OpenSSL's list format ('' = "
        "Python's secure default).", metavar="LIST", group="TLS and proxies")
    proxy_protocol: str = setting(
        "off", "Connections from proxy_allow_from start with a PROXY protocol header "
        "(HAProxy, AWS NLB), whose source address becomes the client's. v1: the text "
        "form; v2: the binary form; auto: either.", choices=("off", "v1", "v2", "auto"),
        group="TLS and proxies")
    proxy_allow_from: str = setting(
        "127.0.0.1,::1", "The peers whose PROXY headers are believed: addresses and "
        "CIDR networks, comma separated, or '*'.", metavar="NETS", check=netlist.check,
        group="TLS and proxies")
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1", "HTTP: the proxies whose X-Forwarded-For, X-Forwarded-Proto "
        "and Forwarded headers set the client address and scheme: addresses and CIDR "
        "networks, comma separated, or '*'; from other peers they change nothing.",
        metavar="NETS", check=netlist.check, group="TLS and proxies")
    forwarded_headers: str = setting(
        "x-forwarded", "HTTP: which headers a trusted proxy speaks: X-Forwarded-For and "
        "X-Forwarded-Proto, or RFC 7239 Forwarded. The other kind is ignored, since a "
        "proxy passes a client's own copy of it through.",
        choices=("x-forwarded", "forwarded"), group="TLS and proxies")
    error_log: str = setting(
        "-", "Where log lines go: a file path, or '-' for standard error. "
        "USR1 reopens it.", metavar="PATH", group="Logging")
    log_level: str = setting("info", "Least severe level logged.",
                             choices=LOG_LEVELS, group="Logging")
    access_log: str = setting(
        "", "HTTP: where to write the access log: a file path, '-' for standard "
        "output, '' for none. USR1 reopens it.", metavar="PATH", group="Logging")
    access_log_format: str = setting(
        "combined", "HTTP: access log lines in Apache combined format or as JSON.",
        choices=("combined", "json"), group="Logging")
    show_requests: bool = setting(
        True, "Each worker keeps the request it has been running longest in the "
        "scoreboard, for `prefork top`, `status` and /status (about a microsecond per "
        "request; --no-show-requests saves it). request_timeout needs it on the sync "
        "and thread workers and turns it on.", group="Logging")
    daemon: bool = setting(
        False, "Detach into the background (python-daemon). The command returns "
        "once the workers are ready, or fails with the error and its exit status.",
        group="Daemon and control")
    pidfile: str = setting(
        "", "Write the master's PID here, locked for the master's life: a second "
        "start is refused, a stale file is replaced, a clean stop removes it.",
        metavar="PATH", group="Daemon and control")
    control_socket: str = setting(
        "", "A unix socket (mode 0600) where the master answers `prefork status`, "
        "`top`, `reload`, `stop` and `scale`, one JSON request and reply per line. "
        "Unset, a master with a pidfile P opens it at P.ctl; set, P.ctl links to it: "
        "the commands find it through --pidfile either way.",
        metavar="PATH", group="Daemon and control")
    metrics_bind: str = setting(
        "", "Serve Prometheus metrics at http://ADDR/metrics from the master "
        "(HOST:PORT; '' = off). `prefork status --format prometheus` prints the "
        "same text.", metavar="ADDR", group="Daemon and control")
    user: str = setting(
        "", "Run workers as this user (name or uid), after binding as root.",
        metavar="USER", check=checks.user, group="Daemon and control")
    group: str = setting(
        "", "Run workers with this group (name or gid); default: the user's group.",
        metavar="GROUP", check=checks.group, group="Daemon and control")
    umask: str = setting(
        "", "File mode creation mask for the master and workers, in octal (e.g. "
        "022); '' leaves it as inherited.", metavar="MODE", check=checks.octal,
        group="Daemon and control")
    chdir: str = setting(
        "", "Change to this directory before loading the target (it is then "
        "importable from there).", metavar="DIR", check=checks.directory,
        group="Daemon and control")
    on_starting: str = setting(
        "", "Hook 'module:function' called in the master before it binds: "
        "f(config). A hook that raises is logged; the master goes on.",
        metavar="HOOK", check=checks.dotted, group="Hooks")
    when_ready: str = setting(
        "", "Hook called in the master each time a generation's workers are all "
        "ready (start, reload, upgrade): f(config).", metavar="HOOK", check=checks.dotted,
        group="Hooks")
    pre_fork: str = setting(
        "", "Hook called in the master just before a worker is forked: "
        "f(config, worker).", metavar="HOOK", check=checks.dotted, group="Hooks")
    post_fork: str = setting(
        "", "Hook called in a new worker before it loads the target: "
        "f(config, worker).", metavar="HOOK", check=checks.dotted, group="Hooks")
    worker_exit: str = setting(
        "", "Hook called in a worker after it stopped serving, before it exits "
        "(not when it is killed): f(config, worker).", metavar="HOOK", check=checks.dotted,
        group="Hooks")
    on_reload: str = setting(
        "", "Hook called in the master on HUP once the new config is loaded: "
        "f(config).", metavar="HOOK", check=checks.dotted, group="Hooks")
    on_exit: str = setting(
        "", "Hook called in the master just before it exits: f(config).",
        metavar="HOOK", check=checks.dotted, group="Hooks")

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def field_type(name: str) -> type:
    """The plain Python type of setting ``name``: int, float, str, bool or tuple."""
    return kind_of(FIELDS[name])


def read_toml(path: str) -> dict:
    """Parse a TOML file into a dict of settings, nothing validated yet."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data


def build(file_values: Mapping[str, Any], cli_values: Mapping[str, Any],
          path: str = "") -> Config:
    """Validate and merge TOML values and CLI values (CLI wins) into a Config."""
    values: dict = {}
    for origin, source in ((path or "config", file_values), ("command line", cli_values)):
        for name, value in source.items():
            if name not in FIELDS:
                raise ConfigError(f"{origin}: unknown key '{name}'")
            values[name] = coerce(FIELDS[name], value, origin)
    config = Config(**values)
    if config.reload and config.preload:
        raise ConfigError("reload cannot be combined with preload: the master would hold "
                          "the old code (drop preload while developing)")
    return config


def load(path: Optional[str], cli_values: Mapping[str, Any]) -> Config:
    """Read ``path`` (if any) and merge the CLI values over it."""
    file_values = read_toml(path) if path else {}
    config = build(file_values, cli_values, path or "")
    if not config.target:
        raise ConfigError("no TARGET given (module:name), neither on the command "
                          f"line nor as 'target' in {path or 'a config file'}")
    return config
