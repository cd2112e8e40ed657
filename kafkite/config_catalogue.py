"""Apache Kafka's broker configuration keys: what each one is in Kafka 4.2 (type, Kafka's default, valid
values, importance, whether Kafka can change it at run time), read from ``config_catalogue.tsv``.

``kafkite.config`` holds the keys kafkite acts on; every other key of this catalogue is accepted, validated
as Kafka validates it, stored and described, and has no effect (Kerberos, replication, KRaft, tiered
storage, thread pools, ...). Kafka's defaults here are also what ``defaults=kafka`` restores and what the
audit of kafkite's own defaults compares against.

Valid-value notation of the ``valid`` column: ``-`` anything of the type; ``>=N``; ``A..B`` (inclusive);
``{a,b}`` one of (``{a,b}i`` ignoring case); ``[a,b]`` a list of those (``[a,b]+`` not empty); ``list`` /
``list+`` a list without duplicates (not empty); ``nonempty`` a non-empty string; ``@gzip`` a gzip level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATALOGUE_FILE = Path(__file__).with_name("config_catalogue.tsv")

TYPES = ("BOOLEAN", "STRING", "INT", "SHORT", "LONG", "DOUBLE", "LIST", "CLASS", "PASSWORD")
READ_ONLY, PER_BROKER, CLUSTER_WIDE = "read-only", "per-broker", "cluster-wide"

_INT_BITS = {"SHORT": 16, "INT": 32, "LONG": 64}
_CLASS_NAME = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*(\$[\w$]+)?")
_LIST_SPLIT = re.compile(r"\s*,\s*")

# Keys a listener names with its mechanism as well: listener.name.<listener>.<mechanism>.<key>.
LISTENER_MECHANISM_KEYS = frozenset(
    {
        "sasl.jaas.config",
        "sasl.login.callback.handler.class",
        "sasl.login.class",
        "sasl.server.callback.handler.class",
        "connections.max.reauth.ms",
    }
)
# SSL keys Kafka changes at run time only under a listener prefix (listener.name.<listener>.<key>).
PER_LISTENER_ONLY = frozenset(
    {
        "ssl.keystore.type",
        "ssl.keystore.location",
        "ssl.keystore.password",
        "ssl.key.password",
        "ssl.truststore.type",
        "ssl.truststore.location",
        "ssl.truststore.password",
        "ssl.keystore.certificate.chain",
        "ssl.keystore.key",
        "ssl.truststore.certificates",
    }
)
# Keys Kafka changes at run time for the whole cluster only (never per broker) despite naming listeners.
CLUSTER_LEVEL_LISTENER_KEYS = frozenset(
    {"max.connections", "max.connection.creation.rate", "num.network.threads"}
)

# Several names for one setting, most precise first (Kafka's broker synonyms).
BROKER_SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in (
    ("log.roll.ms", "log.roll.hours"),
    ("log.roll.jitter.ms", "log.roll.jitter.hours"),
    ("log.flush.interval.ms", "log.flush.scheduler.interval.ms"),
    ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
):
    for _name in _group:
        BROKER_SYNONYMS[_name] = _group if _name != "log.flush.scheduler.interval.ms" else (_name,)

# Broker keys of Kafka 3.x that Kafka 4.0 removed: a properties file naming them still starts, with a warning.
REMOVED_BROKER_KEYS: dict[str, str] = {
    "log.message.format.version": "the record format is always v2",
    "inter.broker.protocol.version": "KRaft's metadata.version took its place",
    "log.message.timestamp.difference.max.ms": "log.message.timestamp.before/after.max.ms replace it",
    "log.message.downconversion.enable": "Kafka 4 never converts records down",
    "offsets.commit.required.acks": "offsets are written with acks=all",
    "delegation.token.master.key": "delegation.token.secret.key replaces it",
    "zookeeper.connect": "Kafka 4 runs without ZooKeeper",
}


class ConfigValueError(ValueError):
    """A value Kafka's validation refuses; the message reads as Kafka's does."""


@dataclass(frozen=True)
class KafkaKey:
    name: str
    type: str
    default: str | None  # None: Kafka has no default (the value is null)
    valid: str
    importance: str
    mode: str
    doc: str

    @property
    def dynamic(self) -> bool:
        """Whether Kafka lets AlterConfigs change it at run time."""
        return self.mode != READ_ONLY

    @property
    def sensitive(self) -> bool:
        return self.type == "PASSWORD"

    def invalid(self, value: str, why: str) -> ConfigValueError:
        return ConfigValueError(f"Invalid value {value} for configuration {self.name}: {why}")

    def parse(self, text: str) -> Any:
        """The typed value of ``text`` (None for an empty value of a key without a default); raises
        ConfigValueError as Kafka's validation would."""
        value = parse_typed(self.name, self.type, text, self.default is None)
        if value is not None:
            check_valid(self, text, value)
        return value


