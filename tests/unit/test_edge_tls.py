"""The TLS context and session info, with real files and real handshakes.

trustme makes the CAs and certificates.  Most handshakes run between two
ssl.SSLObjects over memory BIOs, in one thread and a bounded number of
rounds; one runs over a socketpair, for ssl.SSLSocket.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from prefork.config import Config
from prefork.errors import ConfigError
from prefork.servers.edge import tls, tls_info
from prefork.servers.edge.tls import server_context, wants_tls
from prefork.servers.edge.tls_info import asgi_extension, rfc4514, wsgi_environ

TLS13_SUITES = {0x1301, 0x1302, 0x1303}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost")


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert) -> Dict[str, str]:
    """cert, key, combined, enc (key encrypted with 's3cret'), other_key, ca, garbage."""
    key = serialization.load_pem_private_key(server_cert.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"s3cret"))
    cert_pem = server_cert.cert_chain_pems[0].bytes()
    contents = {
        "cert": cert_pem,
        "key": server_cert.private_key_pem.bytes(),
        "combined": server_cert.private_key_and_cert_chain_pem.bytes(),
        "enc": encrypted,
        "other_key": ca.issue_cert("other").private_key_pem.bytes(),
        "ca": ca.cert_pem.bytes(),
        "garbage": b"hello, not a certificate\n",
        "der": ssl.PEM_cert_to_DER_cert(cert_pem.decode()),
    }
    paths = {}
    for name, data in contents.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = str(path)
    paths["missing"] = str(tmp_path / "missing.pem")
    return paths


def config(**settings: Any) -> Config:
    return Config(**settings)


def client_context(ca: trustme.CA, alpn: Sequence[str] = ("http/1.1",),
                   cert: Optional[trustme.LeafCert] = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if cert is not None:
        cert.configure_cert(context)
    return context


def handshake(server: ssl.SSLContext,
              client: ssl.SSLContext) -> Tuple[ssl.SSLObject, ssl.SSLObject]:
    """Both ends of a finished handshake, pumping bytes between memory BIOs."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    ends = [client.wrap_bio(c_in, c_out, server_hostname="localhost"),
            server.wrap_bio(s_in, s_out, server_side=True)]
    done: List[bool] = [False, False]
    for _ in range(10):
        for i, end in enumerate(ends):
            if not done[i]:
                try:
                    end.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            return ends[1], ends[0]
    raise AssertionError("the handshake did not finish in 10 rounds")


def refused(key: str, *fragments: str) -> Any:
    """pytest.raises for a ConfigError naming key; the fragments checked after."""
    pattern = ".*".join(re.escape(fragment) for fragment in fragments)
    return pytest.raises(ConfigError, match=f"^key '{key}': .*{pattern}")


# The context from files -------------------------------------------------------------------


def test_cert_and_key_in_separate_files(files: Dict[str, str], ca: trustme.CA) -> None:
    context = server_context(config(certfile=files["cert"], keyfile=files["key"]))
    server, client = handshake(context, client_context(ca, alpn=("h2", "http/1.1")))
    assert server.version() == client.version() == "TLSv1.3"
    assert server.selected_alpn_protocol() == "http/1.1"


def test_cert_and_key_in_one_file(files: Dict[str, str], ca: trustme.CA) -> None:
    server, _ = handshake(server_context(config(certfile=files["combined"])), client_context(ca))
    assert server.version() == "TLSv1.3"


def test_a_listener_without_alpn_offers_none(files: Dict[str, str], ca: trustme.CA) -> None:
    context = server_context(config(certfile=files["combined"]), alpn=())
    server, client = handshake(context, client_context(ca))
    assert server.selected_alpn_protocol() is None and client.selected_alpn_protocol() is None


def test_the_context_options(files: Dict[str, str]) -> None:
    context = server_context(config(certfile=files["combined"]))
    for flag in (ssl.OP_NO_COMPRESSION, ssl.OP_CIPHER_SERVER_PREFERENCE,
                 ssl.OP_NO_RENEGOTIATION):
        assert context.options & flag == flag
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    # Only ca_certs is trusted for client certificates, never the system store.
    assert context.cert_store_stats()["x509"] == 0


