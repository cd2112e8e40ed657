"""OCI Streaming's published limits, enforced under ``profile=oci`` on the REST and the Kafka surfaces.

Rates use GCRA (a virtual-time token bucket): each key has a theoretical arrival time that advances by
``cost / rate`` per admitted unit; a request is within the limit while that time is at most ``burst / rate``
ahead of now.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kafkite.broker.core import Broker

MB = 1024 * 1024
HOUR_MS = 3_600_000
MAX_MESSAGE_BYTES = MB  # per message, and per PutMessages request
MAX_REQUEST_BYTES = MB
WRITE_BYTES_PER_SECOND_PER_PARTITION = MB
GET_MESSAGES_PER_SECOND_PER_PARTITION_PER_GROUP = 5
MIN_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 168
MAX_GROUPS_PER_STREAM = 50
MAX_PARTITIONS_PER_REQUEST_LIMIT = 10_000  # GetMessages limit


def oci_profile(broker: Broker) -> bool:
    return bool(broker.config["profile"] == "oci")


class RateLimiter:
    """Per-key GCRA: ``rate`` units per second with bursts of up to ``burst`` units."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.tolerance = burst / rate
        self.clock = clock
        self._tat: dict[object, float] = {}

    def try_acquire(self, key: object, cost: float) -> bool:
        """Admit ``cost`` units now if within the limit; refuse (and change nothing) otherwise."""
        now = self.clock()
        tat = max(self._tat.get(key, now), now)
        if tat - now > self.tolerance:
            return False
        self._tat[key] = tat + cost / self.rate
        self._gc(now)
        return True

    def acquire_delay(self, key: object, cost: float) -> float:
        """Always admit ``cost`` units; return how long the caller should be held back (seconds)."""
        now = self.clock()
        tat = max(self._tat.get(key, now), now) + cost / self.rate
        self._tat[key] = tat
        self._gc(now)
        return max(0.0, tat - now - self.tolerance)

    def _gc(self, now: float) -> None:
        if len(self._tat) > 10_000:
            for k in [k for k, t in self._tat.items() if t < now]:
                del self._tat[k]


class Limits:
    """The rate limiters of one broker under the OCI profile."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.writes = RateLimiter(
            WRITE_BYTES_PER_SECOND_PER_PARTITION, WRITE_BYTES_PER_SECOND_PER_PARTITION, clock
        )
        self.gets = RateLimiter(
            GET_MESSAGES_PER_SECOND_PER_PARTITION_PER_GROUP,
            GET_MESSAGES_PER_SECOND_PER_PARTITION_PER_GROUP,
            clock,
        )


def limits_of(broker: Broker) -> Limits:
    return broker.component(Limits, Limits)


def check_retention_hours(hours: int) -> str | None:
    """None if OCI accepts ``hours`` as a stream's retention, else the reason."""
    if not MIN_RETENTION_HOURS <= hours <= MAX_RETENTION_HOURS:
        return (
            f"retentionInHours must be between {MIN_RETENTION_HOURS} and {MAX_RETENTION_HOURS}, got {hours}"
        )
    return None
