"""A small progress bar on stderr (no dependency): ``for item in progress(items, "label")``."""

from __future__ import annotations

import sys
import time


def progress(iterable, label: str = "", total: int | None = None, stream=None, enabled: bool = True):
    """Yield from ``iterable`` while drawing ``label [#####.....] k/n  elapsed`` on stderr."""
    stream = stream or sys.stderr
    items = list(iterable) if total is None else iterable
    total = len(items) if total is None else total
    start = time.monotonic()
    width = 30

    def draw(done: int) -> None:
        if not enabled:
            return
        filled = int(width * done / total) if total else width
        elapsed = time.monotonic() - start
        stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:6.1f}s")
        stream.flush()

    draw(0)
    for k, item in enumerate(items, 1):
        yield item
        draw(k)
    if enabled:
        stream.write("\n")
        stream.flush()
