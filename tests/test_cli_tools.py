"""``kafkite topic | produce | consume``: formats, offsets and transactions in unit tests, and round trips
through the real commands against kafkite (and against a second broker when KAFKITE_OTHER_BOOTSTRAP names
one, e.g. an Apache Kafka at localhost:9092)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import REPO, BrokerProcess

from kafkite.protocol import records
from kafkite.tools.consume import Msg, compile_format, decode_batches, parse_offset, to_json
from kafkite.tools.produce import ToolError, parse_json_message, split_messages, unescape

OTHER = os.environ.get("KAFKITE_OTHER_BOOTSTRAP", "")

# ------------------------------------------------------------------------------------------ units


def _msg(**kw: object) -> Msg:
    base: dict[str, object] = dict(
        topic="t",
        partition=2,
        offset=41,
        timestamp=1700000000123,
        log_append_time=False,
        key=b"k1",
        value=b"hello",
        headers=[("a", b"1"), ("b", None)],
        leader=1,
    )
    base.update(kw)
    return Msg(**base)  # type: ignore[arg-type]


def test_format_tokens_like_kcat() -> None:
    f = compile_format(r"%t/%p/%o %T [%k:%K] %h %s(%S) 100%%\t\x41\n")
    assert f(_msg()) == b"t/2/41 1700000000123 [k1:2] a=1,b hello(5) 100%\tA\n"
    assert compile_format("%k|%s|%S|%K")(_msg(key=None, value=None)) == b"||-1|-1"
    assert compile_format("%k|%s", b"NULL")(_msg(key=None, value=None)) == b"NULL|NULL"
    assert compile_format("%R%s")(_msg(value=b"xyz")) == b"\x00\x00\x00\x03xyz"
    with pytest.raises(ToolError):
        compile_format("%q")


def test_json_output_is_kcat_envelope_and_reads_back() -> None:
    m = _msg(value=b"\xff\x00binary", headers=[("h", b"v")])
    obj = json.loads(to_json(m))
    assert (
        obj["topic"] == "t" and obj["partition"] == 2 and obj["offset"] == 41 and obj["ts"] == 1700000000123
    )
    assert obj["headers"] == ["h", "v"] and obj["key"] == "k1"
    assert obj["payload_encoding"] == "base64"
    assert base64.b64decode(obj["payload"]) == b"\xff\x00binary"
    back = parse_json_message(to_json(m))
    assert (back.key, back.value, back.headers, back.partition) == (
        b"k1",
        b"\xff\x00binary",
        [("h", b"v")],
        2,
    )
    assert parse_json_message(b'{"value": "v", "headers": {"x": "y"}}').headers == [("x", b"y")]


def test_offsets_and_delimiters() -> None:
    assert parse_offset("beginning") == ("beginning", 0)
    assert parse_offset("end") == ("end", 0)
    assert parse_offset("42") == ("absolute", 42)
    assert parse_offset("-5") == ("relative", 5)
    assert parse_offset("s@1700000000000") == ("timestamp", 1700000000000)
    with pytest.raises(ValueError):
        parse_offset("middle")
    assert unescape(r"\n") == b"\n" and unescape(r"\t|") == b"\t|" and unescape(r"\x01") == b"\x01"
    assert list(split_messages(io.BytesIO(b"a\nb\n\nc\n"), b"\n")) == [b"a", b"b", b"", b"c"]
    assert list(split_messages(io.BytesIO(b"a;;b"), b";;")) == [b"a", b"b"]


def test_decode_skips_aborted_transactions_and_earlier_offsets() -> None:
    ts = 1_700_000_000_000
    plain = records.build_batch([(b"k", b"p%d" % i, [], ts) for i in range(3)], base_offset=0)
    aborted = records.build_batch(
        [(None, b"aborted", [], ts)], base_offset=3, producer_id=7, producer_epoch=0, transactional=True
    )
    marker = records.build_control_batch(
        commit=False, base_offset=4, producer_id=7, producer_epoch=0, coordinator_epoch=0, timestamp_ms=ts
    )
    committed = records.build_batch(
        [(None, b"committed", [], ts)], base_offset=5, producer_id=8, producer_epoch=0, transactional=True
    )
    data = plain + aborted + marker + committed
    msgs, nxt = decode_batches("t", 0, data, 1, [(7, 3)], leader=1)
    assert [m.value for m in msgs] == [b"p1", b"p2", b"committed"]
    assert [m.offset for m in msgs] == [1, 2, 5]
    assert nxt == 6
    # read_uncommitted (no aborted list): everything but the marker.
    msgs, _ = decode_batches("t", 0, data, 0, [], leader=1)
    assert [m.value for m in msgs] == [b"p0", b"p1", b"p2", b"aborted", b"committed"]
    # A truncated last batch is left for the next fetch.
    msgs, nxt = decode_batches("t", 0, data[:-5], 0, [], leader=1)
    assert nxt == 5 and msgs[-1].value == b"aborted"


# ------------------------------------------------------------------------------------------ commands


def kafkite(*args: str, input: bytes | None = None, timeout: float = 60, check: bool = True) -> bytes:
    """Run ``kafkite ARGS`` in this process with stdin/stdout swapped for buffers; its stdout."""
    from kafkite.cli import main

    stdin, stdout = sys.stdin, sys.stdout
    out = io.BytesIO()
    sys.stdin = io.TextIOWrapper(io.BytesIO(input or b""))
    sys.stdout = wrapper = io.TextIOWrapper(out, write_through=True)
    try:
        rc = main(list(args))
    finally:
        wrapper.flush()
        wrapper.detach()  # keep ``out`` open
        sys.stdin, sys.stdout = stdin, stdout
    if check:
        assert rc == 0, f"kafkite {' '.join(args)}: rc {rc}"
    return out.getvalue()


def kafkite_process(
    *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """The real ``python -m kafkite.cli`` as a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "kafkite.cli", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env,
    )


