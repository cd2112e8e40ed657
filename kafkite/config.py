"""Broker configuration with Apache Kafka's key names: definitions, defaults, parsing and validation.

This is the one place broker-level keys and their defaults live. Topic-level keys and their defaults live in
``kafkite.log.config``; ``TOPIC_FROM_BROKER`` says which broker key supplies each topic key's default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kafkite.config_catalogue import (
    BROKER_KEYS,
    REMOVED_BROKER_KEYS,
    ConfigValueError,
    split_listener_key,
)
from kafkite.log.config import TOPIC_CONFIGS


class ConfigError(ValueError):
    """A configuration key is unknown or its value invalid; the message names the key."""


def default_max_connections() -> int:
    """A quarter of the open-file limit (the rest is for partition files, the REST gateways and the
    process itself), between 64 and 100,000."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1000
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 100_000
    return max(64, min(100_000, soft // 4))


def _bool(v: str) -> bool:
    low = v.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


def _int(v: str) -> int:
    return int(v.strip())


def _str(v: str) -> str:
    return v.strip()


def _listeners(v: str) -> list[tuple[str, str, int]]:
    """Parse 'NAME://host:port,...' into (name, host, port) triples."""
    out: list[tuple[str, str, int]] = []
    for item in v.split(","):
        item = item.strip()
        if not item:
            continue
        # Listener names such as SASL_PLAINTEXT are not URL schemes (underscores): split the name off first.
        name, sep, rest = item.partition("://")
        try:
            parts = urlsplit("tcp://" + rest)
            port = parts.port
        except ValueError:
            port = None
        if not sep or not name or port is None:
            raise ValueError(f"expected NAME://host:port, got {item!r}")
        out.append((name.upper(), parts.hostname or "", port))
    if not out:
        raise ValueError("at least one listener is required")
    return out


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        v = v.strip()
        if v not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {v!r}")
        return v

    return parse


def _engine(v: str) -> str:
    v = v.strip()
    if v in ("file", "memory") or v.startswith(("postgresql://", "postgres://")):
        return v
    raise ValueError(f"expected file, memory or a postgresql://user@host:port/dbname DSN, got {v!r}")


@dataclass(frozen=True)
class ConfigDef:
    name: str
    default: str
    parse: Callable[[str], Any]
    doc: str
    dynamic: bool = False  # may be changed at run time through AlterConfigs
    acts: bool = True  # False: one of Kafka's keys kafkite stores and describes but does not act on


_DEFS: list[ConfigDef] = [
    ConfigDef(
        "listeners",
        "PLAINTEXT://localhost:9092",
        _listeners,
        "Where the broker listens: NAME://host:port,...",
    ),
    ConfigDef(
        "advertised.listeners",
        "",
        _str,
        "Addresses given to clients in Metadata, NAME://host:port,...; defaults to listeners",
    ),
    ConfigDef("node.id", "1", _int, "This broker's id in Metadata"),
    ConfigDef("cluster.id", "", _str, "Cluster id; generated and kept in log.dirs when empty"),
    ConfigDef("log.dirs", "./data", _str, "Directory holding the partition logs and broker state"),
    ConfigDef(
        "storage.engine",
        "file",
        _engine,
        "Storage engine: file (durable), memory (ephemeral) or postgresql://user@host:port/dbname (brokers"
        " sharing one database)",
    ),
    ConfigDef("num.partitions", "1", _int, "Partitions of an auto-created topic", True),
    ConfigDef(
        "topic.max.partitions",
        "100000",
        _int,
        "Most partitions one topic may have (CreateTopics/CreatePartitions beyond it: INVALID_PARTITIONS)",
        True,
    ),
    ConfigDef(
        "max.broker.partitions",
        "1000000",
        _int,
        "Most partitions this broker holds (CreateTopics/CreatePartitions beyond it: INVALID_PARTITIONS)",
    ),
    ConfigDef(
        "log.open.files.max",
        "0",
        _int,
        "Segment files kept open at once, the least recently used closed first and reopened on demand"
        " (0: half the descriptor limit, ulimit -n)",
    ),
    ConfigDef(
        "log.writer.inline.bytes",
        "0",
        _int,
        "kafkite: an append of at most this many bytes is written on the event loop when its log directory's"
        " writer thread has nothing queued and the previous such write took under 20 ms (else, for 5 s, every"
        " append goes through the thread); 0 (the default): every append goes through the writer thread,"
        " so the event loop never waits on the disk",
    ),
    ConfigDef("default.replication.factor", "1", _int, "Replication factor reported for new topics"),
    ConfigDef(
        "auto.create.topics.enable", "true", _bool, "Create unknown topics on Metadata and Produce", True
    ),
    ConfigDef("delete.topic.enable", "true", _bool, "Allow DeleteTopics"),
    ConfigDef(
        "message.max.bytes", "1048588", _int, "Largest record batch accepted (topic: max.message.bytes)", True
    ),
    ConfigDef(
        "socket.request.max.bytes",
        "104857600",
        _int,
        "Largest request frame; larger ones close the connection",
    ),
    ConfigDef(
        "log.segment.bytes", "1073741824", _int, "Segment size before rolling (topic: segment.bytes)", True
    ),
    ConfigDef("log.roll.ms", "604800000", _int, "Segment age before rolling (topic: segment.ms)", True),
    ConfigDef(
        "log.retention.ms", "604800000", _int, "Retention time, -1 for ever (topic: retention.ms)", True
    ),
    ConfigDef(
        "log.retention.bytes", "-1", _int, "Retention size per partition (topic: retention.bytes)", True
    ),
    ConfigDef("log.retention.check.interval.ms", "300000", _int, "How often retention runs"),
    ConfigDef(
        "log.cleaner.enable",
        "true",
        _bool,
        "Run the log cleaner, which compacts topics with cleanup.policy=compact (file and memory engines)",
    ),
    ConfigDef(
        "log.cleaner.dedupe.buffer.size",
        str(128 << 20),
        _int,
        "Memory a log cleaner pass may give its offset map (estimated): a pass that fills it cleans up to"
        " where it stopped and the next pass goes on",
        True,
    ),
    ConfigDef(
        "log.cleaner.backoff.ms",
        "15000",
        _int,
        "Pause between two log cleaner passes over the compacted partitions",
        True,
    ),
    ConfigDef(
        "log.segment.delete.delay.ms", "60000", _int, "Delay before a deleted segment's file is closed", True
    ),
    ConfigDef("log.index.interval.bytes", "4096", _int, "Bytes between offset index entries", True),
    ConfigDef(
        "log.index.size.max.bytes",
        "10485760",
        _int,
        "Largest offset index file (topic: segment.index.bytes)",
        True,
    ),
    ConfigDef(
        "log.flush.interval.messages",
        "9223372036854775807",
        _int,
        "Messages appended before a forced fsync (topic: flush.messages)",
        True,
    ),
    ConfigDef(
        "log.flush.interval.ms",
        "9223372036854775807",
        _int,
        "Age of unflushed data before a forced fsync (topic: flush.ms)",
        True,
    ),
    ConfigDef("log.flush.scheduler.interval.ms", "1000", _int, "How often the periodic flusher runs"),
    ConfigDef(
        "log.flush.on.ack",
        "false",
        _bool,
        "fsync appended data before acknowledging acks=all produce requests (fsyncs are grouped)",
    ),
    ConfigDef(
        "log.message.timestamp.type",
        "CreateTime",
        _choice("CreateTime", "LogAppendTime"),
        "Timestamp type of new topics (topic: message.timestamp.type)",
        True,
    ),
    ConfigDef(
        "log.cleanup.policy",
        "delete",
        _choice("delete", "compact", "compact,delete", "delete,compact"),
        "Cleanup policy of new topics (topic: cleanup.policy): delete (retention), compact (the log cleaner"
        " keeps the latest record per key; file and memory engines) or both",
        True,
    ),
    ConfigDef(
        "compression.type",
        "producer",
        _choice("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"),
        "Compression of stored batches; 'producer' keeps what the producer sent",
        True,
    ),
    ConfigDef(
        "min.insync.replicas",
        "1",
        _int,
        "Minimum in-sync replicas: described, not enforced (one copy per partition is the whole ISR)",
        True,
        acts=False,
    ),
    ConfigDef(
        "offsets.retention.minutes", "10080", _int, "How long committed offsets of an empty group are kept"
    ),
    ConfigDef("offsets.retention.check.interval.ms", "600000", _int, "How often expired offsets are removed"),
    ConfigDef("offset.metadata.max.bytes", "4096", _int, "Largest commit metadata string"),
    ConfigDef("group.min.session.timeout.ms", "6000", _int, "Smallest session timeout a member may ask for"),
    ConfigDef(
        "group.max.session.timeout.ms", "1800000", _int, "Largest session timeout a member may ask for"
    ),
    ConfigDef(
        "group.initial.rebalance.delay.ms",
        "0",
        _int,
        "Wait for more members before the first rebalance of an empty group",
    ),
    ConfigDef("group.max.size", "2147483647", _int, "Most members in one classic group"),
    ConfigDef(
        "group.coordinator.rebalance.protocols",
        "classic,consumer",
        _str,
        "Group protocols served: classic (JoinGroup/SyncGroup) and consumer (ConsumerGroupHeartbeat,"
        " KIP-848); share is accepted (share groups are served while the share.version feature is 1), streams"
        " is accepted and not served",
    ),
    ConfigDef(
        "group.consumer.session.timeout.ms",
        "45000",
        _int,
        "Session timeout of consumer-protocol members (a group may set consumer.session.timeout.ms)",
    ),
    ConfigDef(
        "group.consumer.min.session.timeout.ms", "45000", _int, "Smallest consumer group session timeout"
    ),
    ConfigDef(
        "group.consumer.max.session.timeout.ms", "60000", _int, "Largest consumer group session timeout"
    ),
    ConfigDef(
        "group.consumer.heartbeat.interval.ms",
        "5000",
        _int,
        "Heartbeat interval given to consumer-protocol members (a group may set"
        " consumer.heartbeat.interval.ms)",
    ),
    ConfigDef(
        "group.consumer.min.heartbeat.interval.ms", "5000", _int, "Smallest consumer group heartbeat interval"
    ),
    ConfigDef(
        "group.consumer.max.heartbeat.interval.ms", "15000", _int, "Largest consumer group heartbeat interval"
    ),
    ConfigDef("group.consumer.max.size", "2147483647", _int, "Most members in one consumer group"),
    ConfigDef(
        "group.consumer.regex.refresh.interval.ms",
        "600000",
        _int,
        "With an authorizer: how long a consumer group's regular expressions (SubscribedTopicRegex) keep"
        " their resolution before a heartbeat refreshes it with its member's DESCRIBE permissions (at least"
        " 10000)",
    ),
    ConfigDef(
        "group.consumer.assignors",
        "uniform,range",
        _str,
        "Server-side assignors of consumer groups (uniform, range or Kafka's class names); the first is the"
        " default, a member may ask for another with group.remote.assignor",
    ),
    ConfigDef(
        "group.consumer.migration.policy",
        "bidirectional",
        _choice("bidirectional", "upgrade", "downgrade", "disabled"),
        "Whether a non-empty classic group may become a consumer group (upgrade) and back (downgrade)",
    ),
    ConfigDef("group.share.session.timeout.ms", "45000", _int, "Session timeout of share group members"),
    ConfigDef("group.share.min.session.timeout.ms", "45000", _int, "Smallest share group session timeout"),
    ConfigDef("group.share.max.session.timeout.ms", "60000", _int, "Largest share group session timeout"),
    ConfigDef("group.share.heartbeat.interval.ms", "5000", _int, "Heartbeat interval of share group members"),
    ConfigDef(
        "group.share.min.heartbeat.interval.ms", "5000", _int, "Smallest share group heartbeat interval"
    ),
    ConfigDef(
        "group.share.max.heartbeat.interval.ms", "15000", _int, "Largest share group heartbeat interval"
    ),
    ConfigDef("group.share.max.size", "200", _int, "Most members in one share group"),
    ConfigDef("group.share.assignors", "simple", _str, "Server-side assignor of share groups (simple)"),
    ConfigDef(
        "group.share.delivery.count.limit",
        "5",
        _int,
        "Deliveries of a record to a share group before it is archived (a group may set"
        " share.delivery.count.limit)",
    ),
    ConfigDef(
        "group.share.record.lock.duration.ms",
        "30000",
        _int,
        "How long a share consumer holds the records it acquired (a group may set"
        " share.record.lock.duration.ms)",
    ),
    ConfigDef(
        "group.share.min.record.lock.duration.ms",
        "15000",
        _int,
        "Smallest record lock duration of share groups",
    ),
    ConfigDef(
        "group.share.max.record.lock.duration.ms",
        "60000",
        _int,
        "Largest record lock duration of share groups",
    ),
    ConfigDef(
        "group.share.partition.max.record.locks",
        "2000",
        _int,
        "Records in flight at once per share-partition (a group may set share.partition.max.record.locks)",
    ),
    ConfigDef("group.share.max.share.sessions", "2000", _int, "Most share fetch sessions this broker keeps"),
    ConfigDef(
        "errors.deadletterqueue.topic.name.prefix",
        "dlq.",
        _str,
        "Prefix every share group's dead-letter topic must have (KIP-1191; empty: any name)",
    ),
    ConfigDef(
        "errors.deadletterqueue.auto.create.topics.enable",
        "false",
        _bool,
        "Create a share group's dead-letter topic when it does not exist (KIP-1191)",
    ),
    ConfigDef("fetch.max.bytes", "57671680", _int, "Most bytes one Fetch response carries"),
    ConfigDef(
        "max.request.partition.size.limit",
        "2000",
        _int,
        "Most partitions one DescribeTopicPartitions response describes (the request may ask for fewer)",
    ),
    ConfigDef("connections.max.idle.ms", "600000", _int, "Idle connections are closed after this"),
    ConfigDef(
        "blackhole",
        "false",
        _bool,
        "BENCHMARK ONLY: acknowledge Produce without storing and answer Fetch with nothing",
    ),
    ConfigDef(
        "rest.listeners",
        "http://localhost:8090",
        _str,
        "Where the OCI Streaming and Queue REST gateways listen (http://host:port,...); empty to disable",
    ),
    ConfigDef("event.loop", "asyncio", _choice("asyncio", "uvloop"), "Event loop implementation"),
    ConfigDef("log.level", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "Log verbosity"),
    ConfigDef(
        "profile",
        "default",
        _choice("default", "oci"),
        "oci: enforce OCI Streaming's limits (1 MB messages and requests, 1 MB/s per partition,"
        " 5 GetMessages/s per partition per group, retention 24-168 h, 50 groups per stream, fixed partitions"
        " and retention, no compaction, no transactions)",
    ),
    ConfigDef(
        "sasl.plain.users",
        "",
        _str,
        "SASL/PLAIN credentials, name=password,...; empty: any password is accepted",
    ),
    ConfigDef(
        "streaming.auth.enable",
        "false",
        _bool,
        "Verify the OCI signature of every OCI Streaming REST request against streaming.auth.public.keys",
    ),
    ConfigDef(
        "streaming.auth.public.keys",
        "",
        _str,
        "OCI API signing public keys (PEM files or directories of *.pem, comma-separated) accepted when"
        " streaming.auth.enable is true",
    ),
]

_DEFS += [
    ConfigDef(
        "stomp.listeners",
        "stomp://localhost:61613",
        _str,
        "Where the STOMP listener for queues listens (stomp://host:port,...); empty to disable",
    ),
    ConfigDef(
        "stomp.users",
        "",
        _str,
        "STOMP credentials, login=passcode,...; empty: any login is accepted",
    ),
    ConfigDef(
        "queue.auth.enable",
        "false",
        _bool,
        "Verify the OCI signature of every OCI Queue REST request against queue.auth.public.keys",
    ),
    ConfigDef(
        "queue.auth.public.keys",
        "",
        _str,
        "OCI API signing public keys (PEM files or directories of *.pem, comma-separated) for the Queue API;"
        " empty: those of streaming.auth.public.keys",
    ),
]

_DEFS += [
    ConfigDef(
        "metrics.listener",
        "",
        _str,
        "Where the Prometheus metrics endpoint listens (http://host:port, served at /metrics); empty: off",
    ),
    ConfigDef(
        "console.listener",
        "",
        _str,
        "Where the web console listens (http://host:port); empty: off",
    ),
    ConfigDef("log.format", "text", _choice("text", "json"), "Log lines as text or as one JSON object each"),
    ConfigDef("log.requests", "false", _bool, "Log one line per request (API, client, latency)", True),
]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _protocol_map(v: str) -> dict[str, str]:
    """Parse 'LISTENER:PROTOCOL,...' (Kafka's listener.security.protocol.map)."""
    out: dict[str, str] = {}
    for item in v.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, proto = item.partition(":")
        proto = proto.strip().upper()
        if not sep or not name.strip() or proto not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"expected LISTENER:PROTOCOL with PROTOCOL one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        out[name.strip().upper()] = proto
    return out


def _str_list(v: str) -> list[str]:
    return [x.strip() for x in v.split(",") if x.strip()]


_DEFS += [
    ConfigDef(
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        _protocol_map,
        "Security protocol of each listener: NAME:PROTOCOL,... (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)",
    ),
    ConfigDef(
        "sasl.enabled.mechanisms",
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        _str_list,
        "SASL mechanisms offered: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER (GSSAPI is not served)",
    ),
    ConfigDef("ssl.keystore.type", "PEM", _choice("PEM"), "Key store format (PEM files)"),
    ConfigDef("ssl.truststore.type", "PEM", _choice("PEM"), "Trust store format (PEM files)"),
    ConfigDef(
        "ssl.keystore.location",
        "",
        _str,
        "PEM file with the listener's certificate chain and private key (SSL and SASL_SSL listeners)",
    ),
    ConfigDef("ssl.key.password", "", _str, "Password of the private key in ssl.keystore.location, if any"),
    ConfigDef(
        "ssl.truststore.location",
        "",
        _str,
        "PEM file of CA certificates that client certificates must chain to",
    ),
    ConfigDef(
        "ssl.client.auth",
        "none",
        _choice("none", "requested", "required"),
        "Client certificates on SSL listeners: none, requested or required; the certificate's subject is the"
        " principal",
    ),
    ConfigDef("ssl.enabled.protocols", "TLSv1.2,TLSv1.3", _str_list, "TLS versions accepted"),
    ConfigDef(
        "authorizer.class.name",
        "",
        _str,
        "Any value enables kafkite's ACL authorizer (deny unless an ACL allows); empty: no authorization",
    ),
    ConfigDef("super.users", "", _str, "Principals allowed everything, User:name;User:other"),
    ConfigDef(
        "allow.everyone.if.no.acl.found", "false", _bool, "Allow access to resources that have no ACLs", True
    ),
    ConfigDef(
        "max.connections",
        str(default_max_connections()),
        _int,
        "Most client connections the broker accepts (default: a quarter of the descriptor limit, ulimit -n,"
        " at most 100000; Kafka's is unbounded)",
        True,
    ),
    ConfigDef("max.connections.per.ip", "2147483647", _int, "Most client connections from one address", True),
    ConfigDef(
        "quota.producer.default",
        "9223372036854775807",
        _int,
        "Produce bytes per second allowed to each user and client id (throttled above it)",
        True,
    ),
    ConfigDef(
        "quota.consumer.default",
        "9223372036854775807",
        _int,
        "Fetch bytes per second allowed to each user and client id (throttled above it)",
        True,
    ),
    ConfigDef(
        "quota.request.default",
        "9223372036854775807",
        _int,
        "Requests per second allowed to each user and client id (throttled above it)",
        True,
    ),
    ConfigDef(
        "client.quotas",
        "",
        _str,
        "Quotas of particular users and client ids: 'user=NAME,client-id=ID:producer_byte_rate=N,"
        "consumer_byte_rate=N,request_rate=N,controller_mutation_rate=N;...' (either entity may be omitted)",
        True,
    ),
    ConfigDef("quota.window.num", "11", _int, "Samples kept to measure a client's rate"),
    ConfigDef("quota.window.size.seconds", "1", _int, "Length of one rate sample"),
    ConfigDef(
        "quota.controller.mutation.default",
        "9223372036854775807",
        _int,
        "Partitions each user and client id may create or delete per second (controller_mutation_rate:"
        " CreateTopics v6+, CreatePartitions v3+ and DeleteTopics v5+ answer THROTTLING_QUOTA_EXCEEDED"
        " beyond it, older versions are throttled)",
        True,
    ),
    ConfigDef(
        "controller.quota.window.num", "11", _int, "Samples kept to measure a client's controller mutations"
    ),
    ConfigDef("controller.quota.window.size.seconds", "1", _int, "Length of one controller mutation sample"),
]


# SASL/OAUTHBEARER and re-authentication (KIP-368), with Kafka's names and defaults. Each may be set per
# listener and mechanism: listener.name.<listener>.oauthbearer.<key>.
def _kafka(name: str) -> Callable[[str], Any]:
    return BROKER_KEYS[name].parse


_DEFS += [
    ConfigDef(
        "connections.max.reauth.ms",
        "0",
        _kafka("connections.max.reauth.ms"),
        "Longest SASL session before the client must re-authenticate on its connection (0: only an OAuth"
        " token's expiry bounds it); a request after the session ended closes the connection",
    ),
    ConfigDef(
        "sasl.server.callback.handler.class",
        "",
        _kafka("sasl.server.callback.handler.class"),
        "OAUTHBEARER's validator: Kafka's OAuthBearerUnsecuredValidatorCallbackHandler (unsigned tokens, the"
        " default) or OAuthBearerValidatorCallbackHandler (tokens verified against the JWKS)",
    ),
    ConfigDef(
        "sasl.jaas.config",
        "",
        _kafka("sasl.jaas.config"),
        "JAAS config of a listener's mechanism; OAUTHBEARER's unsecured validator reads its"
        " unsecuredValidator* options from it",
    ),
    ConfigDef(
        "sasl.oauthbearer.jwks.endpoint.url",
        "",
        _kafka("sasl.oauthbearer.jwks.endpoint.url"),
        "JWKS (file:/path or http(s)://...) whose keys verify OAUTHBEARER tokens; set, tokens must be signed"
        " (needs the oauth extra)",
    ),
    ConfigDef(
        "sasl.oauthbearer.expected.audience",
        "",
        _kafka("sasl.oauthbearer.expected.audience"),
        "Audiences a verified token must name one of (empty: not checked)",
    ),
    ConfigDef(
        "sasl.oauthbearer.expected.issuer",
        "",
        _kafka("sasl.oauthbearer.expected.issuer"),
        "Issuer a verified token must name (empty: not checked)",
    ),
    ConfigDef(
        "sasl.oauthbearer.clock.skew.seconds",
        "30",
        _kafka("sasl.oauthbearer.clock.skew.seconds"),
        "Clock difference tolerated when checking a verified token's times",
    ),
    ConfigDef(
        "sasl.oauthbearer.scope.claim.name",
        "scope",
        _kafka("sasl.oauthbearer.scope.claim.name"),
        "Claim of a verified token holding its scopes",
    ),
    ConfigDef(
        "sasl.oauthbearer.sub.claim.name",
        "sub",
        _kafka("sasl.oauthbearer.sub.claim.name"),
        "Claim of a verified token holding its principal",
    ),
    ConfigDef(
        "sasl.oauthbearer.jwks.endpoint.refresh.ms",
        "3600000",
        _kafka("sasl.oauthbearer.jwks.endpoint.refresh.ms"),
        "How often the JWKS is read again (also at once when a token names a key it does not hold)",
    ),
    ConfigDef(
        "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms",
        "100",
        _kafka("sasl.oauthbearer.jwks.endpoint.retry.backoff.ms"),
        "First wait before reading the JWKS again after a failure",
    ),
    ConfigDef(
        "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms",
        "10000",
        _kafka("sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms"),
        "Longest wait between failed reads of the JWKS",
    ),
]

# Idempotent producers and transactions.
_DEFS += [
    ConfigDef(
        "transaction.max.timeout.ms",
        "900000",
        _int,
        "Largest transaction.timeout.ms a producer may ask for (INVALID_TRANSACTION_TIMEOUT beyond it)",
    ),
    ConfigDef(
        "transactional.id.expiration.ms",
        "604800000",
        _int,
        "A transactional id without transactions for this long is forgotten",
    ),
    ConfigDef(
        "producer.id.expiration.ms",
        "86400000",
        _int,
        "A partition forgets the sequence numbers of a producer idle this long (then UNKNOWN_PRODUCER_ID)",
    ),
    ConfigDef(
        "producer.id.expiration.check.interval.ms", "600000", _int, "How often idle producer ids are removed"
    ),
    ConfigDef(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "10000",
        _int,
        "How often transactions older than their timeout are aborted",
    ),
    ConfigDef(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "3600000",
        _int,
        "How often expired transactional ids are removed",
    ),
]

# Brokers sharing a PostgreSQL database (storage.engine=postgresql://...).
_DEFS += [
    ConfigDef(
        "cluster.heartbeat.interval.ms", "1000", _int, "How often a broker renews its row in the database"
    ),
    ConfigDef(
        "cluster.session.timeout.ms",
        "6000",
        _int,
        "A broker whose heartbeat is this old is dead: its partitions and groups move to the live brokers",
    ),
    ConfigDef(
        "storage.postgresql.pool.size", "8", _int, "Database connections a broker uses for produce and fetch"
    ),
]

# The doors beside the Kafka listeners (REST, STOMP, console, metrics) and the audit trail.
_DEFS += [
    ConfigDef(
        "security.open.surfaces",
        "",
        _str_list,
        "Surfaces that may run WITHOUT authentication beside secured Kafka listeners (a SASL listener,"
        " required client certificates or an authorizer): streaming, queue, stomp, console, metrics; each is"
        " logged as a warning. Otherwise a secured broker refuses to start with an open REST gateway, and"
        " STOMP, console and metrics check logins against the SASL users",
    ),
    ConfigDef(
        "rest.auth.principal.mapping",
        "",
        _str,
        "File mapping OCI API keys to principals, one '<fingerprint, keyId or user OCID> <Type:name>' a line;"
        " empty: a signed request's principal is User:<the user OCID of its keyId>",
    ),
    ConfigDef("audit.log.enable", "true", _bool, "Keep the audit trail (control-plane changes, refusals)"),
    ConfigDef(
        "audit.log.file",
        "",
        _str,
        "The audit trail's JSON-lines file; empty: audit.log in log.dirs (none with the memory engine)",
    ),
    ConfigDef(
        "audit.log.topic",
        "",
        _str,
        "Also append audit records to this topic (e.g. __audit), readable by principals with READ on it",
    ),
]

# Bounds on what one client can make the broker inflate, hold or create (kafkite's own keys where Kafka has
# none; Kafka's names and meanings otherwise).
_DEFS += [
    ConfigDef(
        "max.incremental.fetch.session.cache.slots",
        "1000",
        _int,
        "Most incremental fetch sessions (KIP-227) kept; when full, a new one replaces one idle for two"
        " minutes or one with fewer partitions (0: no sessions, every fetch is a full one)",
    ),
    ConfigDef(
        "queued.max.request.bytes",
        "536870912",
        _int,
        "Bytes of large requests (over 32 KiB) held across all connections while they arrive and are handled;"
        " a connection whose next request does not fit waits before reading it (Kafka's default -1 is"
        " unbounded; kafkite's is 512 MiB; -1: unbounded)",
    ),
    ConfigDef(
        "socket.request.timeout.ms",
        "30000",
        _int,
        "kafkite: a request must arrive whole within this time of its first byte, else its connection is"
        " closed (a client trickling bytes holds no buffer for long)",
        True,
    ),
    ConfigDef(
        "auto.create.topics.max.rate",
        "50",
        _int,
        "kafkite: partitions per second that auto-creation (Metadata) may create for one user and client id,"
        " with a burst of controller.quota.window.num - 1 seconds' worth; topics beyond it are answered"
        " LEADER_NOT_AVAILABLE (clients retry) and created once the rate allows; 0: no bound",
        True,
    ),
    ConfigDef(
        "message.max.decompressed.bytes",
        "67108864",
        _int,
        "kafkite: most bytes one compressed record batch may inflate to on produce (CORRUPT_MESSAGE beyond)",
        True,
    ),
    ConfigDef(
        "message.max.compression.ratio",
        "200",
        _int,
        "kafkite: a compressed batch inflating past max.message.bytes may inflate at most this many times its"
        " compressed size (CORRUPT_MESSAGE beyond: a decompression bomb)",
        True,
    ),
]

DEFINITIONS: dict[str, ConfigDef] = {d.name: d for d in _DEFS}

# Broker keys that Kafka also accepts under another name.
ALIASES: dict[str, str] = {
    "broker.id": "node.id",
    "log.dir": "log.dirs",
}

# Time-unit variants Kafka accepts: the most precise one given wins.
_UNIT_VARIANTS: dict[str, tuple[tuple[str, int], ...]] = {
    "log.retention.ms": (("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000)),
    "log.roll.ms": (("log.roll.hours", 3_600_000),),
    "log.roll.jitter.ms": (("log.roll.jitter.hours", 3_600_000),),
}

# Which broker key provides the default of each topic-level key.
TOPIC_FROM_BROKER: dict[str, str] = {
    "cleanup.policy": "log.cleanup.policy",
    "compression.type": "compression.type",
    "file.delete.delay.ms": "log.segment.delete.delay.ms",
    "flush.messages": "log.flush.interval.messages",
    "flush.ms": "log.flush.interval.ms",
    "index.interval.bytes": "log.index.interval.bytes",
    "max.message.bytes": "message.max.bytes",
    "message.timestamp.type": "log.message.timestamp.type",
    "min.insync.replicas": "min.insync.replicas",
    "retention.bytes": "log.retention.bytes",
    "retention.ms": "log.retention.ms",
    "segment.bytes": "log.segment.bytes",
    "segment.index.bytes": "log.index.size.max.bytes",
    "segment.ms": "log.roll.ms",
}


# ---------------------------------------------------------------------------------------- Kafka's catalogue


def _topic_keys_acted_on() -> set[str]:
    return {name for name, key in TOPIC_CONFIGS.items() if key.acts}


# Every other key of Kafka 4.2 (kafkite.config_catalogue): accepted with Kafka's validation, stored and
# described; kafkite acts on it only where it supplies a topic config's default (TOPIC_FROM_BROKER).
TOPIC_FROM_BROKER.update(
    {
        "delete.retention.ms": "log.cleaner.delete.retention.ms",
        "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
        "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
        "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
        "preallocate": "log.preallocate",
        "segment.jitter.ms": "log.roll.jitter.ms",
        "message.timestamp.before.max.ms": "log.message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms": "log.message.timestamp.after.max.ms",
        "unclean.leader.election.enable": "unclean.leader.election.enable",
        "compression.gzip.level": "compression.gzip.level",
        "compression.lz4.level": "compression.lz4.level",
        "compression.zstd.level": "compression.zstd.level",
        "local.retention.ms": "log.local.retention.ms",
        "local.retention.bytes": "log.local.retention.bytes",
    }
)

_ACTING_SYNONYMS = {b for t, b in TOPIC_FROM_BROKER.items() if t in _topic_keys_acted_on()}
_ACTING_SYNONYMS |= {variant for variants in _UNIT_VARIANTS.values() for variant, _ in variants}
for _key in BROKER_KEYS.values():
    if _key.name not in DEFINITIONS and _key.name not in ALIASES:
        DEFINITIONS[_key.name] = ConfigDef(
            _key.name,
            _key.default or "",
            _key.parse,
            _key.doc,
            dynamic=_key.dynamic,
            acts=_key.name in _ACTING_SYNONYMS,
        )

# Where kafkite's default deliberately differs from Kafka's built-in one, and why. defaults=kafka restores
# Kafka's value for the keys marked True; the others name where kafkite runs or what it cannot serve.
KAFKA_DEFAULT_DIFFERENCES: dict[str, tuple[str, bool]] = {
    "listeners": ("localhost only, so that a development broker is not reachable from the network", False),
    "node.id": ("Kafka requires it; a single broker is node 1", False),
    "log.dirs": ("./data beside where it runs; Kafka falls back to log.dir, /tmp/kafka-logs", False),
    "group.initial.rebalance.delay.ms": (
        "0 as Kafka's own shipped server.properties sets it, so that tests and development groups join at"
        " once; Kafka's built-in default waits 3 s for more members",
        True,
    ),
    "log.flush.scheduler.interval.ms": (
        "the flusher looks every second, so that flush.ms and flush.messages take effect without this key"
        " being set too (Kafka's default never runs it)",
        True,
    ),
    "sasl.enabled.mechanisms": ("Kerberos is not served; PLAIN, SCRAM and OAUTHBEARER are", False),
    "group.coordinator.rebalance.protocols": (
        "streams groups (KIP-1071) are not served; classic and consumer groups are",
        False,
    ),
    "queued.max.request.bytes": (
        "512 MiB, so that requests arriving on many connections at once cannot take the broker's memory;"
        " Kafka's -1 holds nothing back",
        True,
    ),
    "max.connections": (
        "a quarter of the descriptor limit (ulimit -n), so that connections cannot take the descriptors the"
        " partition files need; Kafka's is unbounded",
        True,
    ),
    "ssl.keystore.type": ("key stores are PEM files", False),
    "ssl.truststore.type": ("trust stores are PEM files", False),
}

# Kafka keys whose validation kafkite relaxes, and why.
RELAXED_VALIDATION: dict[str, str] = {
    "log.segment.bytes": "segments from 14 bytes (Kafka 4: 1 MiB) so that tests can roll segments quickly",
}

DEFAULTS_KEY = "defaults"
_DEFS.append(
    ConfigDef(
        DEFAULTS_KEY,
        "kafkite",
        _choice("kafkite", "kafka"),
        "kafka: take Kafka's built-in default wherever kafkite's differs for development and CI"
        " (group.initial.rebalance.delay.ms=3000, log.flush.scheduler.interval.ms=never)",
    )
)
DEFINITIONS[DEFAULTS_KEY] = _DEFS[-1]

# The keys kafkite defines itself (the others come from Kafka's catalogue, with Kafka's defaults).
OWN_KEYS = frozenset(d.name for d in _DEFS)


def kafka_default(name: str) -> str | None:
    """Kafka's built-in default of ``name`` (None: Kafka has none, or the key is kafkite's own)."""
    key = BROKER_KEYS.get(name)
    return key.default if key is not None else None


def is_kafka_key(name: str) -> bool:
    """Whether ``name`` is one of Kafka's broker keys (or a listener-prefixed form of one)."""
    parts = split_listener_key(name)
    base = parts[2] if parts else name
    return base in BROKER_KEYS or base in ("super.users", "allow.everyone.if.no.acl.found")


def base_key(name: str) -> str | None:
    """The key a listener-prefixed name sets (``listener.name.x.ssl.keystore.location`` ->
    ``ssl.keystore.location``) when it is a known key; the name itself when it is not prefixed."""
    parts = split_listener_key(name)
    if parts is None:
        return name if name in DEFINITIONS else None
    return parts[2] if parts[2] in DEFINITIONS else None


class BrokerConfig:
    """Parsed broker configuration: ``cfg["log.dirs"]`` gives the typed value, ``cfg.raw`` the strings.

    ``raw`` holds every key (Kafka's whole catalogue and kafkite's own) and the ``listener.name.*`` keys
    given; ``static_raw`` what start-up configured; ``explicit`` the keys start-up named; ``warnings`` what
    start-up should say about the configuration (removed Kafka keys, keys kafkite does not act on).
    """

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        raw = {name: d.default for name, d in DEFINITIONS.items()}
        given = dict(values or {})
        self.warnings: list[str] = []
        for alias, name in ALIASES.items():
            if alias in given:
                given.setdefault(name, given.pop(alias))
        for removed, why in REMOVED_BROKER_KEYS.items():
            if removed in given:
                given.pop(removed)
                self.warnings.append(f"{removed} was removed in Kafka 4.0 and is ignored: {why}")
        variants_given: dict[str, str] = {}
        for target, variants in _UNIT_VARIANTS.items():
            for variant, _ in variants:
                if variant in given:
                    variants_given[variant] = given[variant]
            if target in given:
                for variant, _ in variants:
                    given.pop(variant, None)
                continue
            for variant, factor in variants:
                if variant in given:
                    raw_variant = given.pop(variant)
                    try:
                        given[target] = str(int(raw_variant) * factor)
                    except ValueError:
                        raise ConfigError(f"{variant}: expected an integer, got {raw_variant!r}") from None
                    for other, _ in variants:
                        given.pop(other, None)
                    break
        for key, value in given.items():
            if base_key(key) is None:
                raise ConfigError(f"unknown configuration key {key!r} (see 'kafkite serve --help')")
            raw[key] = value
        raw.update(variants_given)
        if given.get(DEFAULTS_KEY, "").strip() == "kafka":
            for key, (_, restorable) in KAFKA_DEFAULT_DIFFERENCES.items():
                kafka_value = kafka_default(key)
                if restorable and key not in given and kafka_value is not None:
                    raw[key] = kafka_value
        self.raw: dict[str, str] = raw
        self.static_raw: dict[str, str] = dict(raw)
        self.explicit: set[str] = set(given) | set(variants_given)
        self._values: dict[str, Any] = {}
        for key, value in raw.items():
            self._values[key] = self._parse(key, value)
        if not self.raw["advertised.listeners"]:
            self._values["advertised.listeners"] = self._values["listeners"]
        else:
            self._values["advertised.listeners"] = self._parse_listeners("advertised.listeners")
        queued = self._values["queued.max.request.bytes"]
        if 0 < queued < self._values["socket.request.max.bytes"]:
            raise ConfigError(
                f"queued.max.request.bytes must be larger or equal to socket.request.max.bytes, got {queued}"
            )
        for key in (
            "socket.request.timeout.ms",
            "num.partitions",
            "message.max.bytes",
            "socket.request.max.bytes",
            "log.segment.bytes",
            "message.max.decompressed.bytes",
            "message.max.compression.ratio",
        ):
            if self._values[key] <= 0:
                raise ConfigError(f"{key}: must be positive, got {self.raw[key]}")
        inert = sorted(k for k in self.explicit if not DEFINITIONS[base_key(k) or k].acts and is_kafka_key(k))
        if inert:
            self.warnings.append(f"stored but not acted on by kafkite: {', '.join(inert)}")

    def _parse(self, key: str, value: str) -> Any:
        name = base_key(key) or key
        d = DEFINITIONS[name]
        kafka = BROKER_KEYS.get(name)
        try:
            if kafka is not None and d.acts and name not in RELAXED_VALIDATION and value != "":
                kafka.parse(value)  # Kafka's validation first, then kafkite's own reading of the value
            return d.parse(value)
        except ConfigValueError as e:
            raise ConfigError(str(e)) from None
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None

    def _parse_listeners(self, key: str) -> list[tuple[str, str, int]]:
        try:
            return _listeners(self.raw[key])
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def check(self, key: str, value: str) -> Any:
        """Validate ``value`` for ``key`` without setting it; the typed value (ConfigError when invalid)."""
        if base_key(key) is None:
            raise ConfigError(f"unknown configuration key {key!r}")
        return self._parse(key, value)

    def set(self, key: str, value: str) -> None:
        """Change one key at run time (validated); ``static_raw`` keeps what start-up configured."""
        self._values[key] = self.check(key, value)
        self.raw[key] = value

    def resolve_listener_ports(self, bound: Mapping[str, int]) -> bool:
        """Listeners configured with port 0 take the ports they were bound to (``bound``: by listener name),
        and so do advertised listeners of the same name with port 0. True when anything changed."""
        changed = False
        for key in ("listeners", "advertised.listeners"):
            entries: list[tuple[str, str, int]] = self._values[key]
            resolved = [(n, h, bound.get(n, p) if p == 0 else p) for n, h, p in entries]
            if resolved != entries:
                self._values[key] = resolved
                changed = True
        return changed

    def reset(self, key: str) -> None:
        """Back to what start-up configured (a listener-prefixed key start-up did not name goes away)."""
        if key in self.static_raw:
            self.set(key, self.static_raw[key])
        else:
            self.raw.pop(key, None)
            self._values.pop(key, None)

    def for_listener(self, listener: str, key: str, mechanism: str | None = None) -> Any:
        """``key`` as ``listener`` sees it: ``listener.name.<listener>[.<mechanism>].<key>`` when set, else
        the key itself (Kafka's listener overrides; names are matched without regard to case)."""
        prefix = f"listener.name.{listener.lower()}."
        candidates = [f"{prefix}{mechanism.lower()}.{key}"] if mechanism else []
        candidates.append(prefix + key)
        lowered = {k.lower(): k for k in self._values if k.startswith("listener.name.")}
        for c in candidates:
            actual = lowered.get(c.lower())
            if actual is not None:
                return self._values[actual]
        return self._values[key]

    @property
    def data_dir(self) -> Path:
        return Path(self._values["log.dirs"].split(",")[0])

    def topic_defaults(self) -> dict[str, str]:
        """Broker-level values under topic key names: the defaults of every topic config (keys whose broker
        value is null keep the topic's own default)."""
        return {
            topic_key: self.raw[broker_key]
            for topic_key, broker_key in TOPIC_FROM_BROKER.items()
            if self.raw.get(broker_key, "") != ""
        }


def help_text() -> str:
    """Every key with its default and meaning, as ``kafkite serve --help`` lists them."""
    own = sorted(n for n, d in DEFINITIONS.items() if d.acts)
    inert = sorted(n for n, d in DEFINITIONS.items() if not d.acts)
    lines = ["configuration keys (Apache Kafka names; set with --override key=value or in --config):", ""]
    for name in own:
        d = DEFINITIONS[name]
        lines.append(f"  {name} (default: {d.default or '<none>'})")
        if d.doc:
            lines.append(f"      {d.doc}")
        if name in KAFKA_DEFAULT_DIFFERENCES:
            why, restorable = KAFKA_DEFAULT_DIFFERENCES[name]
            kafka = kafka_default(name)
            restore = "; defaults=kafka restores it" if restorable else ""
            lines.append(
                f"      Kafka's default: {kafka if kafka is not None else '<none>'} ({why}{restore})"
            )
    lines += [
        "",
        "Apache Kafka's other keys are accepted (validated as Kafka validates them), stored and described",
        "by DescribeConfigs, and have no effect in kafkite (replication, KRaft, Kerberos, tiered storage,",
        "thread pools, ...):",
        "",
    ]
    for name in inert:
        lines.append(f"  {name} (default: {DEFINITIONS[name].default or '<none>'})")
    lines += [
        "",
        "Listener overrides: listener.name.<listener>.<key>, and listener.name.<listener>.<mechanism>.<key>",
        "for sasl.jaas.config, sasl.server.callback.handler.class, connections.max.reauth.ms, ...",
        "Topic-level keys (retention.ms, segment.bytes, cleanup.policy, ...) are set per topic with the",
        "admin APIs; their defaults come from the broker keys named in parentheses above.",
    ]
    return "\n".join(lines)


def read_properties(path: str | Path) -> dict[str, str]:
    """Read a Java-style .properties file (key=value or key: value, # and ! comments)."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#!":
            continue
        sep = min((i for i in (s.find("="), s.find(":")) if i >= 0), default=-1)
        if sep < 0:
            raise ConfigError(f"{path}:{lineno}: expected key=value, got {s!r}")
        out[s[:sep].strip()] = s[sep + 1 :].strip()
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--override expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_config(config_path: str | None, overrides: Sequence[str]) -> BrokerConfig:
    """A broker configuration from a properties file (optional) and ``key=value`` overrides."""
    values: dict[str, str] = {}
    if config_path:
        values.update(read_properties(config_path))
    values.update(parse_overrides(overrides))
    return BrokerConfig(values)


def default_int(key: str) -> int:
    """The default of broker key ``key`` as a number: components that keep their settings in a dataclass
    take their defaults from here, so that each default is written once (in the table above)."""
    return int(DEFINITIONS[key].default)


def default_str(key: str) -> str:
    return DEFINITIONS[key].default


def default_list(key: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in DEFINITIONS[key].default.split(",") if x.strip())
