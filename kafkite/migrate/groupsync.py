"""Committed offsets of the source's groups, translated and committed on the target as the mirror goes.

As MirrorMaker 2's checkpoint task does (``MirrorCheckpointTask.syncGroupOffset``): a group's offsets are
committed on the target only while the group has no active member there (consumers on the target commit their
own), only for partitions the group committed on the source (a group that has not committed starts on the
target as on the source, by its ``auto.offset.reset``), and never backwards over an offset already committed
on the target. Unlike MM2, the translation is exact (``state.PartitionState.translate``): an offset not copied
yet waits for the next round instead of being estimated. A cutover (``cutover``) commits regardless of
direction, once both sides are idle.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kafkite.client import KafkaClientError
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.migrate.mirror import Mirror

log = logging.getLogger("kafkite.migrate")

# kafkite's REST gateway and some tools create groups with these protocol types; all hold offsets.
GROUP_TYPES = ("consumer", "")


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


@dataclass
class GroupTrack:
    """What the mirror last saw of one source group."""

    group: str
    state: str = ""
    members: int = 0
    last_active: float | None = None  # wall time the group was last seen with members
    stopped_at: float | None = None  # wall time it was first seen without members after being active
    translated: dict[str, list[int]] = field(default_factory=dict)  # "t/p" -> [source offset, target offset]
    pending: list[str] = field(default_factory=list)  # committed past what is copied: next round
    target_state: str = ""
    last_sync: float | None = None
    commits: int = 0
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "last_active": self.last_active,
            "stopped_at": self.stopped_at,
            "translated": dict(self.translated),
            "pending": list(self.pending),
            "target_state": self.target_state,
            "last_sync": self.last_sync,
            "commits": self.commits,
            "note": self.note,
        }


class GroupSync:
    def __init__(self, mirror: Mirror) -> None:
        self.m = mirror
        regex = mirror.opts.groups_regex
        self.regex = re.compile(regex) if regex else None
        self.tracks: dict[str, GroupTrack] = {}

    def wanted(self, group: str) -> bool:
        if group.startswith("kafkite-mirror"):
            return False
        return self.regex is None or bool(self.regex.fullmatch(group))

    def track(self, group: str) -> GroupTrack:
        t = self.tracks.get(group)
        if t is None:
            t = self.tracks[group] = GroupTrack(group)
        return t

    def status(self) -> list[dict[str, Any]]:
        return [t.as_json() for t in sorted(self.tracks.values(), key=lambda t: t.group)]

    async def loop(self) -> None:
        interval = self.m.opts.group_interval
        while True:
            try:
                await self.sync_all(force=False)
            except (KafkaClientError, ConnectionError, OSError) as e:
                self.m.telemetry.error("groups")
                log.warning("syncing group offsets failed: %s", e)
            await asyncio.sleep(interval)

    async def observe(self, groups: list[str]) -> dict[str, GroupTrack]:
        """Refresh the source state (members) of ``groups``; note when an active group stops."""
        desc = await self.m.source.describe_groups(groups)
        now = time.time()
        out = {}
        for g in groups:
            d = desc.get(g) or {}
            t = self.track(g)
            t.state = str(d.get("group_state", ""))
            t.members = len(d.get("members") or [])
            if t.members:
                t.last_active = now
                t.stopped_at = None
            elif t.last_active is not None and t.stopped_at is None:
                t.stopped_at = now
            out[g] = t
        return out

    async def sync_all(self, *, force: bool) -> list[dict[str, Any]]:
        listed = await self.m.source.list_groups()
        groups = [
            g["group_id"] for g in listed if g["protocol_type"] in GROUP_TYPES and self.wanted(g["group_id"])
        ]
        if not groups:
            return []
        await self.observe(groups)
        out = []
        for g in groups:
            entry = await self.sync_group(g, force=force)
            if entry["translated"] or entry["skipped"] or entry["errors"]:
                out.append(entry)
        return out

    async def sync_group(
        self,
        group: str,
        *,
        force: bool,
        committed: dict[tuple[str, int], tuple[int, str | None]] | None = None,
    ) -> dict[str, Any]:
        """Translate ``group``'s committed source offsets and commit them on the target.

        ``force`` (a cutover): commit even over a later offset on the target. Returns the report entry:
        translated {"t/p": [source, target]}, skipped, errors, pending, inexact."""
        m = self.m
        t = self.track(group)
        entry: dict[str, Any] = {"group": group, "translated": {}, "skipped": [], "errors": {}, "inexact": []}
        if committed is None:
            try:
                committed = await m.source.committed_offsets(group)
            except KafkaClientError as e:
                entry["errors"]["*"] = str(e)
                return entry
        by_topic: dict[str, dict[int, tuple[int, str | None]]] = {}
        for (topic, p), (off, meta) in committed.items():
            if topic in m.topics:
                by_topic.setdefault(topic, {})[p] = (off, meta)
        to_commit: dict[tuple[str, int], tuple[int, str | None]] = {}
        pending: list[str] = []
        for topic, parts in sorted(by_topic.items()):
            got = m.translate_group_topic(topic, {p: off for p, (off, _) in parts.items()})
            if m.rest is None:
                for p, (off, meta) in sorted(parts.items()):
                    if p not in got:
                        pending.append(f"{topic}/{p}@{off}")
                        continue
                    tgt, _ = got[p]
                    to_commit[(topic, p)] = (tgt, meta)
                    entry["translated"][f"{topic}/{p}"] = [off, tgt]
            else:
                if not got:
                    pending.extend(f"{topic}/{p}@{off}" for p, (off, _) in sorted(parts.items()))
                    continue
                for q, (tgt, exact) in sorted(got.items()):
                    to_commit[(topic, q)] = (tgt, None)
                    entry["translated"][f"{topic}/{q}"] = [None, tgt]
                    if not exact:
                        entry["inexact"].append(f"{topic}/{q}")
        entry["skipped"] = pending
        t.pending = pending
        target = m.group_target
        if not to_commit:
            t.translated = entry["translated"]
            return entry
        if target is None:
            entry["errors"]["*"] = "no Kafka endpoint to commit group offsets on (give --target-kafka)"
            t.note = entry["errors"]["*"]
            return entry
        try:
            desc = (await target.describe_groups([group])).get(group) or {}
            t.target_state = str(desc.get("group_state", ""))
            if desc.get("members") and not force:
                t.note = "active on the target: its consumers commit their own offsets"
                entry["errors"]["*"] = t.note
                return entry
            if desc.get("members") and force:
                entry["errors"]["*"] = f"group {group} has active members on the target"
                return entry
            if not force:
                have = await target.committed_offsets(group)
                to_commit = {tp: v for tp, v in to_commit.items() if tp not in have or have[tp][0] < v[0]}
                if not to_commit:
                    t.translated = entry["translated"]
                    t.last_sync = time.time()
                    return entry
            errs = await target.commit_offsets(group, to_commit)
        except (KafkaClientError, ConnectionError, OSError) as e:
            entry["errors"]["*"] = str(e)
            return entry
        failed = {f"{tp[0]}/{tp[1]}": error_name(code) for tp, code in errs.items() if code}
        entry["errors"].update(failed)
        done = sum(1 for code in errs.values() if not code)
        if done:
            m.telemetry.group_commits.inc(done, group)
            t.commits += done
        if failed:
            m.result.warn(f"group {group}: the target refused some commits: {failed}")
        t.translated = entry["translated"]
        t.last_sync = time.time()
        return entry
