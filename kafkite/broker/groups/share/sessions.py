"""Share sessions (KIP-932): which share-partitions a member fetches from one broker, and the epoch of its
requests.

A ShareFetch with epoch 0 opens a session (replacing the member's previous one) with the partitions it names;
each later ShareFetch or ShareAcknowledge carries the session's epoch, adds partitions and forgets others
(ShareFetch), and moves the epoch on; epoch -1 closes the session, releasing what the member still held. A
session also ends with its connection, as in Kafka 4.2: the records its member acquired go back to the group
at once instead of waiting for their locks to lapse.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kafkite.protocol.errors import ErrorCode

INITIAL_EPOCH = 0
FINAL_EPOCH = -1
TopicPartition = tuple[uuid.UUID, int]


class SessionError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def next_epoch(epoch: int) -> int:
    """The epoch after ``epoch``: it wraps to 1, never back to 0."""
    return 1 if epoch >= 2**31 - 1 or epoch < 0 else epoch + 1


@dataclass
class ShareSession:
    group_id: str
    member_id: str
    epoch: int
    connection: object | None
    partitions: dict[TopicPartition, None] = field(default_factory=dict)  # in the order they were added


class ShareSessions:
    """The share sessions of one broker, by (group, member). ``on_close(session)`` runs when a session ends
    without its member asking (its connection closed)."""

    def __init__(self, max_sessions: int, on_close: Callable[[ShareSession], None]) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[tuple[str, str], ShareSession] = {}
        self._on_close = on_close

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, group_id: str, member_id: str) -> ShareSession | None:
        return self._sessions.get((group_id, member_id))

    def of_group(self, group_id: str) -> list[ShareSession]:
        return [s for (g, _), s in self._sessions.items() if g == group_id]

    def open(
        self, group_id: str, member_id: str, partitions: Iterable[TopicPartition], connection: object | None
    ) -> ShareSession:
        """A new session (epoch 0 request): the member's previous one is dropped."""
        key = (group_id, member_id)
        self._sessions.pop(key, None)
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(
                ErrorCode.SHARE_SESSION_LIMIT_REACHED,
                f"Could not create a share session for group {group_id} member {member_id}",
            )
        session = ShareSession(group_id, member_id, next_epoch(INITIAL_EPOCH), connection)
        session.partitions = dict.fromkeys(partitions)
        self._sessions[key] = session
        return session

    def current(self, group_id: str, member_id: str, epoch: int) -> ShareSession:
        """The session a request of ``epoch`` (not 0) continues: SHARE_SESSION_NOT_FOUND, or
        INVALID_SHARE_SESSION_EPOCH when the epoch is not the session's."""
        session = self._sessions.get((group_id, member_id))
        if session is None:
            raise SessionError(
                ErrorCode.SHARE_SESSION_NOT_FOUND,
                f"Share session for group {group_id} member {member_id} not found",
            )
        if epoch != FINAL_EPOCH and epoch != session.epoch:
            raise SessionError(
                ErrorCode.INVALID_SHARE_SESSION_EPOCH,
                f"Share session epoch {epoch} is not the expected {session.epoch}",
            )
        return session

    @staticmethod
    def advance(session: ShareSession) -> None:
        session.epoch = next_epoch(session.epoch)

    def close(self, group_id: str, member_id: str) -> ShareSession | None:
        return self._sessions.pop((group_id, member_id), None)

    def connection_closed(self, connection: object) -> None:
        for key, session in list(self._sessions.items()):
            if session.connection is connection:
                del self._sessions[key]
                self._on_close(session)

    def forget_partitions(self, group_id: str, gone: Callable[[TopicPartition], bool]) -> None:
        for session in self.of_group(group_id):
            for tp in [tp for tp in session.partitions if gone(tp)]:
                del session.partitions[tp]
