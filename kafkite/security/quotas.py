"""Client quotas like Kafka's: produce and fetch byte rates and request rates per (user, client id).

A client may burst ``(quota.window.num - 1) * quota.window.size.seconds`` seconds' worth ahead of its quota
(Kafka's shortest measurement window) and no further.
When a request takes the measured rate above the quota, the broker answers with ``throttle_time_ms`` (the
time after which the rate is back at the quota) and mutes the connection for that long, as Kafka does: a
client that ignores the throttle time still cannot go faster than its quota.

Quotas come from three layers; the first that sets a key for a client wins:

1. Quotas set at run time with AlterClientQuotas (``kafka-configs --entity-type users/clients``), kept in
   ``client_quotas.json`` of the data directory (in memory with the other engines) and in force at once.
   They follow Kafka's precedence: /users/U/clients/C, /users/U/clients/<default>, /users/U,
   /users/<default>/clients/C, /users/<default>/clients/<default>, /users/<default>, /clients/C,
   /clients/<default>.
2. ``client.quotas`` for particular users and client ids (the most specific matching entry wins)::

       client.quotas=user=alice:producer_byte_rate=1048576;user=bob,client-id=app:consumer_byte_rate=2048

3. ``quota.producer.default``, ``quota.consumer.default`` and ``quota.request.default`` for every entity.

Keys: ``producer_byte_rate`` and ``consumer_byte_rate`` (bytes per second, whole numbers), kafkite's own
``request_rate`` (requests per second) and Kafka's ``controller_mutation_rate`` (partitions created or
deleted per second, by CreateTopics, CreatePartitions, DeleteTopics and topic auto-creation; its default
``quota.controller.mutation.default``, its burst ``controller.quota.window.num`` - 1 windows of
``controller.quota.window.size.seconds``). Kafka's ``request_percentage`` (a share of request-handler thread
time) has no honest equivalent here, and kafkite does not throttle connection creation, so AlterClientQuotas
answers ``request_percentage`` and the ``ip`` entity type with INVALID_REQUEST, as Kafka answers a key it
does not know.

Controller mutations are counted as Kafka counts them: a request checks the quota before each topic and, in
its strict versions (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+), refuses a topic with
THROTTLING_QUOTA_EXCEEDED while the client is already over its quota; a topic accepted is recorded whole
even if that takes the client over (``mutation_debt_ms`` and ``record``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kafkite.quotas")

UNLIMITED = (1 << 63) - 1
PRODUCE = "producer_byte_rate"
FETCH = "consumer_byte_rate"
REQUEST = "request_rate"
MUTATION = "controller_mutation_rate"
# Not a client quota key: topic auto-creation's own bound (auto.create.topics.max.rate), kept per entity.
AUTO_CREATE = "auto_create_rate"
KINDS = (PRODUCE, FETCH, REQUEST, MUTATION)
_DEFAULT_KEYS = {
    PRODUCE: "quota.producer.default",
    FETCH: "quota.consumer.default",
    REQUEST: "quota.request.default",
    MUTATION: "quota.controller.mutation.default",
    AUTO_CREATE: "auto.create.topics.max.rate",
}
_CONTROLLER_KINDS = (MUTATION, AUTO_CREATE)
MAX_THROTTLE_MS = 30_000
CLIENT_QUOTAS_FILE = "client_quotas.json"
USER = "user"
CLIENT_ID = "client-id"
IP = "ip"
WHOLE_NUMBER_KEYS = frozenset({PRODUCE, FETCH})
_NOT_ENFORCED = {
    "request_percentage": "kafkite limits requests per second: use request_rate",
    "connection_creation_rate": "kafkite does not throttle connection creation",
}
# Describe filters (DescribeClientQuotas match_type).
MATCH_EXACT = 0
MATCH_DEFAULT = 1
MATCH_SPECIFIED = 2

# A quota entity as Kafka names it: (entity type, name or None for the default entity), sorted by type.
Entity = tuple[tuple[str, str | None], ...]


class QuotaError(ValueError):
    """An invalid quota entity, key, value or filter (INVALID_REQUEST)."""


@dataclass(frozen=True)
class QuotaEntity:
    user: str | None  # None: any user
    client_id: str | None  # None: any client id

    def matches(self, user: str, client_id: str) -> bool:
        return (self.user is None or self.user == user) and (
            self.client_id is None or self.client_id == client_id
        )

    @property
    def specificity(self) -> int:
        return (2 if self.user is not None else 0) + (1 if self.client_id is not None else 0)


def parse_client_quotas(spec: str) -> dict[QuotaEntity, dict[str, float]]:
    """Parse ``client.quotas`` (raises ValueError with what is wrong)."""
    out: dict[QuotaEntity, dict[str, float]] = {}
    for item in spec.split(";"):
        item = item.strip()
        if not item:
            continue
        entity_part, sep, values_part = item.partition(":")
        if not sep:
            raise ValueError(f"expected ENTITY:key=value,... in {item!r}")
        user: str | None = None
        client_id: str | None = None
        for kv in entity_part.split(","):
            k, s, v = kv.strip().partition("=")
            if not s:
                raise ValueError(f"expected user=NAME or client-id=ID, got {kv!r}")
            if k == "user":
                user = v
            elif k in ("client-id", "client.id", "client_id"):
                client_id = v
            else:
                raise ValueError(f"unknown quota entity {k!r} (use user or client-id)")
        values: dict[str, float] = {}
        for kv in values_part.split(","):
            k, s, v = kv.strip().partition("=")
            if not s or k not in KINDS:
                raise ValueError(f"expected {'|'.join(KINDS)}=N, got {kv!r}")
            values[k] = float(v)
            if values[k] <= 0:
                raise ValueError(f"{k} must be positive")
        out[QuotaEntity(user, client_id)] = values
    return out


class Rate:
    """A client's use against its quota, as a theoretical arrival time (GCRA): each amount moves the time
    at which the client would be back within its quota forward by ``amount / quota``; a client may run
    ``burst_seconds`` ahead of it before it is throttled. Over any long period the rate stays at the quota.
    """

    def __init__(self, burst_seconds: float) -> None:
        self.burst = max(0.0, burst_seconds)
        self._tat: float | None = None

    def record(self, amount: float, quota: float, now: float) -> float:
        """Count ``amount``; the seconds to wait before the client is back within ``quota``."""
        tat = now if self._tat is None or self._tat < now else self._tat
        self._tat = tat + amount / quota
        return max(0.0, self._tat - now - self.burst)

    def debt(self, now: float) -> float:
        """The seconds to wait before the client is back within its quota, counting nothing new."""
        return 0.0 if self._tat is None else max(0.0, self._tat - now - self.burst)


def make_entity(pairs: Iterable[tuple[str, str | None]]) -> Entity:
    """Check an entity as AlterClientQuotas names it (raises QuotaError as Kafka answers INVALID_REQUEST)."""
    items = list(pairs)
    if not items:
        raise QuotaError("Invalid empty client quota entity")
    types = [t for t, _ in items]
    if len(set(types)) != len(types):
        raise QuotaError(f"Duplicate entity type in {types}")
    for t in types:
        if t not in (USER, CLIENT_ID, IP):
            raise QuotaError(f"Unhandled client quota entity type: {t}")
    if IP in types:
        if len(types) > 1:
            raise QuotaError("Invalid quota entity combination: ip cannot be combined with user or client-id")
        raise QuotaError(
            "ip quotas (connection_creation_rate) are not supported: "
            + _NOT_ENFORCED["connection_creation_rate"]
        )
    return tuple(sorted(items))


def check_value(key: str, value: float) -> None:
    """Check one key and value to set (raises QuotaError)."""
    if key in _NOT_ENFORCED:
        raise QuotaError(f"Invalid configuration key {key}: {_NOT_ENFORCED[key]}")
    if key not in KINDS:
        raise QuotaError(f"Invalid configuration key {key}")
    if not 0 < value < math.inf:  # NaN is not either
        raise QuotaError(f"{key} must be a positive number, got {value}")
    if key in WHOLE_NUMBER_KEYS and value != int(value):
        raise QuotaError(f"Configuration {key} must be a Long value, got {value}")


def entity_text(entity: Entity) -> str:
    return "/".join(
        f"{'users' if t == USER else 'clients'}/{n if n is not None else '<default>'}"
        for t, n in sorted(entity, key=lambda e: e[0] != USER)
    )


class ClientQuotaStore:
    """Quotas set through AlterClientQuotas; ``path`` None keeps them in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._quotas: dict[Entity, dict[str, float]] = {}
        self._mutex = threading.Lock()
        if path is not None and path.exists():
            try:
                for item in json.loads(path.read_text()):
                    entity: Entity = tuple(
                        sorted((str(t), None if n is None else str(n)) for t, n in item["entity"])
                    )
                    self._quotas[entity] = {str(k): float(v) for k, v in item["values"].items()}
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("ignoring client quotas in %s: %s", path, e)
                self._quotas.clear()

    def __len__(self) -> int:
        return len(self._quotas)

    def entries(self) -> dict[Entity, dict[str, float]]:
        return {e: dict(v) for e, v in self._quotas.items()}

    def alter(self, entity: Entity, sets: dict[str, float], removes: Iterable[str]) -> None:
        """Set and remove keys of one entity (checked beforehand) and save the lot."""
        with self._mutex:
            values = dict(self._quotas.get(entity, {}))
            for key in removes:
                values.pop(key, None)
            values.update(sets)
            if values:
                self._quotas[entity] = values
            else:
                self._quotas.pop(entity, None)
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        data = [
            {"entity": [list(pair) for pair in entity], "values": values}
            for entity, values in sorted(self._quotas.items(), key=lambda kv: repr(kv[0]))
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def lookup(self, kind: str, user: str, client_id: str) -> float | None:
        """The quota of ``kind`` for a client by Kafka's precedence; None when no entity sets it."""
        if not self._quotas:
            return None
        q = self._quotas
        for entity in (
            ((CLIENT_ID, client_id), (USER, user)),
            ((CLIENT_ID, None), (USER, user)),
            ((USER, user),),
            ((CLIENT_ID, client_id), (USER, None)),
            ((CLIENT_ID, None), (USER, None)),
            ((USER, None),),
            ((CLIENT_ID, client_id),),
            ((CLIENT_ID, None),),
        ):
            values = q.get(entity)
            if values is not None and kind in values:
                return values[kind]
        return None

    def describe(
        self, components: Iterable[tuple[str, int, str | None]], strict: bool
    ) -> list[tuple[Entity, dict[str, float]]]:
        """The entities a DescribeClientQuotas filter matches, as Kafka matches them (raises QuotaError)."""
        exact: dict[str, str | None] = {}
        specified: set[str] = set()
        for etype, match_type, match in components:
            if etype in exact or etype in specified:
                raise QuotaError(f"Entity type {etype} cannot appear more than once in the filter")
            if etype not in (USER, CLIENT_ID, IP):
                raise QuotaError(f"Custom entity type {etype!r} not supported")
            if match_type == MATCH_EXACT:
                if match is None:
                    raise QuotaError("Request specified MATCH_TYPE_EXACT, but set match string to null")
                exact[etype] = match
            elif match_type == MATCH_DEFAULT:
                if match is not None:
                    raise QuotaError(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string"
                    )
                exact[etype] = None
            elif match_type == MATCH_SPECIFIED:
                if match is not None:
                    raise QuotaError(
                        "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string"
                    )
                specified.add(etype)
            else:
                raise QuotaError(f"Unknown match type {match_type}")
        named = set(exact) | specified
        if IP in named and len(named) > 1:
            raise QuotaError("Invalid entity filter component combination: ip with user or client-id")
        out = []
        for entity, values in self._quotas.items():
            d = dict(entity)
            if strict and len(d) != len(named):
                continue
            if all(t in d and d[t] == n for t, n in exact.items()) and all(t in d for t in specified):
                out.append((entity, dict(values)))
        return sorted(out, key=lambda ev: repr(ev[0]))


class QuotaManager:
    """Rates per (kind, user, client id) and the throttle time each new request earns."""

    def __init__(
        self,
        settings: Callable[[str], object],
        clock: Callable[[], float] = time.monotonic,
        store: ClientQuotaStore | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self.store = store if store is not None else ClientQuotaStore(None)
        self._rates: dict[tuple[str, str, str], Rate] = {}
        self._parsed: tuple[str, dict[QuotaEntity, dict[str, float]]] = ("", {})

    def quota(self, kind: str, user: str, client_id: str) -> float:
        dynamic = self.store.lookup(kind, user, client_id)
        if dynamic is not None:
            return dynamic
        spec = str(self._settings("client.quotas") or "")
        if spec != self._parsed[0]:
            self._parsed = (spec, parse_client_quotas(spec))
        best: tuple[int, float] | None = None
        for entity, values in self._parsed[1].items():
            if (
                kind in values
                and entity.matches(user, client_id)
                and (best is None or entity.specificity > best[0])
            ):
                best = (entity.specificity, values[kind])
        if best is not None:
            return best[1]
        return float(self._settings(_DEFAULT_KEYS[kind]))  # type: ignore[arg-type]

    def _rate(self, kind: str, user: str, client_id: str) -> Rate:
        key = (kind, user, client_id)
        rate = self._rates.get(key)
        if rate is None:
            prefix = "controller.quota" if kind in _CONTROLLER_KINDS else "quota"
            samples = int(self._settings(f"{prefix}.window.num"))  # type: ignore[call-overload]
            size = float(self._settings(f"{prefix}.window.size.seconds"))  # type: ignore[arg-type]
            rate = self._rates[key] = Rate(max(1, samples - 1) * size)
        return rate

    def record(self, kind: str, user: str, client_id: str, amount: float) -> int:
        """Count ``amount`` for the entity; the throttle time in ms it has earned (0 within its quota)."""
        quota = self.quota(kind, user, client_id)
        if quota >= UNLIMITED or quota <= 0:
            return 0
        rate = self._rate(kind, user, client_id)
        return min(MAX_THROTTLE_MS, int(rate.record(amount, quota, self._clock()) * 1000))

    def debt_ms(self, kind: str, user: str, client_id: str) -> int:
        """How long the entity is still over its quota of ``kind`` (0 when within it), recording nothing:
        a strict quota refuses work while this is positive."""
        if self.quota(kind, user, client_id) >= UNLIMITED:
            return 0
        rate = self._rates.get((kind, user, client_id))
        return 0 if rate is None else min(MAX_THROTTLE_MS, int(rate.debt(self._clock()) * 1000))
