"""``kafkite consume``: read messages from a topic, in the manner of ``kcat -C``.

Works against any Kafka-compatible broker through kafkite's own client (read_committed: aborted transactions
are skipped). Output is formatted with ``-f`` (kcat's tokens), or one JSON object per message with ``--json``,
to stdout or ``--output FILE``.

Format tokens: %s value, %S value length (-1 for null), %R value length as a big-endian int32, %k key,
%K key length, %h headers (name=value,...), %t topic, %p partition, %o offset, %T timestamp (ms), %%; and the
escapes \\n \\r \\t \\0 \\\\ \\xNN. Default: %s followed by -D (a newline), with -K D: %k D %s.

Offsets (-o): beginning (the default, as kcat), end, N (absolute), -N (N before the end), s@TS (the first
message at or after TS ms).
e@TS stops each partition before its first message at or after TS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from kafkite.client import KafkaClient, KafkaClientError
from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.tools.produce import ToolError, add_connection_args, make_client, run_tool, topic_partitions

if TYPE_CHECKING:
    from kafkite.tools import Subcommands

LATEST, EARLIEST = -1, -2
READ_UNCOMMITTED, READ_COMMITTED = 0, 1
MAX_FETCH_VERSION = 12  # topic names rather than topic ids


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    timestamp: int
    log_append_time: bool
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    leader: int


# ------------------------------------------------------------------------------------------ formatting

Piece = Callable[[Msg], bytes]


def compile_format(fmt: str, null_text: bytes = b"") -> Callable[[Msg], bytes]:
    """A kcat format string as a function from a message to the bytes to write."""
    pieces: list[Piece | bytes] = []
    lit = bytearray()
    i = 0

    def flush_lit() -> None:
        if lit:
            pieces.append(bytes(lit))
            lit.clear()

    def length(b: bytes | None) -> bytes:
        return b"-1" if b is None else str(len(b)).encode()

    tokens: dict[str, Piece] = {
        "s": lambda m: null_text if m.value is None else m.value,
        "S": lambda m: length(m.value),
        "R": lambda m: struct.pack(">i", -1 if m.value is None else len(m.value)),
        "k": lambda m: null_text if m.key is None else m.key,
        "K": lambda m: length(m.key),
        "h": lambda m: b",".join(k.encode() + (b"" if v is None else b"=" + v) for k, v in m.headers),
        "t": lambda m: m.topic.encode(),
        "p": lambda m: str(m.partition).encode(),
        "o": lambda m: str(m.offset).encode(),
        "T": lambda m: str(m.timestamp).encode(),
    }
    escapes = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            t = fmt[i + 1]
            if t == "%":
                lit += b"%"
            elif t in tokens:
                flush_lit()
                pieces.append(tokens[t])
            else:
                raise ToolError(f"unknown format token %{t} in {fmt!r}")
            i += 2
            continue
        if c == "\\" and i + 1 < len(fmt):
            t = fmt[i + 1]
            if t == "x" and i + 3 < len(fmt) + 1:
                try:
                    lit.append(int(fmt[i + 2 : i + 4], 16))
                except ValueError:
                    raise ToolError(f"bad \\x escape in {fmt!r}") from None
                i += 4
                continue
            if t in escapes:
                lit += escapes[t]
                i += 2
                continue
        lit += c.encode()
        i += 1
    flush_lit()

    def render(m: Msg) -> bytes:
        return b"".join(p if isinstance(p, bytes) else p(m) for p in pieces)

    return render


def _text_or_base64(out: dict[str, Any], name: str, data: bytes | None) -> None:
    if data is None:
        out[name] = None
        return
    try:
        out[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[name] = base64.b64encode(data).decode()
        out[f"{name}_encoding"] = "base64"


def to_json(m: Msg) -> bytes:
    """kcat -J's envelope; bytes that are not UTF-8 are base64 with a ``<field>_encoding`` marker."""
    out: dict[str, Any] = {
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "tstype": "logappend" if m.log_append_time else "create",
        "ts": m.timestamp,
        "broker": m.leader,
    }
    hdrs: list[str | None] = []
    for k, v in m.headers:
        hdrs.append(k)
        hdrs.append(None if v is None else v.decode("utf-8", "backslashreplace"))
    out["headers"] = hdrs if hdrs else None
    _text_or_base64(out, "key", m.key)
    _text_or_base64(out, "payload", m.value)
    return json.dumps(out, ensure_ascii=False).encode() + b"\n"


# ------------------------------------------------------------------------------------------ offsets


def parse_offset(spec: str) -> tuple[str, int]:
    """('beginning'|'end'|'absolute'|'relative'|'timestamp', value)."""
    s = spec.strip()
    if s in ("beginning", "earliest", "smallest"):
        return "beginning", 0
    if s in ("end", "latest", "largest"):
        return "end", 0
    if s.startswith("s@"):
        return "timestamp", int(s[2:])
    n = int(s)
    return ("relative", -n) if n < 0 else ("absolute", n)


