"""Client quotas like Kafka's: produce and fetch byte rates and request rates per (user, client id).

A client may burst ``(quota.window.num - 1) * quota.window.size.seconds`` seconds' worth ahead of its quota
(Kafka's shortest measurement window) and no further.
When a request takes the measured rate above the quota, the broker answers with ``throttle_time_ms`` (the
time after which the rate is back at the quota) and mutes the connection for that long, as Kafka does: a
client that ignores the throttle time still cannot go faster than its quota.

Quotas come from ``quota.producer.default``, ``quota.consumer.default`` and ``quota.request.default`` (for
every entity) and ``client.quotas`` for particular users and client ids::

    client.quotas=user=alice:producer_byte_rate=1048576;user=bob,client-id=app:consumer_byte_rate=2048
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

UNLIMITED = (1 << 63) - 1
PRODUCE = "producer_byte_rate"
FETCH = "consumer_byte_rate"
REQUEST = "request_rate"
KINDS = (PRODUCE, FETCH, REQUEST)
MAX_THROTTLE_MS = 30_000


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


class QuotaManager:
    """Rates per (kind, user, client id) and the throttle time each new request earns."""

    def __init__(
        self, settings: Callable[[str], object], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._rates: dict[tuple[str, str, str], Rate] = {}
        self._parsed: tuple[str, dict[QuotaEntity, dict[str, float]]] = ("", {})

    def quota(self, kind: str, user: str, client_id: str) -> float:
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
        key = {
            PRODUCE: "quota.producer.default",
            FETCH: "quota.consumer.default",
            REQUEST: "quota.request.default",
        }
        return float(self._settings(key[kind]))  # type: ignore[arg-type]

    def record(self, kind: str, user: str, client_id: str, amount: float) -> int:
        """Count ``amount`` for the entity; the throttle time in ms it has earned (0 within its quota)."""
        quota = self.quota(kind, user, client_id)
        if quota >= UNLIMITED:
            return 0
        key = (kind, user, client_id)
        rate = self._rates.get(key)
        if rate is None:
            samples = int(self._settings("quota.window.num"))  # type: ignore[call-overload]
            size = float(self._settings("quota.window.size.seconds"))  # type: ignore[arg-type]
            rate = self._rates[key] = Rate(max(1, samples - 1) * size)
        return min(MAX_THROTTLE_MS, int(rate.record(amount, quota, self._clock()) * 1000))
