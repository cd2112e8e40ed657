"""The delivery engine: which items of a stream are delivered to whom, until when, how many times, and which
are settled or dead, journaled so that a restart (or ``kill -9``) loses none of it.

One ``Ledger`` keeps the delivery state of the items (integers: a queue's message ids, a partition's offsets)
of one stream. Each entry has a delivery count, a lock (``nonce`` and ``visible_after_ms``: while the time is
before it, the delivery holding the nonce owns the item) and whether it is dead (dead-lettered). Entries that
are settled (deleted, acknowledged) leave the ledger. Every change is appended to a ``RecordLog`` as an event
before the caller acknowledges it, and ``apply`` replays the events after a restart:

- ``d`` delivered, the count-th time, locked until ``v``: ``{"i": id, "n": count, "v": until, "r": nonce}``,
  or for ranges of items ``{"g": [[first, last, count], ...], "v": until, "r": nonce, "o": owner}``
- ``u`` lock moved (``v`` 0: released): ``{"i": id, "v": until, "r": nonce}`` or
  ``{"g": [[first, last], ...], "v": until}``
- ``x`` settled (deleted, acknowledged): ``{"i": id}`` or ``{"g": [[first, last], ...]}``
- ``l`` dead: ``{"i": id}`` or ``{"g": [[first, last], ...]}``, with ``"w": 1`` when its dead letter is still
  to be written
- ``w`` those dead letters were written: ``{"g": [[first, last], ...]}``
- ``b`` back from the dead, counts reset: ``{"i": [id, ...]}``
- ``s`` the window moved: ``{"s": start, "e": end}``
- ``S`` a snapshot chunk: ``{"next": id, "m": [[id, count, until, nonce, dead], ...], "s": start,
  "last": bool}``

Two modes share the machinery. A *queue* ledger (OCI Queue mode, ``kafkite.queue.engine``) holds every live
message, writes one event per message, and keeps dead messages (its dead-letter queue). A *window* ledger
(share groups, ``kafkite.broker.groups.share``) holds the in-flight window of a partition's offsets from its
start (everything below is settled or archived) to its end (nothing from there on was delivered yet); it
writes range events, and a dead entry in it is one whose dead letter is still to be written (archived entries
leave the window). The lock lapse rule is the same for both: a delivery whose lock passes goes back to the
stream, or dies once its count reaches the stream's limit.

The clock is wall time in milliseconds, so locks survive a restart (a window ledger's owner releases its
locks on load: its consumers' sessions did not survive).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from kafkite.broker.delivery.journal import Event, RecordLog

log = logging.getLogger("kafkite.delivery")

SNAPSHOT_ROWS = 5000


class Delivered(Protocol):
    """What the ledger keeps of an item (a queue's ``Message``, a share partition's ``Record``)."""

    id: int
    delivery_count: int
    visible_after_ms: int
    nonce: int  # the current delivery's token; 0 before the first delivery
    dlq: bool


E = TypeVar("E", bound=Delivered)


def new_nonce() -> int:
    return int.from_bytes(os.urandom(8), "big") | 1


def ranges(ids: Iterable[int]) -> list[list[int]]:
    """Sorted ids as ``[first, last]`` runs."""
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def counted_ranges(entries: Iterable[Delivered]) -> list[list[int]]:
    """Entries (sorted by id) as ``[first, last, count]`` runs of consecutive ids with one count."""
    out: list[list[int]] = []
    for e in entries:
        last = out[-1] if out else None
        if last is not None and last[1] == e.id - 1 and last[2] == e.delivery_count:
            last[1] = e.id
        else:
            out.append([e.id, e.id, e.delivery_count])
    return out


def _expand(runs: Iterable[list[int]]) -> Iterator[int]:
    for run in runs:
        yield from range(run[0], run[1] + 1)


def _ids(ev: dict[str, Any]) -> Iterator[int]:
    if "g" in ev:
        yield from _expand(ev["g"])
    elif isinstance(ev.get("i"), list):
        yield from ev["i"]
    else:
        yield ev["i"]


class Ledger(Generic[E]):
    """The delivery state of one stream's items. Synchronous methods run on the event loop thread.

    ``entries`` is the caller's map of items (shared: a queue's messages are its entries); ``create`` makes
    the entry of an item first delivered (window mode), ``on_lapse`` is called by the ledger's timer when
    locks pass. ``table`` names the ledger in a log several ledgers share.
    """

    def __init__(
        self,
        log: RecordLog,
        entries: dict[int, E],
        *,
        clock: Callable[[], int],
        window: bool = False,
        table: str | None = None,
        create: Callable[[int], E] | None = None,
        on_lapse: Callable[[], None] | None = None,
    ) -> None:
        self.log = log
        self.entries = entries
        self.clock = clock
        self.window = window
        self.table = table
        self._create = create
        self.on_lapse = on_lapse
        # Window mode: items below ``start`` are settled; from ``end`` on none was delivered yet.
        self.start = 0
        self.end = 0
        # Who holds each item in flight (window mode), by id.
        self.owners: dict[int, str] = {}
        # (visible after, first id, nonce, last id): a delivery's run of consecutive ids is one element.
        self._inflight: list[tuple[int, int, int, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._snapshot: list[list[int]] = []  # rows of a snapshot being replayed
        self.closed = False

    # ------------------------------------------------------------------ journal

    def journal(self, events: list[Event]) -> int:
        """Append events for this ledger; the first one's offset in the log."""
        return self.log.append_events(events, self.table)

    # ------------------------------------------------------------------ deliveries

    def deliver(self, items: list[E], until: int, owner: str | None = None) -> int:
        """Deliver ``items`` (one more time each) until ``until``; journaled first. Returns the nonce."""
        nonce = new_nonce()
        if self.window:
            items = sorted(items, key=lambda e: e.id)
            runs = [[e.id, e.id, e.delivery_count + 1] for e in items]
            merged: list[list[int]] = []
            for r in runs:
                if merged and merged[-1][1] == r[0] - 1 and merged[-1][2] == r[2]:
                    merged[-1][1] = r[0]
                else:
                    merged.append(r)
            ev: dict[str, Any] = {"g": merged, "v": until, "r": nonce}
            if owner is not None:
                ev["o"] = owner
            self.journal([(b"d", ev)])
        else:
            self.journal(
                [(b"d", {"i": e.id, "n": e.delivery_count + 1, "v": until, "r": nonce}) for e in items]
            )
        owners = self.owners
        for e in items:
            e.delivery_count += 1
            e.nonce = nonce
            e.visible_after_ms = until
            if owner is not None:
                owners[e.id] = owner
            if e.id >= self.end:
                self.end = e.id + 1
        if self.window:
            for first, last in ranges(e.id for e in items):
                heapq.heappush(self._inflight, (until, first, nonce, last))
        else:
            for e in items:
                heapq.heappush(self._inflight, (until, e.id, nonce, e.id))
        self.schedule()
        return nonce

    def move_locks(self, items: list[E], until: int) -> None:
        """Lock the deliveries of ``items`` until ``until`` from now on (0: release them at once)."""
        self.relock([(e, until) for e in items])

    def relock(self, changes: list[tuple[E, int]]) -> None:
        """Move the lock of each delivery to its own time (one append for all)."""
        if not changes:
            return
        if self.window:
            by_until: dict[int, list[int]] = {}
            for e, until in changes:
                by_until.setdefault(until, []).append(e.id)
            self.journal([(b"u", {"g": ranges(ids), "v": until}) for until, ids in by_until.items()])
        else:
            self.journal([(b"u", {"i": e.id, "v": until, "r": e.nonce}) for e, until in changes])
        for e, until in changes:
            e.visible_after_ms = until
            heapq.heappush(self._inflight, (until, e.id, e.nonce, e.id))
        self.schedule()

    def in_flight(self, e: Delivered, now: int) -> bool:
        return bool(e.nonce) and e.visible_after_ms > now

    def settle(self, now: int, limit: int, *, pending_dead: bool = False) -> tuple[list[E], list[E]]:
        """Deliveries whose lock passed: (back to the stream, dead). An item dies when ``limit`` > 0 and it
        was delivered ``limit`` times; ``pending_dead``: its dead letter is still to be written."""
        h = self._inflight
        lapsed: list[E] = []
        entries = self.entries
        while h and h[0][0] <= now:
            until, first, nonce, last = heapq.heappop(h)
            for mid in range(first, last + 1):
                e = entries.get(mid)
                if e is None or e.nonce != nonce or e.visible_after_ms != until:
                    continue
                lapsed.append(e)
        if not lapsed:
            return [], []
        for e in lapsed:
            self.owners.pop(e.id, None)
        dead = [e for e in lapsed if not e.dlq and 0 < limit <= e.delivery_count]
        dead_ids = {e.id for e in dead}
        back = [e for e in lapsed if e.id not in dead_ids]
        if dead:
            try:
                self.kill(dead, pending=pending_dead)
            except Exception:  # replay redoes it: the lapse rule is the same then
                log.exception("cannot record %d dead deliveries", len(dead))
                for e in dead:
                    e.dlq = True
        return back, dead

    def settled(self, items: list[E]) -> None:
        """Settle ``items`` (deleted, acknowledged): they leave the ledger."""
        if not items:
            return
        if self.window:
            self.journal([(b"x", {"g": ranges(e.id for e in items)})])
        else:
            self.journal([(b"x", {"i": e.id}) for e in items])
        for e in items:
            self._forget(e.id)
        self._advance()

    def kill(self, items: list[E], *, pending: bool = False) -> None:
        """``items`` are dead: in a queue, dead letters; in a window, archived (``pending``: once their dead
        letter is written, ``written``)."""
        if not items:
            return
        if self.window:
            ev: dict[str, Any] = {"g": ranges(e.id for e in items)}
            if pending:
                ev["w"] = 1
            self.journal([(b"l", ev)])
        else:
            self.journal([(b"l", {"i": e.id}) for e in items])
        for e in items:
            self.owners.pop(e.id, None)
            if self.window and not pending:
                self._forget(e.id)
            else:
                e.dlq = True
        self._advance()

    def written(self, items: list[E]) -> None:
        """The dead letters of ``items`` are written: they leave the window."""
        if not items:
            return
        self.journal([(b"w", {"g": ranges(e.id for e in items)})])
        for e in items:
            self._forget(e.id)
        self._advance()

    def revive(self, items: list[E]) -> None:
        """Back from the dead, visible at once with a fresh delivery count."""
        if not items:
            return
        self.journal([(b"b", {"i": [e.id for e in items]})])
        for e in items:
            _reset(e)

    def move_window(self, start: int, end: int | None = None) -> None:
        """Window mode: everything below ``start`` is settled; with ``end``, nothing from ``end`` on was
        delivered (a reset: ``start == end`` empties the window)."""
        ev: dict[str, Any] = {"s": start}
        if end is not None:
            ev["e"] = end
        self.journal([(b"s", ev)])
        self._move_window(start, end)

    def _move_window(self, start: int, end: int | None) -> None:
        self.start = start
        if end is not None:
            self.end = end
        for i in [i for i in self.entries if i < start or (end is not None and i >= end)]:
            self._forget(i)
        if self.end < self.start:
            self.end = self.start
        self._advance()

    def _forget(self, item: int) -> None:
        self.entries.pop(item, None)
        self.owners.pop(item, None)

    def _advance(self) -> None:
        """Window mode: move the start past the settled items at its head."""
        if not self.window:
            return
        while self.start < self.end and self.start not in self.entries:
            self.start += 1

    # ------------------------------------------------------------------ timer

    def schedule(self) -> None:
        """Make the timer fire when the earliest lock passes (needs a running loop; a no-op otherwise)."""
        if not self._inflight or self.closed or self.on_lapse is None:
            return
        at = self._inflight[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, (at - self.clock()) / 1000) + 0.001
        self._timer_at = at
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or self.on_lapse is None:
            return
        try:
            self.on_lapse()
        finally:
            self.schedule()

    @property
    def next_lapse(self) -> int | None:
        return self._inflight[0][0] if self._inflight else None

    def idle(self) -> None:
        """Stop watching the locks (another process serves the stream now; ``rebuild`` resumes)."""
        self._inflight = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------ replay

    def apply(self, kind: bytes, ev: dict[str, Any]) -> bool:
        """Replay one event of this ledger; False when the kind is not the ledger's (the owner's own)."""
        if kind == b"S":
            self._snapshot.extend(ev["m"])
            if ev.get("last"):
                self._apply_snapshot(ev["next"], ev.get("s"), self._snapshot)
                self._snapshot = []
            return True
        self._snapshot = []
        if kind == b"s":
            self._move_window(ev["s"], ev.get("e"))
            return True
        if kind == b"b":
            for mid in _ids(ev):
                e = self.entries.get(mid)
                if e is not None:
                    _reset(e)
            return True
        if kind not in (b"d", b"u", b"x", b"l", b"w"):
            return False
        if kind == b"d" and "g" in ev:
            for first, last, count in ev["g"]:
                for mid in range(first, last + 1):
                    e = self.entries.get(mid)
                    if e is None:
                        if self._create is None or mid < self.start:
                            continue
                        e = self.entries[mid] = self._create(mid)
                    e.delivery_count, e.visible_after_ms, e.nonce = count, ev["v"], ev["r"]
                    if "o" in ev:
                        self.owners[mid] = ev["o"]
                self.end = max(self.end, last + 1)
            return True
        for mid in _ids(ev):
            e = self.entries.get(mid)
            if e is None:
                continue
            if kind == b"d":
                e.delivery_count, e.visible_after_ms, e.nonce = ev["n"], ev["v"], ev["r"]
            elif kind == b"u":
                if "g" in ev or e.nonce == ev["r"]:
                    e.visible_after_ms = ev["v"]
            elif kind == b"x" or kind == b"w":
                self._forget(mid)
            elif kind == b"l":
                self.owners.pop(mid, None)
                if self.window and not ev.get("w"):
                    self._forget(mid)
                else:
                    e.dlq = True
        self._advance()
        return True

    def _apply_snapshot(self, nxt: int, start: int | None, rows: list[list[int]]) -> None:
        state = {r[0]: r for r in rows}
        if self.window:
            self.entries.clear()
            self.owners.clear()
            self.start = start if start is not None else self.start
            self.end = nxt
        for mid in [i for i in self.entries if i < nxt and i not in state]:
            self._forget(mid)
        for mid, (_, n, v, r, dlq) in state.items():
            e = self.entries.get(mid)
            if e is None and self.window and self._create is not None:
                e = self.entries[mid] = self._create(mid)
            if e is not None:
                e.delivery_count, e.visible_after_ms, e.nonce, e.dlq = n, v, r, bool(dlq)
        self._advance()

    def rebuild(self) -> None:
        """After replay: the in-flight heap from the entries."""
        self._inflight = [
            (e.visible_after_ms, e.id, e.nonce, e.id)
            for e in self.entries.values()
            if e.nonce and e.visible_after_ms
        ]
        heapq.heapify(self._inflight)

    # ------------------------------------------------------------------ snapshots

    def snapshot_events(self, nxt: int) -> list[Event]:
        """A snapshot of every entry (``nxt``: items below it that the snapshot lacks are gone)."""
        rows = [
            [e.id, e.delivery_count, e.visible_after_ms, e.nonce, int(e.dlq)] for e in self.entries.values()
        ]
        chunks = [rows[i : i + SNAPSHOT_ROWS] for i in range(0, len(rows), SNAPSHOT_ROWS)] or [[]]
        events: list[Event] = []
        for i, c in enumerate(chunks):
            ev: dict[str, Any] = {"next": nxt, "m": c, "last": i == len(chunks) - 1}
            if self.window:
                ev["s"] = self.start
            events.append((b"S", ev))
        return events


def _reset(e: Delivered) -> None:
    e.dlq = False
    e.delivery_count = 0
    e.visible_after_ms = 0
    e.nonce = 0
