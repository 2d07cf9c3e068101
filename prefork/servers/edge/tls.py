"""The server's TLS context, built from the ``certfile`` ... ``ciphers`` settings.

Built in the master each time a generation is loaded, so a HUP re-reads the
certificate and key files, and a bad file fails the load (exit status 2 at
start, a failed reload later) instead of every handshake in the workers.

OpenSSL reports most file problems as a bare "PEM lib", whichever file is at
fault, so each file is read and checked on its own first: the error then names
the setting and the file the operator has to fix.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING, Dict, List, NoReturn, Sequence

from ...errors import ConfigError

if TYPE_CHECKING:
    from ...config import Config

VERIFY_MODES: Dict[str, ssl.VerifyMode] = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
MIN_VERSIONS: Dict[str, ssl.TLSVersion] = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}

# Renegotiation (TLS 1.2 only; TLS 1.3 has none) lets a client make the server
# redo the costly handshake at will on an open connection.  The single-use DH
# and ECDH options are no-ops since OpenSSL 1.1.0 (fresh keys always); set for
# older libraries.  getattr: an ssl module may lack a flag its OpenSSL lacks.
OPTIONS = (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
           | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
           | getattr(ssl, "OP_SINGLE_DH_USE", 0) | getattr(ssl, "OP_SINGLE_ECDH_USE", 0))


def wants_tls(config: Config) -> bool:
    """Whether TLS is configured at all: a certificate is given."""
    return bool(config.certfile)


def server_context(config: Config, alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    """The SSLContext for a generation's TLS listeners, from the config's TLS settings.

    ``alpn`` is what the listener offers in ALPN, most preferred first; a listener
    that does not speak HTTP passes ``()`` and offers nothing.  Raises ConfigError
    naming the setting and the file at fault.
    """
    if not config.certfile:
        raise ConfigError("key 'certfile': tls:// addresses need a certificate")
    # Not ssl.create_default_context(Purpose.CLIENT_AUTH): it trusts the system's
    # CAs for client certificates, so any publicly issued certificate would pass
    # mutual TLS.  Here only ca_certs is trusted.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.options |= OPTIONS
    try:
        context.minimum_version = MIN_VERSIONS[config.ssl_min_version]
    except KeyError:
        raise ConfigError(f"key 'ssl_min_version': {config.ssl_min_version!r} is not one of "
                          f"{', '.join(MIN_VERSIONS)}") from None
    _load_chain(context, config)
    _load_client_cas(context, config)
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError:
            raise ConfigError(f"key 'ciphers': no cipher matches {config.ciphers!r}") from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _load_chain(context: ssl.SSLContext, config: Config) -> None:
    """The certificate chain and its key, each file checked before OpenSSL loads them."""
    cert_text = _read("certfile", config.certfile)
    _check_certificates("certfile", config.certfile, cert_text)
    # A combined file (certificate and key in certfile) is named as certfile.
    key_key, key_path = ("keyfile", config.keyfile) if config.keyfile else (
        "certfile", config.certfile)
    key_text = _read(key_key, key_path) if config.keyfile else cert_text
    if "PRIVATE KEY-----" not in key_text:
        if config.keyfile:
            _fail(key_key, key_path, "no PEM private key")
        raise ConfigError(f"key 'keyfile': not set, and the certfile {config.certfile!r} "
                          "holds no private key")
    asked: List[bool] = []

    def password() -> str:
        # Without a callback OpenSSL would prompt on the terminal for an
        # encrypted key: a master started by a service manager would hang.
        asked.append(True)
        if not config.keyfile_password:
            raise ConfigError(f"key 'keyfile_password': the key in {key_path!r} is "
                              "encrypted and no password is set")
        return config.keyfile_password

    try:
        context.load_cert_chain(config.certfile, config.keyfile or None, password=password)
    except OSError as exc:  # the file changed since it was read; SSLError is an OSError
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            _fail(key_key, key_path, f"the key does not match the certificate in "
                  f"{config.certfile!r}")
        if isinstance(exc, ssl.SSLError) and asked:
            raise ConfigError(f"key 'keyfile_password': wrong password for the key in "
                              f"{key_path!r}") from None
        if isinstance(exc, ssl.SSLError):
            _fail(key_key, key_path, "not a valid PEM private key")
        _fail(key_key, key_path, _strerror(exc))
    except ValueError as exc:  # a password longer than OpenSSL's buffer
        raise ConfigError(f"key 'keyfile_password': {exc}") from None


def _load_client_cas(context: ssl.SSLContext, config: Config) -> None:
    """The CAs client certificates are verified against, and whether clients are asked."""
    try:
        context.verify_mode = VERIFY_MODES[config.cert_reqs]
    except KeyError:
        raise ConfigError(f"key 'cert_reqs': {config.cert_reqs!r} is not one of "
                          f"{', '.join(VERIFY_MODES)}") from None
    if not config.ca_certs:
        if config.cert_reqs != "none":
            raise ConfigError(f"key 'ca_certs': cert_reqs {config.cert_reqs!r} needs the CA "
                              "certificates that client certificates are verified against")
        return
    # Loaded even with cert_reqs 'none', where it has no effect: a wrong path
    # is then reported now rather than when mutual TLS is switched on.
    _check_certificates("ca_certs", config.ca_certs, _read("ca_certs", config.ca_certs))
    try:
        context.load_verify_locations(cafile=config.ca_certs)
    except ssl.SSLError:
        _fail("ca_certs", config.ca_certs, "not a PEM certificate")
    except OSError as exc:
        _fail("ca_certs", config.ca_certs, _strerror(exc))


def _read(key: str, path: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        _fail(key, path, _strerror(exc))
    # PEM is ASCII, but CA bundles may carry non-ASCII comments between the
    # blocks (certifi's do); dropping those bytes leaves the blocks intact.
    return data.decode("ascii", "ignore")


def _check_certificates(key: str, path: str, text: str) -> None:
    """Fail unless the text holds at least one parseable PEM certificate.

    A scratch store parses each CERTIFICATE block and skips any other (such as
    the key of a combined file), so an empty file, a key alone or a DER file is
    told apart from a bad key.
    """
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        scratch.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError):
        _fail(key, path, "not a PEM certificate")


def _strerror(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _fail(key: str, path: str, problem: str) -> NoReturn:
    raise ConfigError(f"key '{key}': cannot load {path!r}: {problem}") from None


def close_notify(sock: socket.socket) -> None:
    """End a TLS connection's stream with a close_notify alert before the TCP close,
    so the client can tell the end of a response from a cut (RFC 8446 6.1); the
    client's answer is not waited for.  A plain socket: nothing to do."""
    if not isinstance(sock, ssl.SSLSocket):
        return
    try:
        # Non-blocking: the alert goes out, and the wait for the peer's own
        # close_notify (which unwrap() would do) ends at once.
        sock.setblocking(False)
        sock.unwrap()
    except (OSError, ValueError):
        pass
