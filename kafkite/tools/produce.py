"""``kafkite produce``: produce messages from stdin or files, in the manner of ``kcat -P``.

Works against any Kafka-compatible broker through kafkite's own client. Messages are read one per line (or
per ``-D`` delimiter) from stdin or the files named, or one per file with ``-l``; ``-K`` splits a key off each
message, ``-H name=value`` adds headers, ``--json`` reads one JSON object per line
(``{"key", "value"|"payload", "headers", "partition", "timestamp"}``, what ``kafkite consume --json``
writes). Messages with a key go to murmur2(key) like the Java client, others round-robin, unless ``-p``
names the partition.

Also home of what the topic, produce and consume commands share: connection options and the client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from kafkite import client as client_module
from kafkite.client import KafkaClient, KafkaClientError
from kafkite.clock import now_ms
from kafkite.config import read_properties
from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.tools import Subcommands

CODECS = {
    "none": records.COMPRESSION_NONE,
    "gzip": records.COMPRESSION_GZIP,
    "snappy": records.COMPRESSION_SNAPPY,
    "lz4": records.COMPRESSION_LZ4,
    "zstd": records.COMPRESSION_ZSTD,
}
DEFAULT_BATCH_BYTES = 512 * 1024
RETRIABLE = {
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.REQUEST_TIMED_OUT,
    ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
}


class ToolError(Exception):
    """A user-facing failure: printed as ``kafkite <command>: message`` with exit code 1."""


# ------------------------------------------------------------------------------------------ shared options


def add_connection_args(p: argparse.ArgumentParser, *, inherited: bool = False) -> None:
    """-b, -X and -F; ``inherited``: on a sub-command, where leaving them out keeps the parent's values."""
    default = argparse.SUPPRESS if inherited else None
    p.add_argument(
        "-b",
        "--bootstrap",
        default=default if inherited else "localhost:9092",
        help="bootstrap servers (default localhost:9092)",
    )
    p.add_argument(
        "-X",
        dest="props",
        metavar="PROP=VALUE",
        action="append",
        default=default if inherited else [],
        help="client property, e.g. security.protocol=SASL_SSL, sasl.mechanism, sasl.username (repeatable)",
    )
    p.add_argument("-F", dest="props_file", metavar="FILE", default=default, help="client properties file")


def client_properties(args: argparse.Namespace) -> dict[str, str]:
    props: dict[str, str] = {}
    if getattr(args, "props_file", None):
        props.update(read_properties(args.props_file))
    for item in getattr(args, "props", None) or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise ToolError(f"-X expects property=value, got {item!r}")
        props[k.strip()] = v.strip()
    return props


def make_client(args: argparse.Namespace, client_id: str) -> KafkaClient:
    props = client_properties(args)
    bootstrap = (
        props.pop("bootstrap.servers", None) or props.pop("metadata.broker.list", None) or args.bootstrap
    )
    props.pop("client.id", None)
    security_cls = getattr(client_module, "ClientSecurity", None)
    if security_cls is not None and props:
        try:
            security = security_cls.from_properties(props)
        except ValueError as e:
            raise ToolError(str(e)) from None
        return KafkaClient(bootstrap, client_id, security=security)
    if any(k.startswith(("security.", "sasl.", "ssl.")) for k in props):
        raise ToolError("this build of kafkite's client does not support TLS or SASL properties")
    return KafkaClient(bootstrap, client_id)