def test_encrypted_key_with_its_password(files: Dict[str, str], ca: trustme.CA) -> None:
    settings = config(certfile=files["cert"], keyfile=files["enc"], keyfile_password="s3cret")
    server, _ = handshake(server_context(settings), client_context(ca))
    assert server.version() == "TLSv1.3"


def test_encrypted_key_with_a_wrong_password(files: Dict[str, str]) -> None:
    with refused("keyfile_password", "wrong password", files["enc"]):
        server_context(config(certfile=files["cert"], keyfile=files["enc"],
                              keyfile_password="nope"))


def test_encrypted_key_without_a_password_does_not_prompt(files: Dict[str, str]) -> None:
    with refused("keyfile_password", files["enc"], "encrypted and no password is set"):
        server_context(config(certfile=files["cert"], keyfile=files["enc"]))


def test_a_password_for_a_plain_key_is_ignored(files: Dict[str, str]) -> None:
    server_context(config(certfile=files["cert"], keyfile=files["key"], keyfile_password="x"))


def test_a_key_of_another_certificate(files: Dict[str, str]) -> None:
    with refused("keyfile", files["other_key"], "does not match the certificate", files["cert"]):
        server_context(config(certfile=files["cert"], keyfile=files["other_key"]))


@pytest.mark.parametrize("key", ["certfile", "keyfile"])
def test_a_missing_file(files: Dict[str, str], key: str) -> None:
    settings = {"certfile": files["cert"], "keyfile": files["key"], key: files["missing"]}
    with pytest.raises(ConfigError) as caught:
        server_context(config(**settings))
    assert str(caught.value) == f"key '{key}': cannot load {files['missing']!r}: no such file"


def test_a_directory_for_a_file(files: Dict[str, str], tmp_path: Path) -> None:
    with refused("keyfile", "is a directory"):
        server_context(config(certfile=files["cert"], keyfile=str(tmp_path)))


@pytest.mark.parametrize("wrong", ["garbage", "key", "der"])
def test_a_certfile_without_a_certificate(files: Dict[str, str], wrong: str) -> None:
    with refused("certfile", files[wrong], "not a PEM certificate"):
        server_context(config(certfile=files[wrong], keyfile=files["key"]))


def test_a_keyfile_without_a_key(files: Dict[str, str]) -> None:
    with refused("keyfile", files["garbage"], "no PEM private key"):
        server_context(config(certfile=files["cert"], keyfile=files["garbage"]))


