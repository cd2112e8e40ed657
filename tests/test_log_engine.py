"""Storage engines (file and memory): the topic catalogue, partitions, configs; and the topic config table."""

from __future__ import annotations

import gc
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kafkite.log import (
    TOPIC_CONFIG_DEFAULTS,
    TOPIC_CONFIG_DOCS,
    TOPIC_CONFIG_TYPES,
    TOPIC_CONFIGS,
    FileStorage,
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    LogConfig,
    MemoryStorage,
    Partition,
    PartitionLog,
    Storage,
    TopicAlreadyExists,
    UnknownPartition,
    UnknownTopic,
    engine,
    validate_topic_configs,
)
from kafkite.protocol.records import build_batch, iter_headers


def batch(n: int = 1, ts: int = 1000) -> bytearray:
    return bytearray(build_batch([(b"k", b"value", [], ts + i) for i in range(n)]))


@pytest.fixture(params=["file", "memory"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path):
    def make(**kw: object) -> Storage:
        file = request.param == "file"
        storage: Storage = FileStorage(tmp_path / "data", **kw) if file else MemoryStorage(**kw)  # type: ignore[arg-type]
        storage.load()
        return storage

    make.kind = request.param  # type: ignore[attr-defined]
    return make


# -- catalogue, both engines ---------------------------------------------------------------------------------


def test_create_and_use_topics(make_storage) -> None:
    s = make_storage()
    meta = s.create_topic("orders", 3, {"retention.ms": "1000"})
    assert (meta.name, meta.partitions, meta.configs) == ("orders", 3, {"retention.ms": "1000"})
    assert isinstance(meta.topic_id, uuid.UUID) and meta.topic_id.int != 0
    assert dict(s.topics()) == {"orders": meta}
    assert s.topic_by_id(meta.topic_id) is meta
    for i in range(3):
        p = s.partition("orders", i)
        assert isinstance(p, Partition)
        assert p.config.retention_ms == 1000
        assert p.append_sync(batch(2), now_ms=1).first_offset == 0
    with pytest.raises(UnknownPartition):
        s.partition("orders", 3)
    with pytest.raises(UnknownTopic):
        s.partition("nope", 0)
    with pytest.raises(TopicAlreadyExists):
        s.create_topic("orders", 1, {})
    s.close()


def test_explicit_topic_id(make_storage) -> None:
    s = make_storage()
    tid = uuid.uuid4()
    assert s.create_topic("t", 1, {}, topic_id=tid).topic_id == tid
    s.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "has space", "slash/es", "ü"])
def test_invalid_topic_names(make_storage, name: str) -> None:
    s = make_storage()
    with pytest.raises(InvalidTopicName):
        s.create_topic(name, 1, {})
    assert not s.topics()
    s.close()


def test_valid_odd_topic_names(make_storage) -> None:
    s = make_storage()
    for name in ("a.b_c-d", "x-1", "1-2-3", "A" * 249):
        s.create_topic(name, 2, {})
    assert s.partition("x-1", 1) is not s.partition("1-2-3", 1)
    s.close()


def test_invalid_partitions_and_configs(make_storage) -> None:
    s = make_storage()
    with pytest.raises(InvalidPartitions):
        s.create_topic("t", 0, {})
    with pytest.raises(InvalidConfig, match=r"retention\.ms"):
        s.create_topic("t", 1, {"retention.ms": "soon"})
    with pytest.raises(InvalidConfig, match=r"no\.such\.config"):
        s.create_topic("t", 1, {"no.such.config": "1"})
    assert not s.topics()
    s.create_topic("t", 2, {})
    with pytest.raises(InvalidPartitions):
        s.create_partitions("t", 2)
    with pytest.raises(InvalidConfig, match=r"cleanup\.policy"):
        s.set_topic_configs("t", {"cleanup.policy": "shred"})
    with pytest.raises(UnknownTopic):
        s.create_partitions("u", 3)
    s.close()


def test_create_partitions_and_set_configs(make_storage) -> None:
    s = make_storage()
    s.create_topic("t", 1, {"segment.bytes": "100000"})
    s.partition("t", 0).append_sync(batch(), now_ms=1)
    meta = s.create_partitions("t", 4)
    assert meta.partitions == 4 and s.topics()["t"].partitions == 4
    assert s.partition("t", 3).log_end_offset == 0
    assert s.partition("t", 0).log_end_offset == 1
    assert s.partition("t", 3).config.segment_bytes == 100000
    s.set_topic_configs("t", {"message.timestamp.type": "LogAppendTime"})
    assert s.topics()["t"].configs == {"message.timestamp.type": "LogAppendTime"}
    for i in range(4):
        cfg = s.partition("t", i).config
        assert cfg.log_append_time and cfg.segment_bytes == 1 << 30
    assert s.partition("t", 2).append_sync(batch(), now_ms=77).log_append_time == 77
    s.close()