def run_tool(name: str, coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except (ToolError, KafkaClientError, ConnectionError, OSError, ValueError) as e:
        print(f"kafkite {name}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def unescape(s: str) -> bytes:
    r"""Delimiters as kcat takes them: \n, \t, \r, \0, \\ and \xNN escapes."""
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")


async def topic_partitions(client: KafkaClient, topic: str) -> int:
    await client.refresh_metadata([topic])
    n = client.topics.get(topic)
    if n is None:
        resp = await client.refresh_metadata([topic])
        codes = [t["error_code"] for t in resp["topics"] if t["name"] == topic]
        code = codes[0] if codes else int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        raise KafkaClientError(code, f"topic {topic}")
    return n


# ------------------------------------------------------------------------------------------ input


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    partition: int | None = None
    timestamp: int | None = None


def _decode_field(obj: dict[str, Any], name: str, enc_name: str) -> bytes | None:
    v = obj.get(name)
    if v is None:
        return None
    if obj.get(enc_name) == "base64":
        return base64.b64decode(v)
    if isinstance(v, str):
        return v.encode()
    return json.dumps(v).encode()


def parse_json_message(line: bytes) -> Message:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ToolError(f"not a JSON object: {line[:80]!r}: {e}") from None
    if not isinstance(obj, dict):
        raise ToolError(f"not a JSON object: {line[:80]!r}")
    value_name = "payload" if "payload" in obj else "value"
    value = _decode_field(obj, value_name, f"{value_name}_encoding")
    key = _decode_field(obj, "key", "key_encoding")
    headers: list[tuple[str, bytes | None]] = []
    h = obj.get("headers")
    if isinstance(h, list):  # kcat's ["name", "value", ...]
        for i in range(0, len(h) - 1, 2):
            headers.append((str(h[i]), None if h[i + 1] is None else str(h[i + 1]).encode()))
    elif isinstance(h, dict):
        for k, v in h.items():
            headers.append((str(k), None if v is None else str(v).encode()))
    part = obj.get("partition")
    ts = obj.get("timestamp", obj.get("ts"))
    return Message(key, value, headers, int(part) if part is not None and part >= 0 else None, ts)


def split_messages(stream: BinaryIO, delimiter: bytes) -> Iterator[bytes]:
    """Messages separated by ``delimiter``; a trailing delimiter does not make an empty message."""
    buf = b""
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(delimiter)
        yield from done
    if buf:
        yield buf


def read_messages(args: argparse.Namespace) -> Iterator[Message]:
    key_delim = unescape(args.key_delimiter) if args.key_delimiter is not None else None
    delim = unescape(args.delimiter)
    headers = []
    for h in args.header or []:
        name, sep, hvalue = h.partition("=")
        if not sep:
            raise ToolError(f"-H expects name=value, got {h!r}")
        headers.append((name, hvalue.encode()))

    def sources() -> Iterable[BinaryIO]:
        if not args.files or args.files == ["-"]:
            yield sys.stdin.buffer
            return
        for path in args.files:
            with open(path, "rb") as f:
                yield f

    for src in sources():
        raw: Iterable[bytes] = [src.read()] if args.file_per_message else split_messages(src, delim)
        for data in raw:
            if args.json:
                if not data.strip():
                    continue
                m = parse_json_message(data)
                m.headers = headers + m.headers
            else:
                key: bytes | None = None
                value: bytes | None = data
                if key_delim is not None:
                    k, sep, v = data.partition(key_delim)
                    key, value = (k, v) if sep else (None, data)
                if args.null_empty:
                    key = key or None
                    value = value or None
                m = Message(key, value, list(headers))
            if args.partition is not None:
                m.partition = args.partition
            yield m


# ------------------------------------------------------------------------------------------ producing


class Producer:
    """Batches messages per partition and sends them to the partition leaders (acks as asked)."""

    def __init__(
        self,
        client: KafkaClient,
        topic: str,
        partitions: int,
        *,
        acks: int = -1,
        compression: int = records.COMPRESSION_NONE,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:
        self.client = client
        self.topic = topic
        self.partitions = partitions
        self.acks = acks
        self.compression = compression
        self.batch_bytes = batch_bytes
        self.pending: dict[int, list[records.RecordInput]] = {}
        self.pending_bytes: dict[int, int] = {}
        self.sent = 0
        self.offsets: list[tuple[int, int, int]] = []  # (partition, base offset, count) per batch
        self._rr = 0

    def partition_for(self, m: Message) -> int:
        if m.partition is not None:
            if not 0 <= m.partition < self.partitions:
                raise ToolError(
                    f"partition {m.partition} does not exist ({self.topic} has {self.partitions})"
                )
            return m.partition
        if m.key is not None:
            # Loaded for keyed records only: the gateway module is not part of the CLI's start-up.
            from kafkite.streaming.messages import partition_for_key

            return partition_for_key(m.key, self.partitions)
        self._rr = (self._rr + 1) % self.partitions
        return self._rr

    async def add(self, m: Message) -> None:
        p = self.partition_for(m)
        ts = m.timestamp if m.timestamp is not None else now_ms()
        self.pending.setdefault(p, []).append((m.key, m.value, m.headers, ts))
        size = (
            len(m.key or b"") + len(m.value or b"") + sum(len(k) + len(v or b"") for k, v in m.headers) + 16
        )
        self.pending_bytes[p] = self.pending_bytes.get(p, 0) + size
        if self.pending_bytes[p] >= self.batch_bytes:
            await self.flush([p])

    async def flush(self, partitions: list[int] | None = None) -> None:
        todo = {
            p: recs for p, recs in self.pending.items() if recs and (partitions is None or p in partitions)
        }
        for p in todo:
            self.pending[p] = []
            self.pending_bytes[p] = 0
        by_leader: dict[int, list[int]] = {}
        for p in todo:
            by_leader.setdefault(self.client.leaders.get((self.topic, p), -1), []).append(p)
        await asyncio.gather(
            *(self._send(leader, {p: todo[p] for p in ps}) for leader, ps in by_leader.items())
        )

    async def _send(
        self, leader: int, batches: dict[int, list[records.RecordInput]], attempt: int = 0
    ) -> None:
        built = {p: records.build_batch(recs, compression=self.compression) for p, recs in batches.items()}
        body = {
            "transactional_id": None,
            "acks": self.acks,
            "timeout_ms": 30000,
            "topic_data": [
                {
                    "name": self.topic,
                    "partition_data": [{"index": p, "records": b} for p, b in sorted(built.items())],
                }
            ],
        }
        conn = await (self.client.connection(leader) if leader >= 0 else self.client.any_connection())
        if self.acks == 0:
            conn.send(ApiKey.PRODUCE, body, expect_response=False)
            await conn.drain()
            self.sent += sum(len(r) for r in batches.values())
            return
        resp = await conn.request(ApiKey.PRODUCE, body)
        retry: dict[int, list[records.RecordInput]] = {}
        for t in resp["responses"]:
            for pr in t["partition_responses"]:
                p, code = pr["index"], pr["error_code"]
                if code == 0:
                    self.sent += len(batches[p])
                    self.offsets.append((p, pr["base_offset"], len(batches[p])))
                elif code in RETRIABLE and attempt < 5:
                    retry[p] = batches[p]
                else:
                    raise KafkaClientError(
                        code, f"produce to {self.topic}-{p}: {pr.get('error_message') or ''}"
                    )
        if retry:
            await asyncio.sleep(0.2 * (attempt + 1))
            await self.client.refresh_metadata([self.topic])
            groups: dict[int, dict[int, list[records.RecordInput]]] = {}
            for p, recs in retry.items():
                groups.setdefault(self.client.leaders.get((self.topic, p), -1), {})[p] = recs
            for ld, b in groups.items():
                await self._send(ld, b, attempt + 1)


async def produce_main(args: argparse.Namespace) -> int:
    async with make_client(args, "kafkite-produce") as client:
        partitions = await topic_partitions(client, args.topic)
        producer = Producer(
            client,
            args.topic,
            partitions,
            acks=args.acks,
            compression=CODECS[args.compression],
            batch_bytes=args.batch_bytes,
        )
        for count, m in enumerate(read_messages(args), 1):
            await producer.add(m)
            if args.count is not None and count >= args.count:
                break
        await producer.flush()
    if args.verbose:
        print(f"% produced {producer.sent} messages to {args.topic}", file=sys.stderr)
    return 0


def _acks(v: str) -> int:
    if v == "all":
        return -1
    n = int(v)
    if n not in (-1, 0, 1):
        raise argparse.ArgumentTypeError("acks must be all, -1, 0 or 1")
    return n


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "produce",
        help="produce messages from stdin or files (like kcat -P; any Kafka-compatible broker)",
        description=__doc__.split("\n\nAlso")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p)
    p.add_argument("-t", "--topic", required=True)
    p.add_argument("-p", "--partition", type=int, help="produce to this partition")
    p.add_argument("-K", dest="key_delimiter", metavar="DELIM", help="key delimiter: KEY<DELIM>VALUE")
    p.add_argument(
        "-D", dest="delimiter", default="\\n", metavar="DELIM", help="message delimiter (default \\n)"
    )
    p.add_argument(
        "-H", dest="header", action="append", metavar="NAME=VALUE", help="add a header (repeatable)"
    )
    p.add_argument("-l", dest="file_per_message", action="store_true", help="each file is one message")
    p.add_argument("-Z", dest="null_empty", action="store_true", help="send empty keys and values as NULL")
    p.add_argument("-z", "--compression", choices=sorted(CODECS), default="none", help="compression codec")
    p.add_argument("-c", "--count", type=int, help="stop after this many messages")
    p.add_argument("--acks", type=_acks, default=-1, help="all (default), 1 or 0")
    p.add_argument("--json", action="store_true", help="input is one JSON object per line")
    p.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES, help="largest batch per partition")
    p.add_argument("-v", "--verbose", action="store_true", help="report what was produced on stderr")
    p.add_argument("files", nargs="*", metavar="FILE", help="read messages from these files (default stdin)")
    p.set_defaults(func=lambda a: run_tool("produce", produce_main(a)))
