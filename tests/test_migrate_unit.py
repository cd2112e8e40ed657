"""Unit tests of the migration pieces with no network: offset maps, records, plans, SCRAM, settings."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from pathlib import Path

import pytest

from kafkite.client import ClientSecurity
from kafkite.migrate import limits
from kafkite.migrate.mirror import (
    Checkpoint,
    MirrorError,
    Pacer,
    PartitionState,
    chunk,
    committed_records,
    digest_record,
    parse_rate,
)
from kafkite.migrate.pipeline import Feed, Piece, committed_batches
from kafkite.migrate.plan import (
    load_plan,
    make_plan,
    map_retention,
    partitions_for,
    render_markdown,
    write_plan,
)
from kafkite.migrate.progress import Progress
from kafkite.migrate.sinks import plain_batch
from kafkite.migrate.state import fold_sync, sync_record, translate_spread
from kafkite.migrate.survey import (
    GroupInfo,
    Inventory,
    PartitionInfo,
    Sample,
    TopicInfo,
    sample_batches,
    select_topics,
)
from kafkite.protocol import records
from kafkite.security.scram import ScramClient, ScramError

MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------- offset map


def test_offset_map_runs_and_translation() -> None:
    st = PartitionState("t", 0, start_source=10, next_source=10, first_target=100, next_target=100)
    st.record([10, 11, 12], 100)
    st.record([13, 14], 103)
    assert st.runs == [[10, 100, 5]]
    # A gap in the source (compaction, a transaction marker at 15): a new run.
    st.record([16, 17, 20], 105)
    assert st.runs == [[10, 100, 5], [16, 105, 2], [20, 107, 1]]
    assert (st.next_source, st.next_target, st.copied) == (21, 108, 8)
    assert st.translate(5) == 100  # before the mirrored range: our first record
    assert st.translate(10) == 100
    assert st.translate(12) == 102
    assert st.translate(15) == 105  # a gap resumes at the next copied record
    assert st.translate(17) == 106
    assert st.translate(18) == 107
    assert st.translate(20) == 107
    assert st.translate(21) == 108  # everything copied: the target's next offset
    assert st.translate(22) is None  # not copied yet


def test_checkpoint_roundtrip_and_ownership(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    cp = Checkpoint.load(path, "a:1", "b:2")
    st = PartitionState("t", 3, 0, 0, 7, 7)
    st.record([0, 1], 7)
    cp.partitions[st.key] = st
    cp.save()
    again = Checkpoint.load(path, "a:1", "b:2")
    assert again.partitions["t/3"] == st
    with pytest.raises(MirrorError, match="belongs to a mirror"):
        Checkpoint.load(path, "a:1", "c:3")
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------- records


def _rec(
    i: int, ts: int = 1_700_000_000_000
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]:
    return (f"k{i}".encode(), f"v{i}".encode(), [("h", str(i).encode())], ts + i)


def test_committed_records_skip_aborted_and_markers() -> None:
    committed = records.build_batch([_rec(0), _rec(1)], base_offset=0)
    aborted = records.build_batch(
        [_rec(2), _rec(3)], base_offset=2, producer_id=7, producer_epoch=0, transactional=True
    )
    abort_marker = records.build_control_batch(
        commit=False, producer_id=7, producer_epoch=0, coordinator_epoch=0, timestamp_ms=1, base_offset=4
    )
    txn_ok = records.build_batch(
        [_rec(5)], base_offset=5, producer_id=8, producer_epoch=0, transactional=True
    )
    commit_marker = records.build_control_batch(
        commit=True, producer_id=8, producer_epoch=0, coordinator_epoch=0, timestamp_ms=1, base_offset=6
    )
    later = records.build_batch([_rec(7)], base_offset=7, producer_id=7, producer_epoch=0, transactional=True)
    buf = committed + aborted + abort_marker + txn_ok + commit_marker + later
    recs, nxt, codec = committed_records(buf, 0, [(7, 2)])
    # Producer 7's second transaction (offset 7) is not aborted: the abort marker at 4 ended the first.
    assert [r.offset for r in recs] == [0, 1, 5, 7]
    assert nxt == 8 and codec == 0
    recs, nxt, _ = committed_records(buf, 1, [])
    assert [r.offset for r in recs] == [1, 2, 3, 5, 7]
    # A truncated tail is left for the next fetch.
    recs, nxt, _ = committed_records(committed + aborted[:-3], 0, [])
    assert nxt == 2 and len(recs) == 2


def test_chunk_and_digest() -> None:
    small = [records.Record(i, 1, b"k", b"x" * 100, []) for i in range(10)]
    big = records.Record(10, 1, None, b"y" * 5000, [])
    parts = list(chunk([*small, big, *small], 1000))
    assert [len(p) for p in parts] == [8, 2, 1, 8, 2]
    assert sum(len(p) for p in parts) == 21

    def h(*recs: records.Record) -> str:
        d = hashlib.sha256()
        for r in recs:
            digest_record(d, r)
        return d.hexdigest()

    a = records.Record(0, 5, b"k", b"v", [("a", b"1")])
    assert h(a) == h(a._replace(offset=99))  # offsets are not part of what is compared
    for changed in (
        a._replace(timestamp=6),
        a._replace(key=None),
        a._replace(key=b""),
        a._replace(value=None),
        a._replace(headers=[("a", None)]),
        a._replace(headers=[]),
        a._replace(key=b"kv", value=b""),
    ):
        assert h(changed) != h(a)


def test_pacer_holds_the_rate() -> None:
    async def run() -> float:
        pacer = Pacer(100_000)
        t0 = time.monotonic()
        for _ in range(30):
            await pacer.take(10_000)  # 300 KB at 100 KB/s with 100 KB of burst: about 2 s
        return time.monotonic() - t0

    elapsed = asyncio.run(run())
    assert 1.7 < elapsed < 3.0

    async def bounded() -> float:
        pacer = Pacer(1000, until=time.monotonic() + 0.3)
        t0 = time.monotonic()
        await pacer.take(1_000_000)  # would take 1000 s: pacing stops at the deadline
        await pacer.take(1_000_000)
        return time.monotonic() - t0

    assert asyncio.run(bounded()) < 0.6


def test_parse_rate() -> None:
    assert parse_rate("3MB") == 3 * MB
    assert parse_rate("512kb/s") == 512 * 1024
    assert parse_rate("1000") == 1000.0


# ---------------------------------------------------------------------------------------------- survey


def test_select_topics() -> None:
    names = ["a", "b1", "b2", "__consumer_offsets", "__pool.x.y", "internal"]
    assert select_topics(names, None, {"internal"}) == ["a", "b1", "b2"]
    assert select_topics(names, ["b*"], set()) == ["b1", "b2"]
    assert select_topics(names, ["*"], set()) == ["a", "b1", "b2", "internal"]
    assert select_topics(names, ["__consumer_offsets", "a"], set()) == ["__consumer_offsets", "a"]


def test_sample_batches_sizes_and_producers() -> None:
    plain = records.build_batch([(b"k", b"x" * 1000, [], 1)], base_offset=0)
    idem = records.build_batch(
        [(None, b"y" * 10, [("h", b"zz")], 1)] * 3,
        base_offset=1,
        producer_id=5,
        producer_epoch=0,
        base_sequence=0,
    )
    txn = records.build_batch(
        [(b"a", b"b", [], 1)], base_offset=4, producer_id=6, producer_epoch=0, transactional=True
    )
    marker = records.build_control_batch(
        commit=True, producer_id=6, producer_epoch=0, coordinator_epoch=0, timestamp_ms=1, base_offset=5
    )
    s = Sample()
    pids: set[int] = set()
    nxt = sample_batches(plain + idem + txn + marker, 0, s, pids)
    assert nxt == 6
    assert s.records == 5 and s.batches == 4
    assert s.max_record_bytes == 1001
    assert s.record_bytes == 1001 + 3 * 13 + 2
    assert s.idempotent_batches == 1 and s.transactional_batches == 2 and s.control_batches == 1
    assert s.transactional_producer_ids == [6] and pids == {5, 6}


# ---------------------------------------------------------------------------------------------- plan


def test_retention_and_partition_math() -> None:
    assert map_retention(12 * 24 * 3_600_000) == (168, "reduced")
    assert map_retention(-1) == (168, "infinite")
    assert map_retention(3_600_000) == (24, "increased")
    assert map_retention(48 * 3_600_000) == (48, None)
    assert map_retention(48 * 3_600_000 + 1) == (49, None)
    assert partitions_for(0, MB, 1.0) == 1
    assert partitions_for(3 * MB, MB, 1.0) == 3
    assert partitions_for(2.9 * MB, MB, 1.0) == 3
    assert partitions_for(3.1 * MB, MB, 1.0) == 4
    assert partitions_for(2 * MB, MB, 1.5) == 3
    assert partitions_for(5 * MB, 2 * MB, 1.0) == 3


def _topic(
    name: str, parts: int = 1, configs: dict[str, str | None] | None = None, **sample: int
) -> TopicInfo:
    ps = [PartitionInfo(i, 0, 100) for i in range(parts)]
    for p in ps:
        p.sample = Sample(records=10, batches=1, batch_bytes=1000, record_bytes=900, max_record_bytes=90)
        for k, v in sample.items():
            setattr(p.sample, k, v)
    return TopicInfo(name, ps, {"cleanup.policy": "delete", "retention.ms": "604800000", **(configs or {})})


def _inventory() -> Inventory:
    fast = _topic("fast")
    fast.partitions[0].write_bytes_per_sec = 2.8 * MB
    fast.partitions[0].write_msgs_per_sec = 28.0
    topics = [
        _topic("compacted", configs={"cleanup.policy": "compact"}),
        _topic("big", configs={"max.message.bytes": str(3 * MB)}, max_record_bytes=2 * MB),
        _topic("longlived", 2, configs={"retention.ms": str(12 * 24 * 3_600_000)}),
        _topic("popular", 3),
        _topic("txn", transactional_batches=2, transactional_producer_ids=[42]),
        _topic("idem", idempotent_batches=1),
        fast,
    ]
    groups = [
        GroupInfo(f"g{i:02d}", "Empty", "consumer", 0, {"popular": {0: 5, 1: 5, 2: 5}}, {"popular": 285}, {})
        for i in range(60)
    ]
    groups.append(
        GroupInfo("reader", "Stable", "consumer", 1, {"fast": {0: 50}}, {"fast": 50}, {"fast": 20.0})
    )
    fast.partitions[0].read_bytes_per_sec = 2000.0
    return Inventory("src:9092", "cluster-1", 0, 3.0, topics, groups)


def test_plan_names_every_blocker() -> None:
    plan = make_plan(_inventory())
    by_code: dict[str, set[str]] = {}
    for f in plan["findings"]:
        by_code.setdefault(f["code"], set()).add(f["topic"])
        assert f["fix"] and f["message"]
    assert by_code["COMPACTED_TOPIC"] == {"compacted"}
    assert by_code["MESSAGE_TOO_LARGE"] == {"big"}
    assert by_code["RETENTION_REDUCED"] == {"longlived"}
    assert by_code["TOO_MANY_GROUPS"] == {"popular"}
    assert by_code["TRANSACTIONS"] == {"txn"}
    assert by_code["IDEMPOTENT_PRODUCER"] == {"idem"}
    assert by_code["PARTITIONS_FOR_THROUGHPUT"] == {"fast"}
    assert by_code["HOT_PARTITION"] == {"fast"}
    assert len(by_code["PARTITIONS_FIXED"]) == 7
    sev = {(f["code"], f["topic"]): f["severity"] for f in plan["findings"]}
    for code, topic in [
        ("COMPACTED_TOPIC", "compacted"),
        ("MESSAGE_TOO_LARGE", "big"),
        ("TOO_MANY_GROUPS", "popular"),
        ("TRANSACTIONS", "txn"),
    ]:
        assert sev[(code, topic)] == "blocker"
    assert plan["summary"]["blocker"] == 4
    streams = {s["name"]: s for s in plan["streams"]}
    assert streams["fast"]["partitions"] == 3 and streams["fast"]["partitions_required"] == 3
    assert streams["longlived"]["retention_hours"] == 168 and streams["longlived"]["partitions"] == 2
    assert streams["popular"]["groups"] == 60
    assert streams["compacted"]["cleanup_policy"] == "compact"
    assert plan["pools"][0]["name"] == "migrated-cluster-1"
    assert sorted(plan["pools"][0]["streams"]) == sorted(streams)
    assert plan["limits"]["write_bytes_per_sec_per_partition"] == limits.WRITE_BYTES_PER_SEC
    # Findings come most severe first.
    order = ["blocker", "high", "medium", "low", "info"]
    ranks = [order.index(f["severity"]) for f in plan["findings"]]
    assert ranks == sorted(ranks)
    # A group reading more than 5 GetMessages of 10,000 messages per second per partition needs more.
    inv = _inventory()
    inv.groups[-1].read_msgs_per_sec["fast"] = 120_000.0
    fast = {s["name"]: s for s in make_plan(inv)["streams"]}["fast"]
    assert fast["partitions_for_get_messages"] == 3 and fast["partitions_for_write"] == 3
    inv.groups[-1].read_msgs_per_sec["fast"] = 160_000.0
    assert {s["name"]: s for s in make_plan(inv)["streams"]}["fast"]["partitions"] == 4
    # Headroom grows the partition count.
    assert {s["name"]: s for s in make_plan(_inventory(), headroom=2.0)["streams"]}["fast"]["partitions"] == 6


def test_plan_markdown_and_json(tmp_path: Path) -> None:
    plan = make_plan(_inventory(), pool="orders")
    js, md = write_plan(plan, tmp_path / "out" / "plan")
    assert js.name == "plan.json" and md.name == "plan.md"
    assert load_plan(js) == json.loads(js.read_text())
    text = md.read_text()
    assert text == render_markdown(plan)
    for needle in ("COMPACTED_TOPIC", "TOO_MANY_GROUPS", "| fast | orders | 3 (1) | 3 |", "**4 blocker(s)**"):
        assert needle in text
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a kafkite migration plan"):
        load_plan(tmp_path / "other.json")


# ---------------------------------------------------------------------------------------------- client bits


def test_scram_sha256_rfc7677_vector() -> None:
    c = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert c.final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert not c.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(ScramError, match="server refused"):
        c.verify(b"e=invalid-proof")
    with pytest.raises(ScramError, match="bad server-first"):
        ScramClient("SCRAM-SHA-512", "u", "p", nonce="abc").final(b"r=zzz,s=c2FsdA==,i=4096")
    with pytest.raises(ScramError, match="server refused"):
        ScramClient("SCRAM-SHA-512", "u", "p", nonce="abc").final(b"e=unknown-user")
    assert ScramClient("SCRAM-SHA-512", "a=b,c", "p", nonce="n").first() == b"n,,n=a=3Db=2Cc,r=n"


def test_client_security_from_properties(tmp_path: Path) -> None:
    assert ClientSecurity.from_properties({}).protocol == "PLAINTEXT"
    s = ClientSecurity.from_properties(
        {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
            'username="alice" password="s3cr\\"t";',
        }
    )
    assert (s.protocol, s.sasl_mechanism, s.username, s.password) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "alice",
        's3cr"t',
    )
    assert s.uses_sasl and not s.uses_tls and s.ssl_context is None
    t = ClientSecurity.from_properties(
        {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "", "client.id": "x"}
    )
    assert t.uses_tls and t.ssl_context is not None and not t.ssl_context.check_hostname
    for bad in (
        {"security.protocol": "TLS"},
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "sasl.username": "u"},
        {"security.protocol": "SASL_PLAINTEXT"},
    ):
        with pytest.raises(ValueError):
            ClientSecurity.from_properties(bad)
    with pytest.raises(OSError):
        ClientSecurity.from_properties(
            {"security.protocol": "SSL", "ssl.ca.location": str(tmp_path / "none.pem")}
        )


def test_progress_bar_lines() -> None:
    out = io.StringIO()
    bar = Progress("copy", 200, stream=out, interval=0)
    bar.update(50, "50 records")
    bar.update(200, "200 records")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "copy [#######                       ]  25.0% 50 records"
    assert lines[-1].startswith("copy [##############################] 100.0% 200 records")
    silent = io.StringIO()
    Progress("x", 1, stream=silent, enabled=False).update(1, force=True)
    assert silent.getvalue() == ""


# ---------------------------------------------------------------------------------------------- live mirror


def test_feed_sends_whole_batches_or_rebatches_small_ones() -> None:
    big = records.build_batch([_rec(i) for i in range(0, 40)], base_offset=0)
    smalls = [records.build_batch([_rec(i)], base_offset=i) for i in range(40, 44)]
    buf = big + b"".join(smalls)
    batches, nxt = committed_batches(buf, 0, [])
    assert nxt == 44
    feed = Feed("t", 0, 0)
    feed.push([Piece(buf[pos : pos + h.size], h, 0) for pos, h in batches], nxt + 2)  # markers after
    out, adv = feed.take(len(big) * 2, verbatim_ok=True)
    assert adv is None and out is not None and out.verbatim is not None
    assert (out.first_source, out.count, out.end_source) == (0, 40, 40)
    out, adv = feed.take(len(big) * 2, verbatim_ok=True)
    assert out is not None and out.verbatim is None  # several small batches: one batch of their records
    assert [r.offset for r in out.recs] == [40, 41, 42, 43] and out.end_source == 46
    assert feed.take(100, verbatim_ok=True) == (None, None)
    # A fetch starting inside a batch, and a size limit that splits the records.
    feed = Feed("t", 0, 5)
    h = records.read_header(big)
    feed.push([Piece(big, h, 5)], 40)
    out, _ = feed.take(3 * 60, verbatim_ok=True)
    assert out is not None and out.verbatim is None and out.recs[0].offset == 5
    rest, _ = feed.take(10_000, verbatim_ok=True)
    assert rest is not None and rest.recs[0].offset == out.recs[-1].offset + 1 and rest.end_source == 40
    # Only an advance: nothing to write, the position moves.
    feed.push([], 50)
    assert feed.take(100, verbatim_ok=True) == (None, 50)


def test_plain_batch_clears_producer_fields() -> None:
    src = records.build_batch([_rec(1)], producer_id=5, producer_epoch=1, base_sequence=3, transactional=True)
    out = plain_batch(src)
    h = records.read_header(out)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.is_transactional) == (-1, -1, -1, False)
    assert records.check_crc(out, 0, h)
    assert [r.value for r in records.iter_records(out)] == [b"v1"]
    plain = records.build_batch([_rec(1)])
    assert plain_batch(plain) is plain


def test_offset_syncs_fold_back_exactly() -> None:
    st = PartitionState("t", 2, start_source=10, next_source=10, first_target=50, next_target=50)
    st.record_range(10, 5, 50)
    st.record_range(15, 3, 56)  # a transaction marker at 55 on the target
    st.record([20, 21], 60)  # a gap on the source (18, 19)
    key, value = sync_record(st, [[10, 50, 5]])
    states: dict[str, PartitionState] = {}
    fold_sync(states, value)
    fold_sync(states, sync_record(st, [[15, 56, 3], [20, 60, 2]])[1])
    got = states["t/2"]
    assert key == b"t/2"
    assert got.runs == st.runs == [[10, 50, 5], [15, 56, 3], [20, 60, 2]]
    assert (got.next_source, got.next_target, got.copied) == (22, 62, 10)
    assert [got.translate(o) for o in (10, 14, 15, 18, 20, 22)] == [50, 54, 56, 60, 60, 62]


def test_translation_when_the_target_places_records_by_key() -> None:
    a = PartitionState("t", 0, 0, 0, 0, 0)
    b = PartitionState("t", 1, 0, 0, 0, 0)
    a.record_spread([0, 1, 2, 3], [(0, 0), (0, 1), (1, 0), (0, 2)])
    b.record_spread([0, 1], [(1, 1), (1, 2)])
    # The group consumed a up to 2 (0 and 1 done) and b up to 1 (0 done).
    got = translate_spread([a, b], {0: 2, 1: 1}, {0: 3, 1: 3})
    # Partition 0 holds a0 a1 (done) then a3: resume at 2, exactly. Partition 1 holds a2 (not done), b0
    # (done), b1: no exact offset; the earliest unconsumed one (0) loses nothing.
    assert got == {0: (2, True), 1: (0, False)}
    assert translate_spread([a, b], {0: 4, 1: 2}, {0: 3, 1: 3}) == {0: (3, True), 1: (3, True)}
    assert translate_spread([a, b], {}, {0: 3, 1: 3}) == {0: (0, True), 1: (0, True)}


def test_config_changes_mapped_through_the_plan() -> None:
    from kafkite.migrate.mirror import Mirror, MirrorOptions

    plan = {"limits": limits.as_dict(), "streams": []}
    m = Mirror.__new__(Mirror)
    m.opts = MirrorOptions(plan=plan)
    mapped, notes = Mirror.map_configs(
        m, "t", {"retention.ms": "1000", "cleanup.policy": "compact", "max.message.bytes": str(8 * MB)}
    )
    assert mapped == {"retention.ms": str(24 * 3_600_000), "max.message.bytes": str(MB)}
    assert any("compaction" in n for n in notes) and any("capped" in n for n in notes)
    m.opts = MirrorOptions()
    assert Mirror.map_configs(m, "t", {"retention.ms": "1000", "segment.bytes": "1"}) == (
        {"retention.ms": "1000"},
        [],
    )


def test_percentile_of_histogram() -> None:
    from kafkite.migrate.telemetry import parse_listener, percentile

    cum = [(0.01, 50), (0.1, 98), (1.0, 100), (float("inf"), 100)]
    assert percentile(cum, 100, 0.5) == 0.01 and percentile(cum, 100, 0.99) == 1.0
    assert percentile([], 0, 0.99) is None
    assert parse_listener("http://0.0.0.0:9750/") == ("0.0.0.0", 9750)
    with pytest.raises(ValueError):
        parse_listener("nowhere")


def test_cutover_report_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from kafkite.migrate import cutover

    res = {
        "group": "g",
        "mirror": "m",
        "source": "a:1",
        "target": "b:2",
        "delivery": {"mode": "exactly-once"},
        "switch_window_seconds": 1.5,
        "cutover_seconds": 0.5,
        "exact": True,
        "offsets": {"translated": {"t/0": [5, 7]}, "inexact": []},
        "instructions": {"lines": ["bootstrap.servers: a:1 -> b:2"]},
        "verification": [
            {
                "partition": "t/0",
                "source_records": 5,
                "target_records": 5,
                "source_sha256": "a" * 64,
                "target_sha256": "a" * 64,
                "equal": True,
            }
        ],
    }
    written = cutover.write_report(res, tmp_path / "r", with_plot=False)
    assert [p.name for p in written] == ["r.json", "r.md"]
    md = (tmp_path / "r.md").read_text()
    assert "| t/0 | 5 | 7 |" in md and "switch window: 1.5 s" in md and "bootstrap.servers" in md
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(cutover.PlotUnavailable, match=r"kafkite\[plot\]"):
        cutover.write_report(res, tmp_path / "r2")
