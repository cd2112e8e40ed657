"""The memory engine's partition log: the same rules as the file engine, with segments held in bytearrays.

Reads return ``bytes`` chunks; ``flush`` only advances the recovery point; nothing survives ``close``.
"""

from __future__ import annotations

from kafkite.log.config import LogConfig
from kafkite.log.partition import Clock, SegmentedLog
from kafkite.log.segment import Segment


class MemoryPartitionLog(SegmentedLog):
    def __init__(self, config: LogConfig | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config or LogConfig(), clock=clock)
        self._set_segments([self._new_segment(0, self._clock())])

    def _new_segment(self, base_offset: int, now_ms: int) -> Segment:
        return Segment.in_memory(base_offset, self.config, now_ms=now_ms)
