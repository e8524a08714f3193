"""An append-only, front-droppable array of per-token rows with amortised growth.

Shape (B, H, capacity) + row, positions ``offset .. offset + length − 1`` of axis 2 in use.
``extend`` appends at the end (growing with :func:`tqref.cache.grown_capacity`, the
cache's one growth rule, after moving the live rows to the front); ``drop_front`` forgets the
oldest rows in O(1). Used for the float16 tier (window.py) and the per-token outlier masks
(outliers.py).
"""

from __future__ import annotations

import numpy as np

from ..cache import grown_capacity


class Rows:
    __slots__ = ("dtype", "row", "buf", "offset", "length")

    def __init__(self, dtype, row: tuple = ()):
        self.dtype = np.dtype(dtype)
        self.row = tuple(row)
        self.buf = None
        self.offset = 0
        self.length = 0

    def view(self) -> np.ndarray | None:
        """The live rows (B, H, length) + row, read-only; None before the first extend."""
        if self.buf is None:
            return None
        out = self.buf[:, :, self.offset : self.offset + self.length]
        out.flags.writeable = False
        return out

    def extend(self, new: np.ndarray) -> None:
        """Append ``new`` (B, H, n) + row (already of this dtype and row shape)."""
        n = new.shape[2]
        if self.buf is None:
            self.buf = np.zeros(new.shape[:2] + (grown_capacity(n, 0),) + self.row, self.dtype)
        capacity = self.buf.shape[2]
        if self.offset + self.length + n > capacity:
            grown = grown_capacity(self.length + n, capacity)
            live = self.buf[:, :, self.offset : self.offset + self.length]
            if grown != capacity:
                buf = np.zeros(self.buf.shape[:2] + (grown,) + self.row, self.dtype)
                buf[:, :, : self.length] = live
                self.buf = buf
            else:
                self.buf[:, :, : self.length] = live.copy()
            self.offset = 0
        end = self.offset + self.length
        self.buf[:, :, end : end + n] = new
        self.length += n

    def drop_front(self, count: int) -> None:
        """Forget the ``count`` oldest rows (0 ≤ count ≤ length)."""
        self.offset += count
        self.length -= count

    def nbytes(self) -> int:
        """Bytes of the live rows."""
        return 0 if self.buf is None else self.length * self.buf[:, :, :1].nbytes

    def capacity_bytes(self) -> int:
        return 0 if self.buf is None else self.buf.nbytes