def targets() -> list[object]:
    return [
        "kafkite",
        pytest.param(
            "other",
            marks=[
                pytest.mark.skipif(not OTHER, reason="set KAFKITE_OTHER_BOOTSTRAP to test a second broker"),
                pytest.mark.opt_in,
            ],
        ),
    ]


@pytest.fixture(params=targets())
def bootstrap(request: pytest.FixtureRequest) -> str:
    if request.param == "other":
        return OTHER
    b: BrokerProcess = request.getfixturevalue("shared_broker")
    return b.bootstrap


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_topic_create_list_describe_alter_delete(bootstrap: str) -> None:
    name = unique("cli-topic")
    assert kafkite("topic", "-b", bootstrap, "create", name, "-p", "2", "-c", "retention.ms=3600000") == (
        f"created: {name}\n".encode()
    )
    assert b"exists" in kafkite("topic", "-b", bootstrap, "create", name, "--if-not-exists")
    assert kafkite("topic", "-b", bootstrap, "create", name, check=False) == b""
    listed = json.loads(kafkite("topic", "-b", bootstrap, "--json", "list"))
    assert {"topic": name, "partitions": 2, "internal": False} in listed
    d = json.loads(kafkite("topic", "describe", name, "-b", bootstrap, "--json"))
    assert [p["partition"] for p in d["partitions"]] == [0, 1]
    assert {c["name"]: c["value"] for c in d["configs"]}["retention.ms"] == "3600000"
    text = kafkite("topic", "-b", bootstrap, "describe", name).decode()
    assert "retention.ms=3600000" in text and "END-OFFSET" in text
    kafkite("topic", "-b", bootstrap, "alter", name, "-c", "retention.ms=7200000", "-p", "3")
    d = json.loads(kafkite("topic", "-b", bootstrap, "--json", "describe", name))
    assert len(d["partitions"]) == 3
    assert {c["name"]: c["value"] for c in d["configs"]}["retention.ms"] == "7200000"
    kafkite("topic", "-b", bootstrap, "alter", name, "--delete-config", "retention.ms")
    d = json.loads(kafkite("topic", "-b", bootstrap, "--json", "describe", name))
    assert next(c for c in d["configs"] if c["name"] == "retention.ms")["default"]
    assert kafkite("topic", "-b", bootstrap, "delete", name) == f"deleted: {name}\n".encode()
    kafkite("topic", "-b", bootstrap, "delete", name, "--if-exists")
    assert kafkite("topic", "-b", bootstrap, "delete", name, check=False) == b""
    deadline = time.monotonic() + 10
    while name in [t["topic"] for t in json.loads(kafkite("topic", "-b", bootstrap, "--json", "list"))]:
        assert time.monotonic() < deadline, "topic still listed after delete"
        time.sleep(0.2)


