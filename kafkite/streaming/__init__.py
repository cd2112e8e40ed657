"""OCI Streaming surface: stream pools as namespaces of Kafka topics, the Streaming REST API (control and data
plane) as an adapter over the broker's partition logs, OCI request signatures and OCI's published limits.

``install(broker)`` (called by ``kafkite.compose``) attaches the stream catalogue to the broker and
wraps the Kafka handlers so a connection whose SASL/PLAIN user name names a stream pool sees only that pool's
streams.
``kafkite.streaming.rest:register`` adds the REST routes to the shared REST listener.
"""

import logging

from kafkite.broker.core import Broker
from kafkite.broker.sasl import log_startup
from kafkite.streaming.limits import MAX_MESSAGE_BYTES
from kafkite.streaming.namespace import PoolNameMap, group_topic_view, wrap_handlers
from kafkite.streaming.pools import (
    DEFAULT_POOL_NAME,
    StreamCatalog,
    StreamPool,
    catalog_of,
    internal_group_id,
    internal_topic_name,
    split_internal_name,
)

__all__ = [
    "DEFAULT_POOL_NAME",
    "StreamCatalog",
    "StreamPool",
    "apply_oci_profile",
    "catalog_of",
    "install",
    "internal_group_id",
    "internal_topic_name",
    "split_internal_name",
]


def install(broker: Broker) -> None:
    """Attach the stream catalogue and the pool namespace wrapper to a broker whose handlers are all set."""
    catalog_of(broker)
    if broker.config["profile"] == "oci":
        apply_oci_profile(broker)
    wrap_handlers(broker)
    broker.pool_names = PoolNameMap(broker)
    if broker.groups is not None:
        # Regular-expression subscriptions of a pool's groups match the pool's stream names only.
        broker.groups.topic_view = group_topic_view
    log_startup(broker)


def apply_oci_profile(broker: Broker) -> None:
    """Broker-wide settings of the OCI profile: 1 MB messages, deletion-only retention."""
    cfg = broker.config
    if int(cfg["message.max.bytes"]) > MAX_MESSAGE_BYTES or "message.max.bytes" not in cfg.explicit:
        cfg.set("message.max.bytes", str(MAX_MESSAGE_BYTES))
    if cfg["log.cleanup.policy"] != "delete":
        cfg.set("log.cleanup.policy", "delete")
    broker.storage.default_config = cfg.topic_defaults()
    logging.getLogger("kafkite.streaming").info(
        "OCI profile: 1 MB messages, 1 MB/s per partition, retention 24-168 h, no compaction or transactions"
    )
