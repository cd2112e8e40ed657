"""Broker metrics in the Prometheus text format, and the hooks that feed them.

``metrics_of(broker)`` gives the broker's ``BrokerMetrics`` when ``metrics.listener`` or ``console.listener``
is set (None otherwise: nothing is counted). Counters and histograms are updated by the connection hooks
(``kafkite.server.hooks``) and the flush paths; gauges describing state (partition sizes and offsets, group
lag, connections by listener) are computed from the broker when scraped (``kafkite.broker.metrics``).
"""

from __future__ import annotations

from typing import Any

from kafkite.metrics.registry import (
    CONTENT_TYPE,
    Collected,
    Counter,
    Gauge,
    Histogram,
    Registry,
    parse_text,
)

__all__ = [
    "CONTENT_TYPE",
    "BrokerMetrics",
    "Collected",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "enabled",
    "metrics_of",
    "parse_text",
]


class BrokerMetrics:
    """The metric families of one broker."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.bytes_in = r.counter(
            "kafkite_topic_bytes_in_total", "Record batch bytes appended by Produce requests", ["topic"]
        )
        self.messages_in = r.counter(
            "kafkite_topic_messages_in_total", "Records appended by Produce requests", ["topic"]
        )
        self.bytes_out = r.counter(
            "kafkite_topic_bytes_out_total", "Record batch bytes returned by Fetch responses", ["topic"]
        )
        self.messages_out = r.counter(
            "kafkite_topic_messages_out_total",
            "Records in the batches returned by Fetch responses",
            ["topic"],
        )
        self.produce_errors = r.counter(
            "kafkite_topic_produce_errors_total",
            "Partitions of Produce requests answered with an error",
            ["topic"],
        )
        self.requests = r.counter("kafkite_requests_total", "Requests handled", ["api", "version"])
        self.request_failures = r.counter(
            "kafkite_request_failures_total",
            "Requests whose handler failed (the connection was closed)",
            ["api"],
        )
        self.latency = r.histogram(
            "kafkite_request_duration_seconds",
            "Time from a request's arrival to its response being ready (long polls included)",
            ["api", "version"],
        )
        self.connections = r.gauge("kafkite_connections", "Open client connections", ["listener"])
        self.connections_opened = r.counter(
            "kafkite_connections_opened_total", "Client connections accepted", ["listener"]
        )
        self.throttled = r.counter(
            "kafkite_throttled_responses_total", "Responses carrying a non-zero throttle time", ["api"]
        )
        self.throttle_time = r.counter(
            "kafkite_throttle_time_seconds_total", "Throttle time given to clients in responses", ["api"]
        )
        self.fsync = r.histogram("kafkite_fsync_duration_seconds", "Time one partition fsync took")

    def observe_fsync(self, seconds: float) -> None:
        self.fsync.observe(seconds)


def enabled(config: Any) -> bool:
    raw = getattr(config, "raw", {})
    return bool(raw.get("metrics.listener", "").strip() or raw.get("console.listener", "").strip())


def metrics_of(broker: Any) -> BrokerMetrics | None:
    """The broker's metrics: made by the composition root when ``metrics.listener`` or ``console.listener``
    is set, None otherwise (nothing is counted)."""
    m = getattr(broker, "metrics", None)
    return m if isinstance(m, BrokerMetrics) else None
