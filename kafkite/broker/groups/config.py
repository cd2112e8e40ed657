"""Settings of the group coordinator, under the names Apache Kafka gives them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GroupConfig:
    """Limits and timings of the classic group protocol and of committed offsets.

    Defaults are Kafka's except ``initial_rebalance_delay_ms`` (Kafka: 3000), which is 0 so that a first
    consumer gets its assignment at once in tests and development loops.
    """

    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 0
    max_size: int = 2**31 - 1
    offsets_retention_ms: int = 7 * 24 * 60 * 60 * 1000
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096

    KEYS = {
        "group.min.session.timeout.ms": "min_session_timeout_ms",
        "group.max.session.timeout.ms": "max_session_timeout_ms",
        "group.initial.rebalance.delay.ms": "initial_rebalance_delay_ms",
        "group.max.size": "max_size",
        "offsets.retention.minutes": "offsets_retention_ms",
        "offsets.retention.check.interval.ms": "offsets_retention_check_interval_ms",
        "offset.metadata.max.bytes": "offset_metadata_max_bytes",
    }

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> GroupConfig:
        """Build from broker settings keyed by Kafka's names; keys this class does not know are ignored."""
        values: dict[str, int] = {}
        for key, attr in cls.KEYS.items():
            if key not in settings or settings[key] is None:
                continue
            raw = settings[key]
            try:
                number = int(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be an integer, got {raw!r}") from None
            values[attr] = number * 60_000 if key == "offsets.retention.minutes" else number
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming the setting to change when the combination makes no sense."""
        if self.min_session_timeout_ms < 0:
            raise ValueError("group.min.session.timeout.ms must not be negative")
        if self.max_session_timeout_ms < self.min_session_timeout_ms:
            raise ValueError("group.max.session.timeout.ms must be at least group.min.session.timeout.ms")
        if self.initial_rebalance_delay_ms < 0:
            raise ValueError("group.initial.rebalance.delay.ms must not be negative")
        if self.max_size < 1:
            raise ValueError("group.max.size must be at least 1")
        if self.offsets_retention_ms < 1:
            raise ValueError("offsets.retention.minutes must be at least 1")
        if self.offsets_retention_check_interval_ms < 1:
            raise ValueError("offsets.retention.check.interval.ms must be at least 1")
        if self.offset_metadata_max_bytes < 0:
            raise ValueError("offset.metadata.max.bytes must not be negative")
