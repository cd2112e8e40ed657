"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses them: credential derivation and the
server side of one exchange as a small state machine without I/O.

Kafka's flavour: no channel binding (the GS2 header is ``n,,`` or ``n,a=<user>,``), optional extensions in the
client's first message (``tokenauth=true`` is refused: kafkite issues no delegation tokens), iterations
between 4096 and 16384.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 8192

# Kafka's ScramMechanism codes (DescribeUserScramCredentials / AlterUserScramCredentials).
MECHANISM_CODES: dict[str, int] = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISM_NAMES: dict[int, str] = {v: k for k, v in MECHANISM_CODES.items()}
HASHES: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class ScramError(Exception):
    """The exchange failed; the message is safe to tell the client."""


@dataclass(frozen=True)
class ScramCredential:
    """What the broker keeps for one user and mechanism: never the password itself."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _hmac(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(HASHES[mechanism], password.encode("utf-8"), salt, iterations)


def credential_from_salted(mechanism: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    h = HASHES[mechanism]
    client_key = _hmac(h, salted, b"Client Key")
    stored_key = hashlib.new(h, client_key).digest()
    server_key = _hmac(h, salted, b"Server Key")
    return ScramCredential(salt, iterations, stored_key, server_key)


def make_credential(
    mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramCredential:
    """A fresh credential for ``password`` with a random salt."""
    if mechanism not in HASHES:
        raise ValueError(f"unknown SCRAM mechanism {mechanism!r}")
    check_iterations(iterations)
    salt = salt if salt is not None else os.urandom(32)
    return credential_from_salted(
        mechanism, salted_password(mechanism, password, salt, iterations), salt, iterations
    )


def check_iterations(iterations: int) -> None:
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(
            f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}"
        )


def password_matches(mechanism: str, cred: ScramCredential, password: str) -> bool:
    """Check a clear-text password (SASL/PLAIN) against a stored SCRAM credential."""
    derived = credential_from_salted(
        mechanism,
        salted_password(mechanism, password, cred.salt, cred.iterations),
        cred.salt,
        cred.iterations,
    )
    return hmac.compare_digest(derived.stored_key, cred.stored_key)


def _unescape_username(raw: str) -> str:
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "=":
            code = raw[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise ScramError("invalid escape in SCRAM user name")
            i += 3
            continue
        if c == ",":
            raise ScramError("invalid SCRAM user name")
        out.append(c)
        i += 1
    return "".join(out)


def _attributes(msg: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in msg.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ScramError(f"invalid SCRAM attribute {item[:20]!r}")
        out.setdefault(key, value)
    return out


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ScramError("invalid base64 in SCRAM message") from None


CredentialLookup = Callable[[str], "ScramCredential | None"]


class ScramServer:
    """One exchange: ``first(client_first) -> server_first``, then ``final(client_final) -> server_final``.

    ``lookup(username)`` returns the user's credential for this mechanism or None. Failures raise
    :class:`ScramError`; once finished, ``username`` holds the authenticated user.
    """

    def __init__(self, mechanism: str, lookup: CredentialLookup, nonce: str | None = None) -> None:
        if mechanism not in HASHES:
            raise ValueError(f"unknown SCRAM mechanism {mechanism!r}")
        self.mechanism = mechanism
        self.hash = HASHES[mechanism]
        self.lookup = lookup
        self.server_nonce = nonce or base64.b64encode(os.urandom(24)).decode("ascii")
        self.state = "initial"
        self.username: str | None = None
        self._cred: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = ""
        self._nonce = ""

    def first(self, data: bytes) -> bytes:
        if self.state != "initial":
            raise ScramError("unexpected SCRAM message")
        self.state = "failed"
        try:
            msg = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        # gs2-header: gs2-cbind-flag "," [authzid] ","
        parts = msg.split(",", 2)
        if len(parts) != 3:
            raise ScramError("invalid SCRAM client-first message")
        cbind, authzid, bare = parts
        if cbind not in ("n", "y"):
            raise ScramError("channel binding is not supported")
        if authzid and not authzid.startswith("a="):
            raise ScramError("invalid authorization id")
        attrs = _attributes(bare)
        if "m" in attrs:
            raise ScramError("mandatory SCRAM extensions are not supported")
        if "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise ScramError("SCRAM client-first message lacks a user name or nonce")
        username = _unescape_username(attrs["n"])
        if authzid and _unescape_username(authzid[2:]) != username:
            raise ScramError("authorization id differs from the user name")
        if attrs.get("tokenauth", "").lower() == "true":
            raise ScramError("delegation tokens are not supported")
        cred = self.lookup(username)
        if cred is None:
            raise ScramError(
                f"Authentication failed during authentication due to invalid credentials with SASL mechanism "
                f"{self.mechanism}"
            )
        self.username = username
        self._cred = cred
        self._gs2_header = f"{cbind},{authzid},"
        self._client_first_bare = bare
        self._nonce = attrs["r"] + self.server_nonce
        salt = base64.b64encode(cred.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={cred.iterations}"
        self.state = "first-sent"
        return self._server_first.encode("ascii")

    def final(self, data: bytes) -> bytes:
        if self.state != "first-sent" or self._cred is None:
            raise ScramError("unexpected SCRAM message")
        self.state = "failed"
        try:
            msg = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        without_proof, sep, proof_part = msg.rpartition(",p=")
        if not sep:
            raise ScramError("SCRAM client-final message lacks a proof")
        attrs = _attributes(without_proof)
        if attrs.get("r") != self._nonce:
            raise ScramError("SCRAM nonce mismatch")
        if _b64decode(attrs.get("c", "")) != self._gs2_header.encode("utf-8"):
            raise ScramError("SCRAM channel binding mismatch")
        proof = _b64decode(proof_part)
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        cred = self._cred
        signature = _hmac(self.hash, cred.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError(self._invalid())
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash, client_key).digest(), cred.stored_key):
            raise ScramError(self._invalid())
        server_signature = _hmac(self.hash, cred.server_key, auth_message)
        self.state = "done"
        return b"v=" + base64.b64encode(server_signature)

    def _invalid(self) -> str:
        return (
            "Authentication failed during authentication due to invalid credentials with SASL mechanism "
            f"{self.mechanism}"
        )


class ScramClient:
    """The client side (for tests and tools): ``first() -> bytes``, ``final(server_first) -> bytes``,
    ``verify(server_final)``."""

    def __init__(self, mechanism: str, username: str, password: str, nonce: str | None = None) -> None:
        self.mechanism = mechanism
        self.hash = HASHES[mechanism]
        self.username = username
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(24)).decode("ascii")
        self._bare = ""
        self._auth_message = b""
        self._salted = b""

    def first(self) -> bytes:
        name = self.username.replace("=", "=3D").replace(",", "=2C")
        self._bare = f"n={name},r={self.nonce}"
        return ("n,," + self._bare).encode()

    def final(self, server_first: bytes) -> bytes:
        """The client-final message; raises ScramError for a server error (e=) or a malformed first message
        (including a nonce that does not extend ours)."""
        text = server_first.decode(errors="replace")
        attrs = _attributes(text)
        if "e" in attrs:
            raise ScramError(f"server refused: {attrs['e']}")
        nonce = attrs.get("r", "")
        try:
            salt = _b64decode(attrs.get("s", ""))
            iterations = int(attrs.get("i", "0"))
        except ValueError:
            raise ScramError("bad server-first message") from None
        if not nonce.startswith(self.nonce) or nonce == self.nonce or not salt or iterations < 1:
            raise ScramError("bad server-first message")
        self._salted = salted_password(self.mechanism, self.password, salt, iterations)
        without_proof = f"c=biws,r={nonce}"
        self._auth_message = f"{self._bare},{text},{without_proof}".encode()
        client_key = _hmac(self.hash, self._salted, b"Client Key")
        stored_key = hashlib.new(self.hash, client_key).digest()
        signature = _hmac(self.hash, stored_key, self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        """Whether the server-final message proves the server knows the credential; ScramError for e=."""
        attrs = _attributes(server_final.decode(errors="replace"))
        if "e" in attrs:
            raise ScramError(f"server refused: {attrs['e']}")
        server_key = _hmac(self.hash, self._salted, b"Server Key")
        expected = _hmac(self.hash, server_key, self._auth_message)
        try:
            given = _b64decode(attrs.get("v", ""))
        except ValueError:
            return False
        return hmac.compare_digest(given, expected)
