"""What the application learns about a connection's TLS session.

Pure functions over a finished handshake: an ``ssl.SSLSocket`` (blocking
workers) or an ``ssl.SSLObject`` (memory BIOs under asyncio) answer the same
questions.  WSGI gets Apache mod_ssl's variable names, which WSGI frameworks
already read; ASGI gets the "tls" scope extension of the ASGI TLS spec.
"""

from __future__ import annotations

import ssl
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

TLSConnection = Union[ssl.SSLSocket, ssl.SSLObject]
# getpeercert()'s subject or issuer: RDNs, each a tuple of (attribute, value) pairs.
Name = Sequence[Sequence[Tuple[str, str]]]

# The attribute types RFC 4514 (section 3) gives a short name; the ssl module
# reports OpenSSL's long names.  Any other type keeps the name the ssl module
# gives (emailAddress, serialNumber, or a dotted OID), all valid attribute types.
SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
SPECIAL = '"+,;<>\\'

# Cipher names to their IANA code; OpenSSL's names are global, so one table
# serves every context, filled as suites are first seen.
_suites: Dict[str, Optional[int]] = {}


def wsgi_environ(tls: TLSConnection) -> Dict[str, str]:
    """HTTPS and mod_ssl's SSL_* variables for a WSGI environ.

    SSL_CLIENT_VERIFY is always there ('SUCCESS' for a verified client
    certificate, else 'NONE'); the SSL_CLIENT_* names and the certificate only
    when the client sent one.
    """
    cipher = tls.cipher()
    environ = {"HTTPS": "on", "SSL_PROTOCOL": tls.version() or "",
               "SSL_CIPHER": cipher[0] if cipher else "", "SSL_CLIENT_VERIFY": "NONE"}
    # With verification on, the dict form is only filled for a verified
    # certificate; the binary form is whatever the client sent.
    peer = tls.getpeercert() or {}
    der = tls.getpeercert(binary_form=True)
    if peer:
        environ["SSL_CLIENT_VERIFY"] = "SUCCESS"
        environ["SSL_CLIENT_S_DN"] = rfc4514(peer.get("subject", ()))
        environ["SSL_CLIENT_I_DN"] = rfc4514(peer.get("issuer", ()))
    if der:
        environ["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der)
    return environ


def asgi_extension(tls: TLSConnection, server_cert_pem: Optional[str]) -> Dict[str, Any]:
    """The value of ``scope["extensions"]["tls"]`` (ASGI TLS extension 0.2).

    ``server_cert_pem`` is the server's certificate, read once by the caller
    from certfile (the ssl module does not hand back its own certificate).
    """
    peer = tls.getpeercert() or {}
    der = tls.getpeercert(binary_form=True)
    cipher = tls.cipher()
    return {
        "server_cert": server_cert_pem,
        "client_cert_chain": client_chain(tls),
        "client_cert_name": rfc4514(peer.get("subject", ())) if peer else None,
        # A certificate that fails verification fails the handshake, so one
        # that is here unverified was never checked (verification off).
        "client_cert_error": "not verified" if der and not peer else None,
        "tls_version": tls_version_code(tls.version()),
        "cipher_suite": cipher_suite_code(tls, cipher[0]) if cipher else None,
    }


def client_chain(tls: TLSConnection) -> List[str]:
    """The client's certificate then the chain it sent, as PEM; [] without one.

    Python 3.13 exposes the chain as sent (get_unverified_chain); before that
    only the client's own certificate is at hand, which the ASGI spec allows as
    the whole list.
    """
    der = tls.getpeercert(binary_form=True)
    if not der:
        return []
    chain: List[bytes] = []
    sent = getattr(tls, "get_unverified_chain", None)
    if sent is not None:
        try:
            chain = [bytes(c) for c in (sent() or [])]
        except (AttributeError, TypeError, ValueError):
            # Some 3.13/3.14 releases fail here on resumed server sessions;
            # the client's own certificate is still known.
            chain = []
    # On a server OpenSSL's peer chain may leave out the peer's own certificate.
    if not chain or chain[0] != der:
        chain.insert(0, der)
    return [ssl.DER_cert_to_PEM_cert(c) for c in chain]


def tls_version_code(version: Optional[str]) -> Optional[int]:
    """The protocol's wire code, as in 'TLSv1.3' -> 0x0304; None if unknown."""
    if not version:
        return None
    # TLSVersion's values are the wire codes; its names use '_' for '.'.
    member = getattr(ssl.TLSVersion, version.replace(".", "_"), None)
    return int(member) if member is not None and int(member) > 0 else None


def cipher_suite_code(tls: TLSConnection, name: str) -> Optional[int]:
    """The negotiated suite's IANA code (0x1302 for TLS_AES_256_GCM_SHA384), or None.

    The ssl module names the suite only; SSLContext.get_ciphers() gives OpenSSL's
    id for each enabled suite, 0x0300XXXX for TLS suites, XXXX being the code.
    The negotiated suite is one of the context's, so it is found there.
    """
    if name not in _suites:
        code = None
        for suite in tls.context.get_ciphers():
            if suite.get("name") == name and suite.get("id", 0) >> 16 == 0x0300:
                code = suite["id"] & 0xFFFF
                break
        _suites[name] = code
    return _suites[name]


def rfc4514(name: Name) -> str:
    """A distinguished name as an RFC 4514 string: most specific RDN first.

    getpeercert() lists the RDNs in certificate order (country first, common
    name last); RFC 4514 writes them the other way round.  The attributes of a
    multi-valued RDN are joined with '+'.
    """
    return ",".join("+".join(f"{SHORT_NAMES.get(kind, kind)}={escape(value)}"
                             for kind, value in rdn)
                    for rdn in reversed(tuple(name)))


def escape(value: str) -> str:
    """An attribute value escaped as RFC 4514 section 2.4 requires."""
    out = []
    for i, char in enumerate(value):
        if char == "\0":
            out.append("\\00")
        elif char in SPECIAL or (char == " " and i in (0, len(value) - 1)) or (
                char == "#" and i == 0):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)