def test_produce_then_consume_round_trips_keys_headers_and_values(bootstrap: str) -> None:
    topic = unique("cli-rt")
    kafkite("topic", "-b", bootstrap, "create", topic, "-p", "3")
    lines = [f"key-{i}:value {i} with spaces: and colons".encode() for i in range(50)]
    # The real commands, as child processes.
    produced = kafkite_process(
        "produce", "-b", bootstrap, "-t", topic, "-K", ":", "-H", "trace=abc", "-H", "n=1",
        input=b"\n".join(lines) + b"\n",
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    consumed = kafkite_process(
        "consume", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-f", r"%k|%h|%s|%p|%o\n"
    )
    assert consumed.returncode == 0, consumed.stderr
    out = consumed.stdout
    rows = [r.split(b"|") for r in out.splitlines()]
    assert len(rows) == 50
    got = {r[0]: (r[1], r[2]) for r in rows}
    for i in range(50):
        assert got[f"key-{i}".encode()] == (b"trace=abc,n=1", f"value {i} with spaces: and colons".encode())
    # The same key always lands in the same partition, and offsets are dense per partition.
    per_part: dict[bytes, list[int]] = {}
    for r in rows:
        per_part.setdefault(r[3], []).append(int(r[4]))
    for offsets in per_part.values():
        assert offsets == list(range(len(offsets)))
    # kcat's default formats: -K prints key DELIM value.
    out = kafkite("consume", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-K", "=", "-p", "0")
    assert all(b"=" in line for line in out.splitlines())


def test_json_round_trip_through_files_with_binary_and_nulls(bootstrap: str, tmp_path: Path) -> None:
    topic = unique("cli-json")
    kafkite("topic", "-b", bootstrap, "create", topic, "-p", "2")
    src = tmp_path / "in.jsonl"
    messages = [
        {"key": "k0", "value": "plain", "headers": {"h": "1"}, "partition": 1},
        {"key": None, "value": base64.b64encode(b"\x00\xff\xfe").decode(), "value_encoding": "base64"},
        {"key": "k2", "value": None, "partition": 0},
        {
            "key": "k3",
            "payload": "\u00e9t\u00e9 \u2603",
            "headers": ["a", "x", "a", "y"],
            "timestamp": 1234567890,
        },
    ]
    src.write_text("\n".join(json.dumps(m) for m in messages) + "\n")
    kafkite("produce", "-b", bootstrap, "-t", topic, "--json", "-p", "1", str(src))
    dst = tmp_path / "out.jsonl"
    kafkite("consume", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "--json", "--output", str(dst))
    got = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [g["partition"] for g in got] == [1, 1, 1, 1]  # -p overrides the messages' partitions
    assert [g["offset"] for g in got] == [0, 1, 2, 3]
    assert got[0]["key"] == "k0" and got[0]["payload"] == "plain" and got[0]["headers"] == ["h", "1"]
    assert got[1]["key"] is None and base64.b64decode(got[1]["payload"]) == b"\x00\xff\xfe"
    assert got[1]["payload_encoding"] == "base64"
    assert got[2]["payload"] is None
    assert got[3]["payload"] == "\u00e9t\u00e9 \u2603" and got[3]["headers"] == ["a", "x", "a", "y"]
    assert got[3]["ts"] == 1234567890
    # What consume --json writes, produce --json reads: copy the topic.
    copy = unique("cli-json-copy")
    kafkite("topic", "-b", bootstrap, "create", copy, "-p", "2")
    kafkite("produce", "-b", bootstrap, "-t", copy, "--json", str(dst))
    again = tmp_path / "again.jsonl"
    kafkite("consume", "-b", bootstrap, "-t", copy, "-o", "beginning", "-e", "-J", "--output", str(again))
    strip = [{k: v for k, v in json.loads(x).items() if k != "topic"} for x in again.read_text().splitlines()]
    assert strip == [{k: v for k, v in g.items() if k != "topic"} for g in got]


def test_consume_offsets_counts_and_partitions(bootstrap: str) -> None:
    topic = unique("cli-offsets")
    kafkite("topic", "-b", bootstrap, "create", topic, "-p", "2")
    kafkite(
        "produce", "-b", bootstrap, "-t", topic, "-p", "0", input=b"".join(b"m%d\n" % i for i in range(10))
    )
    time.sleep(0.05)
    mid = int(time.time() * 1000)
    time.sleep(0.05)
    kafkite("produce", "-b", bootstrap, "-t", topic, "-p", "0", input=b"late1\nlate2\n")
    kafkite("produce", "-b", bootstrap, "-t", topic, "-p", "1", input=b"other\n")

    def consume(*extra: str) -> list[bytes]:
        return kafkite("consume", "-b", bootstrap, "-t", topic, *extra).splitlines()

    assert consume("-p", "0", "-o", "-2", "-e") == [b"late1", b"late2"]
    assert consume("-p", "0", "-o", "8", "-e") == [b"m8", b"m9", b"late1", b"late2"]
    assert consume("-p", "0", "-o", f"s@{mid}", "-e") == [b"late1", b"late2"]
    assert consume("-p", "0", "-o", "beginning", "-o", f"e@{mid}", "-e") == [b"m%d" % i for i in range(10)]
    assert consume("-p", "0", "-o", "beginning", "-c", "3") == [b"m0", b"m1", b"m2"]
    assert consume("-p", "1", "-o", "beginning", "-e") == [b"other"]
    assert sorted(consume("-o", "beginning", "-e")) == sorted(
        [b"m%d" % i for i in range(10)] + [b"late1", b"late2", b"other"]
    )
    assert consume("-p", "0", "-o", "end", "-e") == []
    assert consume("-p", "1", "-e") == [b"other"]  # from the beginning by default, as kcat
    # Without -e, consume waits for new messages (from offset 1, the end, whenever it starts): -c ends it.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kafkite.cli",
            "consume",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-p",
            "1",
            "-o",
            "end",
            "-c",
            "1",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        time.sleep(1.5)
        kafkite("produce", "-b", bootstrap, "-t", topic, "-p", "1", input=b"fresh\n")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out == b"fresh\n"


def test_errors_are_reported_not_raised(bootstrap: str) -> None:
    missing = unique("cli-missing")
    for args in (
        ["consume", "-t", missing, "-e"],
        ["produce", "-t", missing, "-p", "0"],
        ["topic", "describe", missing],
    ):
        proc = kafkite_process(args[0], "-b", bootstrap, *args[1:], input=b"x\n")
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.startswith(f"kafkite {args[0]}: ".encode()), proc.stderr
        assert b"Traceback" not in proc.stderr


def test_same_output_as_kcat_for_the_same_format(shared_broker: BrokerProcess, kcat: str) -> None:
    """kcat produces, then kcat and kafkite consume with the same -f format and -K defaults: same bytes."""
    bootstrap = shared_broker.bootstrap
    topic = unique("cli-kcat")
    kafkite("topic", "-b", bootstrap, "create", topic, "-p", "1")
    data = b"".join(b"k%d;value number %d\n" % (i, i) for i in range(20)) + b";no key\n"
    subprocess.run(
        [kcat, "-b", bootstrap, "-P", "-t", topic, "-p", "0", "-K", ";", "-H", "h1=v1", "-H", "h2=v2"],
        input=data,
        check=True,
        timeout=60,
    )
    for args in (
        ["-f", r"%t %p %o %T [%k] %K <%h> %s %S\n"],
        ["-K", "="],
        [],
        ["-f", "%s|", "-o", "-3"],
    ):
        extra = args if "-o" in args else [*args, "-o", "beginning"]
        want = subprocess.run(
            [kcat, "-b", bootstrap, "-C", "-t", topic, "-e", "-q", *extra],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        got = kafkite("consume", "-b", bootstrap, "-t", topic, "-e", *extra)
        assert got == want, (args, got[:200], want[:200])
    # And kafkite's produce is read back by kcat the same way.
    kafkite("produce", "-b", bootstrap, "-t", topic, "-K", ";", "-H", "a=b", input=b"kk;from kafkite\n")
    out = subprocess.run(
        [kcat, "-b", bootstrap, "-C", "-t", topic, "-e", "-q", "-o", "-1", "-f", "%k|%h|%s"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert out == b"kk|a=b|from kafkite"