def test_default_config_merges_under_overrides(make_storage) -> None:
    s = make_storage(default_config={"retention.ms": "5000", "segment.bytes": "2048", "log.dirs": "ignored"})
    s.create_topic("a", 1, {})
    s.create_topic("b", 1, {"retention.ms": "7"})
    assert s.partition("a", 0).config.retention_ms == 5000
    assert s.partition("b", 0).config.retention_ms == 7
    assert s.partition("b", 0).config.segment_bytes == 2048
    assert s.topics()["a"].configs == {}, "broker defaults are not topic overrides"
    assert s.topic_config("b").retention_ms == 7
    s.close()


def test_bad_default_config_is_reported(make_storage) -> None:
    with pytest.raises(InvalidConfig, match=r"segment\.bytes"):
        make_storage(default_config={"segment.bytes": "big"})


def test_delete_topic(make_storage) -> None:
    s = make_storage()
    s.create_topic("t", 2, {})
    s.partition("t", 0).append_sync(batch(3), now_ms=1)
    s.delete_topic("t")
    assert "t" not in s.topics()
    with pytest.raises(UnknownTopic):
        s.partition("t", 0)
    with pytest.raises(UnknownTopic):
        s.delete_topic("t")
    s.create_topic("t", 1, {})
    assert s.partition("t", 0).log_end_offset == 0, "a re-created topic starts empty"
    s.apply_retention(10**15)
    s.close()


def test_retention_and_flush_across_partitions(make_storage) -> None:
    s = make_storage()
    s.create_topic("keep", 1, {"retention.ms": "-1", "segment.bytes": "200"})
    s.create_topic("drop", 2, {"retention.ms": "1000", "segment.bytes": "200"})
    for name, n in (("keep", 1), ("drop", 2)):
        for i in range(n):
            for _ in range(5):
                s.partition(name, i).append_sync(batch(1, ts=0), now_ms=1)
    s.flush_all()
    assert all(p.unflushed_messages == 0 for _, _, p in s.partitions())
    expected = sum(len(s.partition("drop", i).segments) for i in range(2))
    assert expected > 2
    deleted = s.apply_retention(10_000)
    assert deleted == expected
    assert s.partition("keep", 0).log_start_offset == 0
    assert s.partition("drop", 1).log_start_offset == 5
    s.close()


# -- file engine ---------------------------------------------------------------------------------------------


def test_catalogue_and_data_survive_reopen(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    a = s.create_topic("alpha", 2, {"retention.ms": "123"})
    s.create_topic("beta.x", 1, {})
    s.create_partitions("beta.x", 3)
    s.set_topic_configs("beta.x", {"cleanup.policy": "compact,delete"})
    s.partition("alpha", 1).append_sync(batch(4), now_ms=1)
    s.partition("beta.x", 2).append_sync(batch(2), now_ms=1)
    s.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".clean-shutdown",  # one for the whole directory
        "alpha-0",
        "alpha-1",
        "beta.x-0",
        "beta.x-1",
        "beta.x-2",
        "topics.json",
    ]
    t = FileStorage(tmp_path)
    t.load()
    assert t.topics()["alpha"] == a
    assert t.topics()["beta.x"].partitions == 3
    assert t.topics()["beta.x"].configs == {"cleanup.policy": "compact,delete"}
    assert t.partition("beta.x", 0).config.cleanup_policy == ("compact", "delete")
    assert t.partition("alpha", 1).log_end_offset == 4
    assert t.partition("alpha", 1).config.retention_ms == 123
    data = t.partition("beta.x", 2).read_sync(0, 1000).to_bytes()
    assert [h.last_offset for _, h in iter_headers(data)] == [1]
    t.close()


def test_loading_many_partitions_pauses_the_collector_and_freezes_their_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "FREEZE_PARTITIONS", 4)
    s = FileStorage(tmp_path)
    s.load()
    s.create_topic("alpha", 5)
    s.partition("alpha", 3).append_sync(batch(2), now_ms=1)
    s.settle()
    s.close()
    seen: list[bool] = []
    real = PartitionLog.__init__

    def spy(self: PartitionLog, *args: Any, **kwargs: Any) -> None:
        seen.append(gc.isenabled())
        real(self, *args, **kwargs)

    monkeypatch.setattr(PartitionLog, "__init__", spy)
    assert gc.isenabled()
    t = FileStorage(tmp_path)
    try:
        t.load()
        assert seen == [False] * 5  # no automatic collection while the logs were opened
        assert gc.isenabled() and gc.get_freeze_count() > 0  # on again; the logs out of its sight
        assert t.partition("alpha", 3).log_end_offset == 2
        t.close()
    finally:
        gc.unfreeze()
    # A load that fails leaves the collector on too.
    (tmp_path / "alpha-2").rename(tmp_path / "alpha-2.x")
    (tmp_path / "alpha-2").write_bytes(b"not a directory")
    u = FileStorage(tmp_path)
    with pytest.raises(OSError):
        u.load()
    assert gc.isenabled()