async def start_offsets(client: KafkaClient, topic: str, parts: list[int], spec: str) -> dict[int, int]:
    kind, n = parse_offset(spec)
    if kind == "absolute":
        return dict.fromkeys(parts, n)
    ends = await client.list_offsets(topic, parts, LATEST)
    if kind == "end":
        return ends
    starts = await client.list_offsets(topic, parts, EARLIEST)
    if kind == "beginning":
        return starts
    if kind == "relative":
        return {p: max(starts[p], ends[p] - n) for p in parts}
    at = await client.list_offsets(topic, parts, n)
    return {p: ends[p] if at[p] < 0 else at[p] for p in parts}


# ------------------------------------------------------------------------------------------ consuming


@dataclass
class PartitionState:
    position: int
    high_watermark: int = -1
    done: bool = False


def decode_batches(
    topic: str, partition: int, data: bytes, position: int, aborted: list[tuple[int, int]], leader: int
) -> tuple[list[Msg], int]:
    """Messages at or after ``position`` in whole batches of ``data``, and the next position."""
    out: list[Msg] = []
    aborted_sorted = sorted(aborted, key=lambda a: a[1])
    active: set[int] = set()
    ai = 0
    nxt = position
    pos = 0
    while pos + records.BATCH_HEADER_SIZE <= len(data):
        try:
            h = records.read_header(data, pos)
        except records.InvalidBatch:
            break
        if pos + h.size > len(data):
            break  # a partial batch at the end of the response
        batch_at = pos
        pos += h.size
        while ai < len(aborted_sorted) and aborted_sorted[ai][1] <= h.last_offset:
            active.add(aborted_sorted[ai][0])
            ai += 1
        if h.last_offset < position:
            continue
        nxt = max(nxt, h.last_offset + 1)
        if h.is_control:
            if h.producer_id in active:
                recs = records.decode_records(data, batch_at, h)
                for r in recs:
                    ctl = records.parse_control_record(r)
                    if ctl is not None and not ctl[0]:
                        active.discard(h.producer_id)
            continue
        if h.is_transactional and h.producer_id in active:
            continue
        for r in records.iter_records(data, batch_at, h):
            if r.offset < position:
                continue
            ts = h.max_timestamp if h.log_append_time else r.timestamp
            out.append(
                Msg(
                    topic, partition, r.offset, ts, h.log_append_time, r.key, r.value, list(r.headers), leader
                )
            )
    return out, nxt


class Consumer:
    def __init__(
        self,
        client: KafkaClient,
        topic: str,
        positions: dict[int, int],
        *,
        exit_at_end: bool,
        stop_ts: int | None = None,
        isolation: int = READ_COMMITTED,
        max_wait_ms: int = 500,
    ) -> None:
        self.client = client
        self.topic = topic
        self.parts = {p: PartitionState(o) for p, o in positions.items()}
        self.exit_at_end = exit_at_end
        self.stop_ts = stop_ts
        self.isolation = isolation
        self.max_wait_ms = max_wait_ms

    def finished(self) -> bool:
        return all(s.done for s in self.parts.values())

    async def poll(self) -> list[Msg]:
        by_leader: dict[int, list[int]] = {}
        for p, s in self.parts.items():
            if not s.done:
                by_leader.setdefault(self.client.leaders.get((self.topic, p), -1), []).append(p)
        results = await asyncio.gather(*(self._fetch(ld, ps) for ld, ps in by_leader.items()))
        out: list[Msg] = []
        for r in results:
            out.extend(r)
        return out

    async def _fetch(self, leader: int, parts: list[int]) -> list[Msg]:
        conn = await (self.client.connection(leader) if leader >= 0 else self.client.any_connection())
        version = min(conn.version_for(ApiKey.FETCH), MAX_FETCH_VERSION)
        body = {
            "replica_id": -1,
            "max_wait_ms": 0 if self.exit_at_end else self.max_wait_ms,
            "min_bytes": 1,
            "max_bytes": 8 * 1024 * 1024,
            "isolation_level": self.isolation,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": self.topic,
                    "partitions": [
                        {
                            "partition": p,
                            "current_leader_epoch": -1,
                            "fetch_offset": self.parts[p].position,
                            "last_fetched_epoch": -1,
                            "log_start_offset": -1,
                            "partition_max_bytes": 1024 * 1024,
                        }
                        for p in parts
                    ],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        }
        resp = await conn.request(ApiKey.FETCH, body, version=version)
        if resp.get("error_code"):
            raise KafkaClientError(resp["error_code"], "Fetch")
        out: list[Msg] = []
        for t in resp["responses"]:
            for pr in t["partitions"]:
                p = pr["partition_index"]
                st = self.parts.get(p)
                if st is None:
                    continue
                code = pr["error_code"]
                if code == ErrorCode.OFFSET_OUT_OF_RANGE:
                    await self._reset(p)
                    continue
                if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
                    await asyncio.sleep(0.2)
                    await self.client.refresh_metadata([self.topic])
                    continue
                if code:
                    raise KafkaClientError(code, f"Fetch {self.topic}-{p}")
                end = pr["last_stable_offset"] if self.isolation == READ_COMMITTED else pr["high_watermark"]
                if end is None or end < 0:
                    end = pr["high_watermark"]
                st.high_watermark = end
                data = bytes(pr["records"] or b"")
                aborted = [
                    (a["producer_id"], a["first_offset"]) for a in pr.get("aborted_transactions") or []
                ]
                msgs, nxt = decode_batches(self.topic, p, data, st.position, aborted, leader)
                st.position = nxt
                if self.stop_ts is not None:
                    for i, m in enumerate(msgs):
                        if m.timestamp >= self.stop_ts:
                            msgs = msgs[:i]
                            st.done = True
                            break
                out.extend(msgs)
                if self.exit_at_end and st.position >= st.high_watermark:
                    st.done = True
        return out

    async def _reset(self, p: int) -> None:
        st = self.parts[p]
        start = (await self.client.list_offsets(self.topic, [p], EARLIEST))[p]
        end = (await self.client.list_offsets(self.topic, [p], LATEST))[p]
        new = start if st.position < start else end
        print(
            f"% {self.topic}-{p}: offset {st.position} is out of range [{start}, {end}]; resetting to {new}",
            file=sys.stderr,
        )
        st.position = new


