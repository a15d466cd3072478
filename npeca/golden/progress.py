"""A minimal progress bar on stderr (only drawn when stderr is a terminal, or forced)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "generate") as bar: bar.step("case")``."""

    def __init__(self, total: int, label: str, enabled: bool | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()

    def __enter__(self) -> "Progress":
        return self

    def step(self, what: str = "") -> None:
        """Advance by one and redraw."""
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.monotonic() - self.start
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.done}/{self.total} {elapsed:5.1f}s {what[:40]:<40}")
        sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