def test_deleted_topic_directories_are_removed(tmp_path: Path) -> None:
    s = FileStorage(tmp_path, default_config={"file.delete.delay.ms": "0"})
    s.load()
    s.create_topic("gone", 2, {})
    s.partition("gone", 0).append_sync(batch(), now_ms=1)
    s.delete_topic("gone")
    assert "gone" not in s.topics()  # at once; the files go on the writer
    s.settle()
    assert not (tmp_path / "gone-0").exists()
    assert json.loads((tmp_path / "topics.json").read_text())["topics"] == []
    s.close()


def test_stale_partition_directories_are_wiped(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.create_topic("t", 2, {})
    s.partition("t", 0).append_sync(batch(3), now_ms=1)
    s.close()
    # a crash after the catalogue dropped the topic but before its directories were removed
    (tmp_path / "topics.json").write_text(json.dumps({"version": 1, "topics": []}))
    (tmp_path / "unrelated-7").mkdir()
    t = FileStorage(tmp_path)
    t.load()
    assert not (tmp_path / "t-0").exists() and not (tmp_path / "t-1").exists()
    assert (tmp_path / "unrelated-7").exists(), "directories the engine did not create are left alone"
    t.create_topic("t", 1, {})
    assert t.partition("t", 0).log_end_offset == 0
    t.close()


def test_recreated_topic_never_sees_old_data(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.create_topic("t", 1, {})
    s.partition("t", 0).append_sync(batch(3), now_ms=1)
    s.close()
    catalogue = json.loads((tmp_path / "topics.json").read_text())
    catalogue["topics"][0]["topic_id"] = str(uuid.uuid4())  # a different topic by the same name
    (tmp_path / "topics.json").write_text(json.dumps(catalogue))
    t = FileStorage(tmp_path)
    t.load()
    assert t.partition("t", 0).log_end_offset == 0
    t.close()


def test_unreadable_catalogue_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "topics.json").write_text("{not json")
    s = FileStorage(tmp_path)
    with pytest.raises(Exception, match="catalogue"):
        s.load()


# -- topic config table --------------------------------------------------------------------------------------


def test_defaults_table_matches_log_config() -> None:
    assert LogConfig().to_props() == TOPIC_CONFIG_DEFAULTS
    assert LogConfig.from_props(TOPIC_CONFIG_DEFAULTS) == LogConfig()
    assert (
        set(TOPIC_CONFIG_DOCS) == set(TOPIC_CONFIG_TYPES) == set(TOPIC_CONFIGS) == set(TOPIC_CONFIG_DEFAULTS)
    )
    assert TOPIC_CONFIG_DEFAULTS["segment.bytes"] == "1073741824"
    assert TOPIC_CONFIG_DEFAULTS["retention.ms"] == "604800000"
    assert TOPIC_CONFIG_DEFAULTS["max.message.bytes"] == "1048588"
    assert TOPIC_CONFIG_DEFAULTS["flush.messages"] == str((1 << 63) - 1)
    assert TOPIC_CONFIGS["retention.ms"].type_code == 5  # LONG
    assert all(doc and "\n" not in doc for doc in TOPIC_CONFIG_DOCS.values())


def test_from_props_parses_kafka_names() -> None:
    c = LogConfig.from_props(
        {
            "segment.bytes": "4096",
            "retention.ms": "-1",
            "cleanup.policy": "compact, delete",
            "message.timestamp.type": "LogAppendTime",
            "preallocate": "TRUE",
            "min.cleanable.dirty.ratio": "0.25",
            "broker.only.key": "whatever",
        }
    )
    assert (c.segment_bytes, c.retention_ms, c.cleanup_policy) == (4096, -1, ("compact", "delete"))
    assert c.log_append_time and c.preallocate and c.min_cleanable_dirty_ratio == 0.25
    with pytest.raises(ValueError, match=r"broker\.only\.key"):
        LogConfig.from_props({"broker.only.key": "1"}, strict=True)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("segment.bytes", "1e9"),
        ("segment.bytes", "3000000000"),
        ("segment.bytes", "10"),
        ("retention.ms", "-2"),
        ("message.timestamp.type", "WallTime"),
        ("cleanup.policy", "shred"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("compression.gzip.level", "0"),
        ("leader.replication.throttled.replicas", "0-1"),
        ("preallocate", "yes"),
        ("compression.type", "brotli"),
        ("min.insync.replicas", "0"),
    ],
)
def test_bad_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        LogConfig.from_props({key: value})
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_topic_configs({key: value})
