"""The float16 tier of a layer: sink tokens and the residual window (docs/kv-cache.md §7.1).

Positions of one layer, after token p has arrived (time p):

* **sinks** — positions 0 .. S − 1 (``sink_tokens``) are kept in float16 forever;
* **compressed** — positions S .. e(p) − 1 are TurboQuant codes;
* **window** — positions e(p) .. p are float16 (the most recent R = ``residual_length``
  tokens once the cache is past its first S + R tokens),

with the *compression end*

    e(p) = max(S, p − R + 1)   once the compressed tier is ready at time p,
    e(p) = S                   before (a static outlier set still calibrating: outliers.py,
                               or a float16 layer: layers.py, which is never ready).

The window slides: at each decode step exactly one token (p − R) leaves it and is quantized
— unlike a burst rule that keeps 0 .. R − 1 full-precision tokens and quantizes them all
when the count reaches R (the rule of Hugging Face's QuantizedCache with its
``residual_length``; docs/kv-cache.md §7.1 compares the two).

**One pass equals decode.** Query p (absolute position) sees every key t ≤ p, each in the
representation it has at time p: float16 if t < S or t ≥ e(p), codes otherwise
(:func:`visible_float16`). A one-pass attention over a block of Lq queries therefore needs
the float16 rows of positions e(p_first) .. T − 1, some of which have already left the
window at time T − 1; the tier keeps them from the last append (``held``) until the next
append of the layer. They are the activations a runtime has in hand during the forward pass
of that block; ``memory_usage`` counts the persistent part (sinks + window), and
``capacity_bytes`` everything held.

Every token is rounded to float16 on arrival (the tier's storage dtype) and quantized from
that float16 value, so codes do not depend on how the tokens were chunked into appends.
"""

from __future__ import annotations

import numpy as np

from ..reference import attention
from .rows import Rows

_F16 = np.float16
_F32 = np.float32
F16_MAX = float(np.finfo(_F16).max)


def compression_end(p, *, sinks: int, window: int, ready_from: int | None):
    """e(p) of the module docstring, elementwise over integer positions ``p``.

    ready_from: the first time the compressed tier accepts tokens (None: never).
    """
    p = np.asarray(p, np.int64)
    sliding = np.maximum(sinks, p - window + 1)
    if ready_from is None:
        return np.full(p.shape, sinks, np.int64)
    return np.where(p >= ready_from, sliding, sinks)


def visible_float16(queries, positions, *, sinks: int, ends, causal: bool):
    """bool (Lq, n): query at absolute position ``queries[i]`` sees the float16 row of key
    position ``positions[t]`` — t ≤ p (when causal) and (t < S or t ≥ e(p)); ``ends`` (Lq,)
    are the e(p) of the queries."""
    t = np.asarray(positions, np.int64)[None, :]
    mask = (t < sinks) | (t >= np.asarray(ends, np.int64)[:, None])
    if causal:
        mask &= t <= np.asarray(queries, np.int64)[:, None]
    return mask


def check_float16(name: str, x32: np.ndarray) -> None:
    """Reject values that float16 storage cannot hold (|x| > 65504 would become inf)."""
    over = np.abs(x32) > F16_MAX
    if over.any():
        pos = tuple(int(i) for i in np.argwhere(over)[0])
        raise ValueError(f"{name}: expected values representable in float16 (|x| <= {F16_MAX:g}; sinks and the "
                         f"residual window store float16), got {float(x32[pos]):.6g} at index {pos}")


