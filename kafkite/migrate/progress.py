"""A progress bar on stderr: redrawn in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_count(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2f}M"
    if n >= 10_000:
        return f"{n / 1000:.1f}k"
    return f"{n:.0f}"


class Progress:
    """``update(done, note)`` redraws ``label [#####     ] 45% note``; ``close()`` ends the line."""

    WIDTH = 30

    def __init__(
        self,
        label: str,
        total: float,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float | None = None,
    ) -> None:
        self.label = label
        self.total = max(total, 0.0)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False
        self.done = 0.0
        self.note = ""

    def render(self, done: float, note: str = "") -> str:
        frac = min(1.0, done / self.total) if self.total > 0 else 1.0
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + " " * (self.WIDTH - filled)
        return f"{self.label} [{bar}] {frac * 100:5.1f}% {note}".rstrip()

    def update(self, done: float, note: str = "", *, force: bool = False) -> None:
        self.done = done
        self.note = note
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        line = self.render(done, note)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self, note: str | None = None) -> None:
        if not self.enabled:
            return
        self.update(self.done, self.note if note is None else note, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
