"""Rows of an array (..., d) handed to a backend's (n, d) operations without copying it.

The backends take rows (n, d). ``x.reshape(-1, d)`` is a view only when the leading axes
collapse into one axis of equal steps. A transposed view — transformers' (B, H, T, d) keys
and values are a (B, T, H, d) buffer seen through ``transpose(1, 2)`` — or a slice along T
of a longer buffer does not collapse, and the reshape copies the whole input: one more pass
over memory, as long as the quantization's own. :func:`apply` takes the leading axes in the
order of their strides (a transposed view then collapses) and, where they still do not,
calls the operation once per block of rows that does; the outputs come back in x's own
order of leading axes.
"""

from __future__ import annotations

import numpy as np

from . import _validate as v

#: blocks of fewer rows are copied into one call instead (each call costs a dispatch and,
#: for a parallel kernel, a thread start-up)
MIN_BLOCK_ROWS = 512


def _collapse(shape, strides):
    """Adjacent axes (outer first) merged where their steps chain, size-1 axes dropped:
    (shape, strides) lists of the axes a C-order walk really has."""
    out_shape, out_strides = [], []
    for n, s in zip(shape, strides):
        if n == 1:
            continue
        if out_shape and out_strides[-1] == s * n:
            out_shape[-1] *= n
            out_strides[-1] = s
        else:
            out_shape.append(n)
            out_strides.append(s)
    return out_shape, out_strides


def apply(fn, x: np.ndarray) -> tuple:
    """``fn(rows)`` for the rows (n, d) of x (..., d); fn returns a tuple of arrays (n, ...).
    Returns them shaped x.shape[:-1] + their trailing axes: views of fn's arrays, so not
    C-contiguous where the leading axes were taken in another order (a row's outputs stay
    with it: fn must treat rows independently, as every quantizer does)."""
    lead, d = x.shape[:-1], x.shape[-1]
    perm = sorted(range(len(lead)), key=lambda a: -abs(x.strides[a]))  # stable: C order when already sorted
    xp = x.transpose(perm + [len(lead)])
    shape, _ = _collapse(xp.shape[:-1], xp.strides[:-1])
    if len(shape) > 1 and shape[-1] >= MIN_BLOCK_ROWS and min(shape) > 0:  # one call per block (a view)
        blocks = xp.reshape(tuple(shape) + (d,))
        parts = [fn(blocks[idx]) for idx in np.ndindex(*shape[:-1])]
        outs = [np.concatenate(arrays) for arrays in zip(*parts)]
    else:  # a view, or small blocks copied into one
        outs = fn(xp.reshape(-1, d))
    inverse = list(np.argsort(perm))
    shaped = (a.reshape(xp.shape[:-1] + a.shape[1:]) for a in outs)  # leading axes in perm's order
    return tuple(a.transpose(inverse + list(range(len(lead), a.ndim))) for a in shaped)


def quantize(name: str, fn, x: np.ndarray, dim: int) -> tuple:
    """:func:`apply` of a quantizer's ``fn`` (outputs: codes, norms, ...) to the unchecked
    rows x (..., dim) — non-finite values show as non-finite norms, so floating-point warnings
    are off — then :func:`_validate.check_norms` raises the precise error of a full check."""
    with np.errstate(all="ignore"):
        out = apply(fn, x)
    v.check_norms(name, x, dim, out[1])
    return out