def test_a_broken_key(files: Dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with refused("keyfile", str(broken), "not a valid PEM private key"):
        server_context(config(certfile=files["cert"], keyfile=str(broken)))


def test_a_certfile_alone_needs_the_key_in_it(files: Dict[str, str]) -> None:
    with refused("keyfile", "not set", files["cert"], "holds no private key"):
        server_context(config(certfile=files["cert"]))


def test_tls_wanted_without_a_certificate() -> None:
    assert not wants_tls(config())
    assert wants_tls(config(certfile="/x/cert.pem"))
    with refused("certfile", "tls:// addresses need a certificate"):
        server_context(config())


def test_ciphers_that_match_nothing(files: Dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        server_context(config(certfile=files["combined"], ciphers="FOO"))
    assert str(caught.value) == "key 'ciphers': no cipher matches 'FOO'"


def test_ciphers_choose_the_tls12_suite(files: Dict[str, str], ca: trustme.CA) -> None:
    context = server_context(config(certfile=files["combined"],
                                    ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    server, _ = handshake(context, client)
    environ = wsgi_environ(server)
    assert environ["SSL_PROTOCOL"] == "TLSv1.2"
    assert environ["SSL_CIPHER"] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    extension = asgi_extension(server, None)
    assert extension["tls_version"] == 0x0303
    assert extension["cipher_suite"] == 0xC02B       # RFC 5289


def test_the_minimum_version_is_honoured(files: Dict[str, str], ca: trustme.CA) -> None:
    old_client = client_context(ca)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    strict = server_context(config(certfile=files["combined"], ssl_min_version="TLSv1.3"))
    with pytest.raises(ssl.SSLError):
        handshake(strict, old_client)
    lenient = server_context(config(certfile=files["combined"]))
    assert handshake(lenient, old_client)[0].version() == "TLSv1.2"


# Mutual TLS -------------------------------------------------------------------------------


@pytest.mark.parametrize("reqs", ["optional", "required"])
def test_client_certificates_need_ca_certs(files: Dict[str, str], reqs: str) -> None:
    with refused("ca_certs", f"cert_reqs '{reqs}' needs"):
        server_context(config(certfile=files["combined"], cert_reqs=reqs))


@pytest.mark.parametrize("wrong,problem", [("missing", "no such file"),
                                           ("garbage", "not a PEM certificate")])
def test_bad_ca_certs(files: Dict[str, str], wrong: str, problem: str) -> None:
    with refused("ca_certs", files[wrong], problem):
        server_context(config(certfile=files["combined"], ca_certs=files[wrong],
                              cert_reqs="required"))


def test_ca_certs_with_comments_between_the_blocks(files: Dict[str, str],
                                                   tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes("# Főtanúsítvány\n".encode() + Path(files["ca"]).read_bytes())
    context = server_context(config(certfile=files["combined"], ca_certs=str(bundle),
                                    cert_reqs="required"))
    assert context.cert_store_stats()["x509_ca"] == 1


def mtls(files: Dict[str, str], reqs: str = "required") -> ssl.SSLContext:
    context = server_context(config(certfile=files["combined"], ca_certs=files["ca"],
                                    cert_reqs=reqs))
    assert context.verify_mode == tls.VERIFY_MODES[reqs]
    return context


def test_a_verified_client_certificate(files: Dict[str, str], ca: trustme.CA) -> None:
    leaf = ca.issue_cert("client@example.org", common_name="Doe, John",
                         organization_name="Example #1")
    server, _ = handshake(mtls(files), client_context(ca, cert=leaf))
    leaf_pem = leaf.cert_chain_pems[0].bytes().decode()
    environ = wsgi_environ(server)
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
    unit = server.getpeercert()["subject"][1][0][1]       # trustme's random OU
    assert environ["SSL_CLIENT_S_DN"] == f"CN=Doe\\, John,OU={unit},O=Example #1"
    issuer = dict(rdn[0] for rdn in server.getpeercert()["issuer"])
    assert environ["SSL_CLIENT_I_DN"] == (f"OU={issuer['organizationalUnitName']},"
                                          f"O={issuer['organizationName']}")
    assert pem_body(environ["SSL_CLIENT_CERT"]) == pem_body(leaf_pem)
    extension = asgi_extension(server, "SERVER PEM")
    assert extension["server_cert"] == "SERVER PEM"
    assert extension["client_cert_name"] == environ["SSL_CLIENT_S_DN"]
    assert extension["client_cert_error"] is None
    assert [pem_body(p) for p in extension["client_cert_chain"]] == [pem_body(leaf_pem)]


def test_an_intermediate_sent_by_the_client(files: Dict[str, str], ca: trustme.CA) -> None:
    leaf = ca.create_child_ca().issue_cert(common_name="device-7")
    server, _ = handshake(mtls(files), client_context(ca, cert=leaf))
    chain = asgi_extension(server, None)["client_cert_chain"]
    sent = [p.bytes().decode() for p in leaf.cert_chain_pems]
    assert pem_body(chain[0]) == pem_body(sent[0])
    if hasattr(ssl.SSLObject, "get_unverified_chain"):     # Python 3.13+
        assert [pem_body(p) for p in chain] == [pem_body(p) for p in sent]
    assert wsgi_environ(server)["SSL_CLIENT_S_DN"].startswith("CN=device-7,")


def test_required_without_a_client_certificate(files: Dict[str, str], ca: trustme.CA) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(mtls(files), client_context(ca))


def test_a_client_certificate_of_another_ca(files: Dict[str, str], ca: trustme.CA) -> None:
    stranger = trustme.CA().issue_cert(common_name="mallory")
    with pytest.raises(ssl.SSLError):
        handshake(mtls(files, "optional"), client_context(ca, cert=stranger))


def test_optional_without_a_client_certificate(files: Dict[str, str], ca: trustme.CA) -> None:
    server, _ = handshake(mtls(files, "optional"), client_context(ca))
    environ = wsgi_environ(server)
    assert environ["SSL_CLIENT_VERIFY"] == "NONE"
    assert not {"SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN", "SSL_CLIENT_CERT"} & set(environ)
    extension = asgi_extension(server, None)
    assert extension["client_cert_chain"] == [] and extension["client_cert_name"] is None


# What the application learns --------------------------------------------------------------


def test_without_a_client_certificate(files: Dict[str, str], ca: trustme.CA) -> None:
    server, _ = handshake(server_context(config(certfile=files["combined"])), client_context(ca))
    name = server.cipher()[0]
    assert wsgi_environ(server) == {"HTTPS": "on", "SSL_PROTOCOL": "TLSv1.3",
                                    "SSL_CIPHER": name, "SSL_CLIENT_VERIFY": "NONE"}
    extension = asgi_extension(server, None)
    assert extension == {"server_cert": None, "client_cert_chain": [],
                         "client_cert_name": None, "client_cert_error": None,
                         "tls_version": 0x0304, "cipher_suite": extension["cipher_suite"]}
    assert extension["cipher_suite"] in TLS13_SUITES
    assert extension["cipher_suite"] == {"TLS_AES_128_GCM_SHA256": 0x1301,
                                         "TLS_AES_256_GCM_SHA384": 0x1302,
                                         "TLS_CHACHA20_POLY1305_SHA256": 0x1303}[name]


def test_over_a_socketpair(files: Dict[str, str], ca: trustme.CA) -> None:
    """The same answers from an ssl.SSLSocket, as the blocking workers hold."""
    leaf = ca.issue_cert(common_name="sock")
    context = mtls(files)
    client_ctx = client_context(ca, cert=leaf)
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    failures: List[BaseException] = []

    def client() -> None:
        try:
            with client_ctx.wrap_socket(right, server_hostname="localhost") as sock:
                sock.sendall(b"x")
                sock.recv(1)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        with context.wrap_socket(left, server_side=True) as server:
            assert server.recv(1) == b"x"
            environ = wsgi_environ(server)
            extension = asgi_extension(server, None)
            server.sendall(b"y")
    finally:
        thread.join(10)
    assert not thread.is_alive() and not failures
    assert environ["SSL_CLIENT_S_DN"].startswith("CN=sock,")
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert extension["tls_version"] == 0x0304 and extension["cipher_suite"] in TLS13_SUITES


def test_rfc4514_order_and_escaping() -> None:
    subject = ((("countryName", "DE"),), (("organizationName", "A+B, \"C\" <D>; E\\"),),
               (("domainComponent", "org"), ("userId", "u1")),
               (("commonName", " #lead and trail "),), (("emailAddress", "a@b.example"),),
               (("2.5.4.97", "VATDE-1"),), (("commonName", "#x#\0"),))
    assert rfc4514(subject) == (
        "CN=\\#x#\\00,2.5.4.97=VATDE-1,emailAddress=a@b.example,"
        "CN=\\ #lead and trail\\ ,DC=org+UID=u1,"
        "O=A\\+B\\, \\\"C\\\" \\<D\\>\\; E\\\\,C=DE")
    assert rfc4514(()) == ""


def test_version_codes() -> None:
    assert tls_info.tls_version_code("TLSv1.2") == 0x0303
    assert tls_info.tls_version_code("TLSv1.3") == 0x0304
    assert tls_info.tls_version_code("TLSv1") == 0x0301
    assert tls_info.tls_version_code(None) is None
    assert tls_info.tls_version_code("QUIC") is None


def pem_body(pem: str) -> str:
    """The base64 between the armour lines, whatever the line endings."""
    return "".join(line.strip() for line in pem.strip().splitlines()[1:-1])
