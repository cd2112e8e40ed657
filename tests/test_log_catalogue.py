"""Topic creation in the file engine: capacity checked before anything is made, creation atomic (the catalogue
file's partition count never names a partition whose directory does not exist; a creation is recorded as an
intent before any append to it is acknowledged, and one that a crash or a shutdown cut short is resumed when
the storage loads)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kafkite.log import FileStorage, InvalidPartitions, MemoryStorage, PartitionLog, Storage
from kafkite.protocol.records import build_batch

REPO = Path(__file__).resolve().parents[1]


def batch() -> bytearray:
    return bytearray(build_batch([(b"k", b"v", [], 1000)]))


def catalogue(root: Path) -> dict[str, int]:
    return {t["name"]: t["partitions"] for t in json.loads((root / "topics.json").read_text())["topics"]}


def intents(root: Path) -> dict[str, int]:
    topics = json.loads((root / "topics.json").read_text())["topics"]
    return {t["name"]: t["creating"] for t in topics if "creating" in t}


def partition_dirs(root: Path, topic: str) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{topic}-"))


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_capacity_is_checked_before_anything_is_created(tmp_path: Path, kind: str) -> None:
    s: Storage = (
        FileStorage(tmp_path, max_partitions=100) if kind == "file" else MemoryStorage(max_partitions=100)
    )
    s.load()
    s.create_topic("a", 60)
    with pytest.raises(InvalidPartitions, match=r"max\.broker\.partitions=100"):
        s.create_topic("b", 41)
    with pytest.raises(InvalidPartitions, match=r"max\.broker\.partitions=100"):
        s.create_partitions("a", 101)
    assert "b" not in s.topics() and s.topic("a").partitions == 60
    s.create_partitions("a", 100)
    s.settle()
    if kind == "file":
        assert catalogue(tmp_path) == {"a": 100} and len(partition_dirs(tmp_path, "a")) == 100
        assert partition_dirs(tmp_path, "b") == []
    s.close()


def test_creation_takes_effect_at_once_and_its_files_follow(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.create_topic("wide", 2000)
    assert s.topic("wide").partitions == 2000  # in memory at once, whatever the partition count
    s.partition("wide", 1999).append_sync(batch(), now_ms=1)  # files made first if the creation has not yet
    s.settle()
    assert catalogue(tmp_path) == {"wide": 2000}
    assert len(partition_dirs(tmp_path, "wide")) == 2000
    s.close()
    t = FileStorage(tmp_path)
    t.load()
    assert t.partition("wide", 1999).log_end_offset == 1
    t.close()


def test_a_failed_creation_removes_what_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.create_topic("keep", 1)
    s.settle()
    real = PartitionLog.materialize
    made: list[int] = []

    def materialize(self: PartitionLog) -> None:
        if len(made) == 700:
            raise OSError(28, "No space left on device")
        made.append(1)
        real(self)

    monkeypatch.setattr(PartitionLog, "materialize", materialize)
    s.create_topic("big", 1000)
    s.settle()
    assert "big" not in s.topics(), "a topic whose files could not be made is not served"
    assert catalogue(tmp_path) == {"keep": 1}
    assert partition_dirs(tmp_path, "big") == []
    s.partition("keep", 0).append_sync(batch(), now_ms=1)
    s.close()


def _crash_script(root: Path, code: str) -> str:
    return textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from kafkite.log import FileStorage
        from kafkite.protocol.records import build_batch
        root = Path({str(root)!r})
        s = FileStorage(root)
        s.load()
        """
    ) + textwrap.dedent(code)


@pytest.mark.parametrize("grow", [False, True])
def test_a_crash_half_way_through_a_creation_is_resumed_at_the_next_start(tmp_path: Path, grow: bool) -> None:
    """The process dies (os._exit, no clean-up) while the writer is making a topic's directories."""
    setup = _crash_script(
        tmp_path,
        """
        s.create_topic("keep", 1)
        s.create_topic("big", 3)
        s.settle()
        s.partition("big", 2).append_sync(bytearray(build_batch([(b"k", b"kept", [], 1)])), now_ms=1)
        s.close()
        """,
    )
    subprocess.run([sys.executable, "-c", setup], check=True, cwd=REPO)
    crash = _crash_script(
        tmp_path,
        f"""
        if {grow!r}:
            s.create_partitions("big", 1200)
        else:
            s.delete_topic("big")
            s.settle()
            s.create_topic("big", 1200)
        # an append to one of the new partitions, acknowledged before the crash
        s.partition("big", 1199).append_sync(bytearray(build_batch([(b"k", b"acked", [], 1)])), now_ms=1)
        deadline = time.monotonic() + 60
        while len([p for p in root.iterdir() if p.name.startswith("big-")]) < 400:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os._exit(1)
        """,
    )
    assert subprocess.run([sys.executable, "-c", crash], cwd=REPO).returncode == 1
    made = len(partition_dirs(tmp_path, "big"))
    assert 400 <= made < 1200, f"the crash came {made} directories into the creation"
    # The count names only what exists; the creation was recorded before the append was acknowledged.
    assert catalogue(tmp_path) == {"keep": 1, "big": 3 if grow else 0}
    assert intents(tmp_path) == {"big": 1200}
    s = FileStorage(tmp_path)
    s.load()
    assert s.topics()["big"].partitions == 1200  # served at once, the rest made in the background
    assert s.partition("big", 1199).read_sync(0, 1 << 20).to_bytes().endswith(b"acked\x00")
    kept = s.partition("big", 2).read_sync(0, 1 << 20).to_bytes()
    assert kept.endswith(b"kept\x00") if grow else kept == b""
    s.settle()
    assert catalogue(tmp_path) == {"keep": 1, "big": 1200} and intents(tmp_path) == {}
    assert len(partition_dirs(tmp_path, "big")) == 1200
    s.close()


def test_a_shutdown_during_a_creation_leaves_it_to_the_next_start(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.create_topic("big", 4000)
    s.close()  # at once: the writer stops making directories
    assert intents(tmp_path) == {"big": 4000}
    assert catalogue(tmp_path)["big"] <= len(partition_dirs(tmp_path, "big")) < 4000
    t = FileStorage(tmp_path)
    t.load()
    assert t.topics()["big"].partitions == 4000
    t.settle()
    assert catalogue(tmp_path) == {"big": 4000} and len(partition_dirs(tmp_path, "big")) == 4000
    t.close()