class Float16Tier:
    """The float16 rows of one layer: sinks (positions 0 .. S − 1) and ``held`` positions
    ``held_start .. seq − 1`` (the window plus, until the next append, what the last append's
    queries still need). Keys and values float16 (B, H, n, d)."""

    def __init__(self, sinks: int, head_dim: int):
        self.sinks = sinks
        self.sink_k, self.sink_v = Rows(_F16, (head_dim,)), Rows(_F16, (head_dim,))
        self.held_k, self.held_v = Rows(_F16, (head_dim,)), Rows(_F16, (head_dim,))
        self.held_start = sinks  # absolute position of held row 0

    def sink_count(self) -> int:
        return self.sink_k.length

    def rows(self, first: int, stop: int, new_k, new_v, seq: int):
        """float16 K, V of non-sink positions first .. stop − 1, from held rows and the rows
        ``new_k``/``new_v`` of positions seq .. seq + n − 1 (not yet appended)."""
        held_k, held_v = self.held_k.view(), self.held_v.view()
        parts_k, parts_v = [], []
        if held_k is not None and first < seq:
            a, b = first - self.held_start, min(stop, seq) - self.held_start
            parts_k.append(held_k[:, :, a:b])
            parts_v.append(held_v[:, :, a:b])
        if stop > seq:
            a, b = max(first, seq) - seq, stop - seq
            parts_k.append(new_k[:, :, a:b])
            parts_v.append(new_v[:, :, a:b])
        return np.concatenate(parts_k, axis=2), np.concatenate(parts_v, axis=2)

    def advance(self, new_k, new_v, seq: int, held_start: int) -> None:
        """Append float16 rows of positions seq .. seq + n − 1: the sink positions to the sinks,
        the others to ``held``; then drop held rows before ``held_start``."""
        n = new_k.shape[2]
        to_sinks = max(0, min(self.sinks - seq, n))
        if to_sinks:
            self.sink_k.extend(new_k[:, :, :to_sinks])
            self.sink_v.extend(new_v[:, :, :to_sinks])
        if n > to_sinks:
            self.held_k.extend(new_k[:, :, to_sinks:])
            self.held_v.extend(new_v[:, :, to_sinks:])
        drop = min(max(0, held_start - self.held_start), self.held_k.length)
        self.held_k.drop_front(drop)
        self.held_v.drop_front(drop)
        self.held_start += drop

    def all_rows(self, lead: tuple):
        """(positions int64 (n,), K, V float16 (B, H, n, d)) of every float16 row held
        (n may be 0; ``lead`` = (B, H, d) shapes the empty arrays)."""
        ks = [x for x in (self.sink_k.view(), self.held_k.view()) if x is not None and x.shape[2]]
        vs = [x for x in (self.sink_v.view(), self.held_v.view()) if x is not None and x.shape[2]]
        if not ks:
            empty = np.zeros((lead[0], lead[1], 0, lead[2]), _F16)
            return np.zeros(0, np.int64), empty, empty
        positions = np.concatenate([np.arange(self.sink_k.length),
                                    self.held_start + np.arange(self.held_k.length)]).astype(np.int64)
        return positions, np.concatenate(ks, axis=2), np.concatenate(vs, axis=2)

    def capacity_bytes(self) -> int:
        return sum(r.capacity_bytes() for r in (self.sink_k, self.sink_v, self.held_k, self.held_v))


def attend_float16(q32, keys16, values16, mask, *, scale: float, group_size: int):
    """Partial attention over float16 rows: (out float32 (B, A, Lq, d), lse float32 (B, A, Lq)).

    q32 float32 (B, A, Lq, d); keys16/values16 float16 (B, H, n, d); mask bool (Lq, n) from
    :func:`visible_float16`. Logits = scale · q·k in float32 (float16 → float32 is exact);
    softmax and log-sum-exp by :func:`tqref.reference.attention.masked_softmax`, so a query
    with no visible row gets output 0 and lse −inf (merged by ``merge_partials``).
    """
    b, a, lq, d = q32.shape
    h = keys16.shape[1]
    k = keys16.astype(_F32)
    q = q32.reshape(b, h, group_size * lq, d)
    logits = (q @ np.swapaxes(k, -1, -2)).reshape(b, a, lq, -1) * _F32(scale)
    weights, lse = attention.masked_softmax(logits, mask)
    out = weights.reshape(b, h, group_size * lq, -1) @ values16.astype(_F32)
    return out.reshape(b, a, lq, d).astype(_F32, copy=False), lse
