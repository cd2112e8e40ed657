"""OCI request signatures (HTTP Signatures, rsa-sha256) as the OCI SDKs and CLI make them.

The ``Authorization`` header is ``Signature version="1",keyId="tenancy/user/fingerprint",
algorithm="rsa-sha256",headers="date (request-target) host ...",signature="<base64>"``. The signing string is
one ``name: value`` line per listed header; ``(request-target)`` is ``<method> <path?query>``. Requests with
a body must also sign ``content-length``, ``content-type`` and ``x-content-sha256`` (the body's
SHA-256, base64).

Public keys come from PEM files; a key is found by its fingerprint (MD5 of its DER SubjectPublicKeyInfo, as
OCI shows it), the last part of ``keyId``. RSA PKCS#1 v1.5 verification is done here with integer arithmetic.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MAX_CLOCK_SKEW_S = 300
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
REQUIRED_HEADERS = ("(request-target)", "host")
REQUIRED_BODY_HEADERS = ("content-length", "content-type", "x-content-sha256")
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_RSA_OID = bytes.fromhex("2a864886f70d010101")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class AuthError(Exception):
    """The request is not signed by a known key (401 NotAuthenticated)."""


@dataclass(frozen=True)
class PublicKey:
    n: int
    e: int
    fingerprint: str
    source: str

    def verify(self, message: bytes, signature: bytes) -> bool:
        """RSASSA-PKCS1-v1_5 with SHA-256."""
        k = (self.n.bit_length() + 7) // 8
        if len(signature) != k:
            return False
        s = int.from_bytes(signature, "big")
        if s >= self.n:
            return False
        em = pow(s, self.e, self.n).to_bytes(k, "big")
        t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        if k < len(t) + 11:
            return False
        expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        return em == expected


# ---------------------------------------------------------------------------------------------- keys


def _der_read(buf: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, position after) of the DER element at ``pos``."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    content = buf[pos : pos + length]
    if len(content) != length:
        raise ValueError("truncated DER")
    return tag, content, pos + length


def _rsa_numbers(pkcs1: bytes) -> tuple[int, int]:
    tag, seq, _ = _der_read(pkcs1, 0)
    if tag != 0x30:
        raise ValueError("not an RSA public key")
    tag, n, pos = _der_read(seq, 0)
    tag2, e, _ = _der_read(seq, pos)
    if tag != 0x02 or tag2 != 0x02:
        raise ValueError("not an RSA public key")
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


def _spki_from_pkcs1(pkcs1: bytes) -> bytes:
    def tlv(tag: int, content: bytes) -> bytes:
        n = len(content)
        if n < 0x80:
            return bytes([tag, n]) + content
        ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([tag, 0x80 | len(ln)]) + ln + content

    algo = tlv(0x30, tlv(0x06, _RSA_OID) + b"\x05\x00")
    return tlv(0x30, algo + tlv(0x03, b"\x00" + pkcs1))


def fingerprint(spki_der: bytes) -> str:
    return ":".join(f"{b:02x}" for b in hashlib.md5(spki_der, usedforsecurity=False).digest())


def load_public_key(pem: str, source: str = "") -> PublicKey:
    """An RSA public key from PEM (``PUBLIC KEY`` or ``RSA PUBLIC KEY``)."""
    m = re.search(r"-----BEGIN (RSA )?PUBLIC KEY-----(.*?)-----END (RSA )?PUBLIC KEY-----", pem, re.S)
    if m is None:
        raise ValueError(f"{source or 'key'}: no PEM public key found")
    try:
        der = base64.b64decode("".join(m.group(2).split()))
    except binascii.Error as err:
        raise ValueError(f"{source or 'key'}: bad base64: {err}") from None
    if m.group(1):
        spki = _spki_from_pkcs1(der)
        n, e = _rsa_numbers(der)
    else:
        tag, seq, _ = _der_read(der, 0)
        tag_a, algo, pos = _der_read(seq, 0)
        tag_b, bits, _ = _der_read(seq, pos)
        if tag != 0x30 or tag_a != 0x30 or tag_b != 0x03 or _RSA_OID not in algo:
            raise ValueError(f"{source or 'key'}: not an RSA public key")
        n, e = _rsa_numbers(bits[1:])
        spki = der
    return PublicKey(n, e, fingerprint(spki), source)


def load_keys(spec: str) -> list[PublicKey]:
    """Keys from a comma-separated list of PEM files and directories (their ``*.pem`` files)."""
    keys: list[PublicKey] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        path = Path(item).expanduser()
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        for f in files:
            try:
                text = f.read_text()
            except OSError as e:
                raise ValueError(f"cannot read {f}: {e}") from None
            keys.append(load_public_key(text, str(f)))
    return keys


# ---------------------------------------------------------------------------------------------- verify


class Verifier:
    def __init__(self, keys: list[PublicKey], max_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
        self.keys = {k.fingerprint: k for k in keys}
        self.max_skew_s = max_skew_s

    def verify(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        body_signed: bool = True,
    ) -> str:
        """Check one request; return its keyId. ``target`` is the path with its query string, as sent.

        ``body_signed=False`` accepts a request with a body whose signature does not cover it (the SDKs sign
        PutMessages that way).
        """
        auth = headers.get("authorization", "")
        if not auth.startswith("Signature "):
            raise AuthError("the request is not signed (no Authorization: Signature header)")
        params = dict(_PARAM.findall(auth))
        key_id: str = params.get("keyId", "")
        signed = params.get("headers", "date").lower().split()
        if params.get("algorithm", "rsa-sha256") != "rsa-sha256":
            raise AuthError("only rsa-sha256 signatures are accepted")
        if "signature" not in params or not key_id:
            raise AuthError("the Authorization header lacks keyId or signature")
        needed = list(REQUIRED_HEADERS)
        if method.upper() in BODY_METHODS and body_signed:
            needed += REQUIRED_BODY_HEADERS
        if "date" not in signed and "x-date" not in signed:
            needed.append("date")
        missing = [h for h in needed if h not in signed]
        if missing:
            raise AuthError(f"the signature must cover {', '.join(missing)}")
        date = headers.get("x-date") or headers.get("date")
        if not date:
            raise AuthError("the request has no date header")
        try:
            when = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            raise AuthError(f"unreadable date header {date!r}") from None
        if abs(time.time() - when) > self.max_skew_s:
            raise AuthError("the date header is more than 5 minutes away from the server's clock")
        if "x-content-sha256" in signed:
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if headers.get("x-content-sha256") != digest:
                raise AuthError("x-content-sha256 does not match the body")
        if "content-length" in signed and headers.get("content-length") != str(len(body)):
            raise AuthError("content-length does not match the body")
        lines = []
        for h in signed:
            if h == "(request-target)":
                lines.append(f"(request-target): {method.lower()} {target}")
            else:
                value = headers.get(h)
                if value is None:
                    raise AuthError(f"signed header {h!r} is missing from the request")
                lines.append(f"{h}: {value}")
        fp = key_id.rsplit("/", 1)[-1]
        key = self.keys.get(fp)
        if key is None:
            raise AuthError(f"no API key with fingerprint {fp} is configured")
        try:
            sig = base64.b64decode(params["signature"], validate=True)
        except binascii.Error:
            raise AuthError("the signature is not base64") from None
        if not key.verify("\n".join(lines).encode(), sig):
            raise AuthError("the signature does not verify")
        return key_id
