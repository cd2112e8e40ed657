"""What a group protocol gets from the coordinator it runs in: the registry of groups, the group log, the
offsets store, the timers and the clock.

Each protocol (classic, and its siblings) is a module of its own working on its own kind of group through
this interface; none of them knows the others or the coordinator's internals.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any, Protocol

from . import logformat
from .config import GroupConfig, GroupConfigValue
from .group import Group, GroupType
from .log import Entry
from .offsets import OffsetStore

# The topics, among those given (named as the member knows them), that the principal of a request may
# DESCRIBE: what a consumer group's regular expressions resolve to when the request refreshes them.
DescribableTopics = Callable[[Collection[str]], Collection[str]]


class TopicInfo(Protocol):
    """What the groups need to know of a topic of the catalogue."""

    @property
    def topic_id(self) -> uuid.UUID: ...

    @property
    def partitions(self) -> int: ...


class GroupContext(Protocol):
    config: GroupConfig
    offsets: OffsetStore
    # Every group of the coordinator by id, whatever its type.
    groups: dict[str, Group]

    def now_ms(self) -> int: ...

    def append(self, entries: list[Entry]) -> None:
        """Append entries to the group log; raise if they are not durable."""
        ...

    async def append_async(self, entries: list[Entry]) -> None:
        """``append``, awaited: the event loop serves others while the log writes."""
        ...

    def store(self, entries: list[Entry], done: Callable[[BaseException | None], None]) -> None:
        """Append entries behind every earlier ``store``; ``done(None)`` once durable, ``done(error)`` if
        not (at once for a log written synchronously, later for one written asynchronously)."""
        ...

    @property
    def writes_later(self) -> bool:
        """Whether the log is written asynchronously: timers hand their writes to tasks (``spawn``)."""
        ...

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in a task of the coordinator."""
        ...

    def schedule(self, deadline_ms: int) -> None:
        """Make sure the timers run again no later than ``deadline_ms``."""
        ...

    def partitions_of(self, topic: str) -> int | None: ...

    def topics(self) -> Mapping[str, TopicInfo]:
        """The topic catalogue by name."""
        ...

    def visible_topic(self, group_id: str, topic: str) -> str | None:
        """The name a member of ``group_id`` knows ``topic`` by (what its regular expression is matched
        against), or None when the topic is not for it (internal topics, another namespace's)."""
        ...

    def group_configs(self, group_id: str) -> Mapping[str, GroupConfigValue]:
        """The dynamic configs set on the group (IncrementalAlterConfigs on GROUP resources)."""
        ...

    @property
    def report_leader_epoch(self) -> bool:
        """Whether OffsetFetch returns the committed leader epochs."""
        ...

    def simple_group(self, group_id: str) -> Group:
        """A new group (not yet in ``groups``) for a group id that holds only offsets."""
        ...

    def on_offset_commit(self, group: Group, member_id: str) -> None:
        """A member committed offsets (a sign of life for protocols that track one)."""
        ...

    def maybe_drop_group(self, group: Group) -> None:
        """Remove ``group`` if it is empty and holds no offsets."""
        ...


class GroupProtocol(Protocol):
    """A group protocol running in the coordinator, over the groups of its type.

    Loading: ``replay`` is given every group record of the log in order (True: the record is one of this
    protocol's), then ``restored`` builds each group whose latest record was one of its own. Timers:
    ``next_deadline`` and ``expire``. On shutdown ``stop`` answers what waits.
    """

    group_type: GroupType

    def replay(self, key: logformat.Key, value: bytes | None) -> bool: ...

    def restored(self, group_id: str, now_ms: int) -> Group | None: ...

    def next_deadline(self) -> float: ...

    def expire(self, now: int) -> None: ...

    def stop(self) -> None: ...
