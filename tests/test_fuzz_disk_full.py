"""A full disk: produce into a size-limited file system until appends fail with KAFKA_STORAGE_ERROR; nothing
acknowledged is lost or damaged, nothing refused appears, the broker keeps serving, and appends succeed again
once space returns (and after a restart).

The file system is a small tmpfs (root and a working ``mount`` needed), else a loop-mounted ext4 image, else
the test is skipped and says why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import BrokerProcess, RawClient

from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey

pytestmark = pytest.mark.timeout(180)

TOPIC = "full"
STORAGE_ERROR = 56


def _run(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class SmallDisk:
    """A size-limited directory that can be grown in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mountpoint = root / "disk"
        self.image = root / "disk.img"
        self.kind = ""

    def mount(self, megabytes: int) -> str | None:
        """Mount it; None on success, else why it cannot be done here."""
        if os.geteuid() != 0:
            return "mounting a size-limited file system needs root"
        if shutil.which("mount") is None:
            return "no mount command"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if _run("mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(self.mountpoint)):
            self.kind = "tmpfs"
            return None
        if (
            shutil.which("mkfs.ext4")
            and _run("truncate", "-s", f"{megabytes}M", str(self.image))
            and _run("mkfs.ext4", "-q", "-F", str(self.image))
            and _run("mount", "-o", "loop", str(self.image), str(self.mountpoint))
        ):
            self.kind = "loop"
            return None
        return "neither a tmpfs nor a loop-mounted file system could be mounted"

    def grow(self, megabytes: int) -> None:
        if self.kind == "tmpfs":
            assert _run("mount", "-o", f"remount,size={megabytes}m", str(self.mountpoint))
        else:
            assert _run("truncate", "-s", f"{megabytes}M", str(self.image))
            assert _run("resize2fs", _loop_device(self.mountpoint))

    def unmount(self) -> None:
        if self.kind:
            _run("umount", "-l", str(self.mountpoint))
            self.kind = ""


def _loop_device(mountpoint: Path) -> str:
    out = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mountpoint)], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path)
    why = disk.mount(4)
    if why is not None:
        pytest.skip(f"disk-full test skipped: {why}")
    try:
        yield disk
    finally:
        disk.unmount()


def _produce(c: RawClient, value: bytes) -> tuple[int, int]:
    batch = records.build_batch([(None, value, [], 0)])
    resp = c.request(
        ApiKey.PRODUCE,
        9,
        {
            "transactional_id": None,
            "acks": 1,
            "timeout_ms": 5000,
            "topic_data": [{"name": TOPIC, "partition_data": [{"index": 0, "records": batch}]}],
        },
    )
    p = resp["responses"][0]["partition_responses"][0]
    return p["error_code"], p["base_offset"]


def _read_all(bootstrap: str) -> list[tuple[int, bytes]]:
    """Every record of the topic as (offset, value), fetched in pieces and CRC-checked."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    with RawClient.to(bootstrap) as c:
        while True:
            resp = c.request(
                ApiKey.FETCH,
                12,
                {
                    "max_wait_ms": 0,
                    "min_bytes": 0,
                    "max_bytes": 1 << 20,
                    "isolation_level": 0,
                    "session_id": 0,
                    "topics": [
                        {
                            "topic": TOPIC,
                            "partitions": [
                                {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                            ],
                        }
                    ],
                    "forgotten_topics_data": [],
                    "rack_id": "",
                },
            )
            part = resp["responses"][0]["partitions"][0]
            assert part["error_code"] == 0, part
            data = bytes(part["records"] or b"")
            if not data:
                assert offset == part["high_watermark"]
                return out
            for pos, h in records.iter_headers(data):
                assert records.check_crc(data, pos, h), f"corrupt batch at offset {h.base_offset}"
                for r in records.decode_records(data, pos, h):
                    out.append((r.offset, bytes(r.value or b"")))
                offset = h.last_offset + 1


def test_full_disk_answers_storage_error_and_recovers(
    small_disk: SmallDisk, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> None:
    """Also found here: a shutdown on a full disk failed (the producer snapshot and recovery point could not
    be written) and left the other partitions unclosed."""
    data_dir = small_disk.mountpoint / "data"
    b = attach_broker(
        BrokerProcess(
            data_dir,
            small_disk.root / "broker.log",
            ["log.segment.bytes=1048576", "log.index.size.max.bytes=65536", "auto.create.topics.enable=true"],
        )
    )
    b.start()
    try:
        acked: dict[int, bytes] = {}
        errors = 0
        with RawClient.to(b.bootstrap) as c:
            c.request(ApiKey.METADATA, 4, {"topics": [{"name": TOPIC}], "allow_auto_topic_creation": True})
            for i in range(1000):
                value = i.to_bytes(4, "big") + os.urandom(30_000)
                code, offset = _produce(c, value)
                if code == 0:
                    assert errors == 0 or offset == max(acked) + 1
                    acked[offset] = value
                elif code == STORAGE_ERROR:
                    errors += 1
                    if errors >= 5:
                        break
                else:
                    raise AssertionError(f"unexpected error {code}")
            assert errors >= 5, "the disk never filled up"
            assert len(acked) > 20
            # Still serving: metadata, and everything acknowledged reads back intact, nothing else.
            assert c.request(ApiKey.METADATA, 1, {"topics": None})["topics"]
        assert _read_all(b.bootstrap) == sorted(acked.items())
        assert "Traceback" not in b.log_text()

        # A shutdown on the full disk is clean, and so is the start once space returns; appends succeed
        # again, right after the last acknowledged offset.
        assert b.stop() == 0, b.tail()
        small_disk.grow(64)
        b.start()
        assert _read_all(b.bootstrap) == sorted(acked.items())
        with RawClient.to(b.bootstrap) as c:
            for _ in range(10):
                value = os.urandom(30_000)
                code, offset = _produce(c, value)
                assert code == 0
                assert offset == max(acked) + 1
                acked[offset] = value
        assert _read_all(b.bootstrap) == sorted(acked.items())

        # And the log recovers cleanly after a restart.
        b.restart()
        assert _read_all(b.bootstrap) == sorted(acked.items())
        with RawClient.to(b.bootstrap) as c:
            code, offset = _produce(c, b"after restart")
            assert code == 0 and offset == max(acked) + 1
    finally:
        with contextlib.suppress(Exception):
            b.stop()