async def consume_main(args: argparse.Namespace) -> int:
    if args.json:
        render: Callable[[Msg], bytes] = to_json
    else:
        fmt = args.format
        if fmt is None:
            key = "" if args.key_delimiter is None else "%k" + args.key_delimiter.replace("%", "%%")
            fmt = key + "%s" + args.delimiter.replace("%", "%%")
        render = compile_format(fmt, b"NULL" if args.null_text else b"")
    offset_specs = args.offset or ["beginning"]
    stop_ts = None
    starts_spec = [s for s in offset_specs if not s.startswith("e@")]
    for s in offset_specs:
        if s.startswith("e@"):
            stop_ts = int(s[2:])
    try:
        for s in starts_spec:
            parse_offset(s)
    except ValueError:
        raise ToolError(f"bad offset {starts_spec}: use beginning, end, N, -N, s@TS or e@TS") from None
    out: BinaryIO = open(args.output, "ab") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        async with make_client(args, "kafkite-consume") as client:
            n = await topic_partitions(client, args.topic)
            parts = sorted({p for spec in args.partition or [] for p in _partitions(spec)}) or list(range(n))
            for p in parts:
                if not 0 <= p < n:
                    raise ToolError(f"partition {p} does not exist ({args.topic} has {n})")
            positions = await start_offsets(
                client, args.topic, parts, starts_spec[-1] if starts_spec else "beginning"
            )
            consumer = Consumer(
                client,
                args.topic,
                positions,
                exit_at_end=args.exit,
                stop_ts=stop_ts,
                isolation=READ_UNCOMMITTED if args.read_uncommitted else READ_COMMITTED,
            )
            count = 0
            while not consumer.finished():
                for m in await consumer.poll():
                    out.write(render(m))
                    count += 1
                    if args.count is not None and count >= args.count:
                        out.flush()
                        return 0
                out.flush()
            if args.verbose:
                print(f"% consumed {count} messages from {args.topic}", file=sys.stderr)
    finally:
        out.flush()
        if args.output:
            out.close()
    return 0


def _partitions(spec: str) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ToolError(f"bad partition list {spec!r}") from None


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "consume",
        help="consume messages to stdout or a file (like kcat -C; any Kafka-compatible broker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p)
    p.add_argument("-t", "--topic", required=True)
    p.add_argument(
        "-p", "--partition", action="append", metavar="N[,N...]", help="only these partitions (repeatable)"
    )
    p.add_argument(
        "-o",
        "--offset",
        action="append",
        metavar="OFFSET",
        help="start at beginning (default), end, N, -N or s@TS; e@TS: stop there (repeatable)",
    )
    p.add_argument("-c", "--count", type=int, help="exit after this many messages")
    p.add_argument(
        "-e", dest="exit", action="store_true", help="exit when the end of every partition is reached"
    )
    p.add_argument("-f", dest="format", metavar="FORMAT", help="output format (see above)")
    p.add_argument("-K", dest="key_delimiter", metavar="DELIM", help="print keys, followed by DELIM")
    p.add_argument(
        "-D", dest="delimiter", default="\\n", metavar="DELIM", help="message delimiter (default \\n)"
    )
    p.add_argument("-Z", dest="null_text", action="store_true", help='print null keys and values as "NULL"')
    p.add_argument(
        "-J", "--json", action="store_true", help="one JSON object per message (kcat -J's envelope)"
    )
    p.add_argument("--output", metavar="FILE", help="append the output to FILE instead of stdout")
    p.add_argument(
        "--read-uncommitted", action="store_true", help="also show records of open/aborted transactions"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="report what was consumed on stderr")
    p.set_defaults(func=lambda a: run_tool("consume", consume_main(a)))