def parse_typed(name: str, type_: str, text: str, nullable: bool = False) -> Any:
    t = text.strip()
    if t == "" and nullable:
        return None
    if type_ in ("STRING", "PASSWORD"):
        return t
    if t == "" and type_ == "LIST":
        return []
    if type_ == "BOOLEAN":
        if t.lower() in ("true", "false"):
            return t.lower() == "true"
        raise ConfigValueError(
            f"Invalid value {text} for configuration {name}: Expected value to be either true or false"
        )
    if type_ in _INT_BITS:
        bits = _INT_BITS[type_]
        try:
            n = int(t, 10)
        except ValueError:
            raise ConfigValueError(
                f"Invalid value {text} for configuration {name}: Not a number of type {type_}"
            ) from None
        if not -(1 << (bits - 1)) <= n < (1 << (bits - 1)):
            raise ConfigValueError(
                f"Invalid value {text} for configuration {name}: Not a number of type {type_}"
            )
        return n
    if type_ == "DOUBLE":
        try:
            return float(t)
        except ValueError:
            raise ConfigValueError(
                f"Invalid value {text} for configuration {name}: Not a number of type DOUBLE"
            ) from None
    if type_ == "LIST":
        return _LIST_SPLIT.split(t)
    if type_ == "CLASS":
        if not _CLASS_NAME.fullmatch(t):
            raise ConfigValueError(
                f"Invalid value {text} for configuration {name}: Class {t} could not be found."
            )
        return t
    raise ValueError(f"unknown config type {type_}")


def _number(s: str) -> float:
    return float(s) if "." in s or "E" in s or "e" in s else int(s)


def check_valid(key: KafkaKey, text: str, value: Any) -> None:
    v = key.valid
    if v == "-":
        return
    if v.startswith(">="):
        low = _number(v[2:])
        if value < low:
            raise key.invalid(text, f"Value must be at least {v[2:]}")
        return
    if ".." in v and not v.startswith(("{", "[")):
        lo_s, hi_s = v.split("..", 1)
        if value < _number(lo_s):
            raise key.invalid(text, f"Value must be at least {lo_s}")
        if value > _number(hi_s):
            raise key.invalid(text, f"Value must be no more than {hi_s}")
        return
    if v == "@gzip":
        if value > 9 or (value < 1 and value != -1):
            raise key.invalid(text, "Value must be between 1 and 9 or equal to -1")
        return
    if v == "nonempty":
        if not value:
            raise key.invalid(text, "String may not be empty")
        return
    if v.startswith("{"):
        ignore_case = v.endswith("i")
        choices = v.strip("{}i").split(",")
        ok = value.lower() in (c.lower() for c in choices) if ignore_case else value in choices
        if not ok:
            raise key.invalid(text, f"String must be one of: {', '.join(choices)}")
        return
    if v.startswith("[") or v.startswith("list"):
        items: list[str] = list(value)
        if v.endswith("+") and not items:
            raise key.invalid(text, "Configuration must not be empty")
        if len(set(items)) != len(items):
            raise key.invalid(text, "Configuration values must not be duplicated")
        if any(not i for i in items):
            raise key.invalid(text, "Configuration values must not be empty")
        if v.startswith("["):
            choices = v.strip("[]+").split(",")
            bad = [i for i in items if i not in choices]
            if bad:
                raise key.invalid(text, f"String must be one of: {', '.join(choices)}")
        return
    raise ValueError(f"{key.name}: unknown validator {v!r}")


def _load() -> dict[str, KafkaKey]:
    keys: dict[str, KafkaKey] = {}
    for lineno, line in enumerate(CATALOGUE_FILE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 7:
            raise ValueError(f"{CATALOGUE_FILE.name}:{lineno}: expected 7 tab-separated columns")
        name, type_, default, valid, importance, mode, doc = parts
        if type_ not in TYPES or mode not in (READ_ONLY, PER_BROKER, CLUSTER_WIDE) or name in keys:
            raise ValueError(f"{CATALOGUE_FILE.name}:{lineno}: bad entry for {name}")
        key = KafkaKey(name, type_, None if default == "null" else default, valid, importance, mode, doc)
        if key.default is not None:
            key.parse(key.default)  # the catalogue's own defaults must pass its validation
        keys[name] = key
    return keys


BROKER_KEYS: dict[str, KafkaKey] = _load()

_LISTENER_PREFIX = re.compile(r"listener\.name\.([^.]+)\.(.+)")


_MECHANISM_PREFIXES = ("oauthbearer.", "plain.", "scram-sha-256.", "scram-sha-512.", "gssapi.")


def split_listener_key(name: str) -> tuple[str, str | None, str] | None:
    """``listener.name.<listener>[.<mechanism>].<key>`` as (listener, mechanism, key); None for other names.
    A mechanism prefix is recognised for the keys listeners set per mechanism and for the mechanism's own keys
    (``listener.name.x.oauthbearer.sasl.oauthbearer.jwks.endpoint.url``), as Kafka reads them."""
    m = _LISTENER_PREFIX.fullmatch(name)
    if m is None:
        return None
    listener, rest = m.group(1), m.group(2)
    for base in LISTENER_MECHANISM_KEYS:
        if rest.endswith("." + base):
            return listener, rest[: -len(base) - 1], base
    for prefix in _MECHANISM_PREFIXES:
        if rest.lower().startswith(prefix) and rest[len(prefix) :].startswith("sasl."):
            return listener, rest[: len(prefix) - 1], rest[len(prefix) :]
    return listener, None, rest
