"""TLS for SSL and SASL_SSL listeners (standard library ``ssl``): the server context from the broker's
``ssl.*`` keys, and the principal of a client certificate.

The principal of a mutually authenticated TLS connection is ``User:`` followed by the certificate subject in
RFC 2253 form, most specific part first, as Kafka prints it: ``User:CN=client,OU=eng,O=example``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from kafkite.config import BrokerConfig, ConfigError

_PROTOCOLS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# getpeercert() attribute names -> the short names of RFC 2253 (others keep their long name).
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationalUnitName": "OU",
    "organizationName": "O",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def server_context(config: BrokerConfig) -> ssl.SSLContext:
    """The TLS context of the broker's SSL listeners; raises ConfigError naming the key to fix."""
    keystore: str = config["ssl.keystore.location"]
    if not keystore:
        raise ConfigError(
            "ssl.keystore.location: an SSL or SASL_SSL listener needs a PEM certificate and key"
        )
    if not Path(keystore).is_file():
        raise ConfigError(f"ssl.keystore.location: {keystore} does not exist")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = []
    for name in config["ssl.enabled.protocols"]:
        if name not in _PROTOCOLS:
            raise ConfigError(f"ssl.enabled.protocols: {name!r} is not one of {', '.join(_PROTOCOLS)}")
        versions.append(_PROTOCOLS[name])
    if not versions:
        raise ConfigError("ssl.enabled.protocols: at least one protocol is required")
    ctx.minimum_version = min(versions)
    ctx.maximum_version = max(versions)
    try:
        ctx.load_cert_chain(keystore, password=config["ssl.key.password"] or None)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(
            f"ssl.keystore.location: cannot load a certificate and key from {keystore}: {e}"
        ) from None
    truststore: str = config["ssl.truststore.location"]
    client_auth: str = config["ssl.client.auth"]
    if truststore:
        try:
            ctx.load_verify_locations(cafile=truststore)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(
                f"ssl.truststore.location: cannot load CA certificates from {truststore}: {e}"
            ) from None
    elif client_auth != "none":
        raise ConfigError(f"ssl.client.auth={client_auth} needs ssl.truststore.location (the CAs to trust)")
    ctx.verify_mode = {
        "none": ssl.CERT_NONE,
        "requested": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[client_auth]
    return ctx


def subject_principal(cert: dict[str, Any] | None) -> str | None:
    """``User:<RFC 2253 subject>`` of a peer certificate as returned by ``SSLObject.getpeercert()``."""
    if not cert:
        return None
    rdns = cert.get("subject") or ()
    parts: list[str] = []
    for rdn in reversed(rdns):
        parts.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn))
    if not parts:
        return None
    return "User:" + ",".join(parts)


def _escape(value: str) -> str:
    out = []
    for i, c in enumerate(value):
        if c in ',+"\\<>;' or (c == "#" and i == 0) or (c == " " and i in (0, len(value) - 1)):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)
