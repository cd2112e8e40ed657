"""Helpers for the security tests: a CA with server and client certificates, brokers with several listeners,
and a SCRAM exchange over a raw socket."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import BrokerProcess, RawClient, free_port

from kafkite.protocol.api_keys import ApiKey
from kafkite.security.scram import ScramClient


@dataclass
class Pki:
    ca: Path  # CA certificate (PEM)
    server: Path  # server certificate chain and key (PEM), for ssl.keystore.location
    client_cert: Path
    client_key: Path
    other_cert: Path  # a second client, CN=intruder
    other_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kafkite-tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    cn: str,
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kafkite test CA")
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    server, server_key = _issue(ca_key, ca_name, "localhost", server=True)
    (directory / "server.pem").write_bytes(server.public_bytes(pem) + _key_pem(server_key))
    paths: dict[str, Path] = {}
    for cn in ("client", "intruder"):
        cert, key = _issue(ca_key, ca_name, cn, server=False)
        paths[cn + ".crt"] = directory / f"{cn}.crt"
        paths[cn + ".key"] = directory / f"{cn}.key"
        paths[cn + ".crt"].write_bytes(cert.public_bytes(pem))
        paths[cn + ".key"].write_bytes(_key_pem(key))
    return Pki(
        ca=directory / "ca.pem",
        server=directory / "server.pem",
        client_cert=paths["client.crt"],
        client_key=paths["client.key"],
        other_cert=paths["intruder.crt"],
        other_key=paths["intruder.key"],
    )


class SecureBroker(BrokerProcess):
    """A broker subprocess with a PLAINTEXT listener (for readiness) and named secure listeners; the base
    class puts its single-listener setting first, so the listeners given here win."""

    def __init__(
        self, data_dir: Path, log_path: Path, listeners: dict[str, str], overrides: Iterable[str] = ()
    ):
        super().__init__(data_dir, log_path, list(overrides))
        self.ports = {name: free_port() for name in listeners}
        self.protocols = dict(listeners)
        spec = [f"PLAINTEXT://127.0.0.1:{self.port}"] + [
            f"{name}://127.0.0.1:{port}" for name, port in self.ports.items()
        ]
        proto_map = ["PLAINTEXT:PLAINTEXT"] + [f"{n}:{p}" for n, p in listeners.items()]
        self.overrides = [
            f"listeners={','.join(spec)}",
            f"listener.security.protocol.map={','.join(proto_map)}",
            *self.overrides,
        ]

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"


def client_ssl_context(pki: Pki, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


class TlsRawClient(RawClient):
    """RawClient over TLS."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float = 10.0) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        from kafkite.protocol.messages import registry

        self.reg = registry()
        self.client_id = "kafkite-tests"
        self.correlation_id = 0


def scram_login(c: RawClient, mechanism: str, user: str, password: str) -> dict[str, object]:
    """SaslHandshake + SCRAM exchange over ``c``; the last SaslAuthenticate response."""
    resp = c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": mechanism})
    assert resp["error_code"] == 0, resp
    sc = ScramClient(mechanism, user, password)
    first = c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": sc.first()})
    if first["error_code"]:
        return first
    final = c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": sc.final(bytes(first["auth_bytes"]))})
    if final["error_code"] == 0:
        assert sc.verify(bytes(final["auth_bytes"])), "server signature does not verify"
    return final
