"""Validation at the public edge: one place, messages naming argument, expected, actual."""

from __future__ import annotations

import math

import numpy as np

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if ok and value >= low and (high is None or value <= high):
        return int(value)
    expected = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_flag(name: str, value) -> bool:
    """A bool (Python or NumPy), returned as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def softmax_scale(scale, head_dim: int) -> float:
    """The attention softmax scale: None -> 1/sqrt(head_dim); else a finite real number > 0."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    ok = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, (bool, np.bool_))
    if not ok or not math.isfinite(float(scale)) or float(scale) <= 0:
        raise ValueError(f"scale: expected a finite number > 0 or None, got {scale!r}")
    return float(scale)


def first_bad_row(bad: np.ndarray):
    """Index tuple (over the leading axes) of the first row with a True in ``bad`` (..., d)."""
    rows = np.any(bad, axis=-1)
    flat = int(np.flatnonzero(rows.reshape(-1))[0])
    return np.unravel_index(flat, rows.shape) if rows.ndim else ()


def float_rows(name: str, x, dim: int) -> np.ndarray:
    """Check the metadata of a float array (..., dim) — dtype and last axis, not the values;
    return it as an ndarray (not copied). Kernels that fuse the value check into their pass
    over x call :func:`check_norms` on what they computed."""
    x = np.asarray(x)
    if x.dtype.type not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float16, float32 or float64, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] != dim:
        actual = "a scalar" if x.ndim == 0 else f"{x.shape[-1]} (shape {x.shape})"
        raise ValueError(f"{name}: expected last axis of length dim={dim}, got {actual}")
    return x


def check_norms(name: str, x, dim: int, norms) -> None:
    """The value check of :func:`as_float32_rows`, fused: a NaN or ±inf coordinate (or a
    float64 value beyond float32) makes the row's float32 norm non-finite, so x is scanned
    again — for the precise error — only when some norm is. Finite rows whose norm
    overflows pass here: the caller reports them (its own message)."""
    if not np.isfinite(norms).all():
        as_float32_rows(name, x, dim)


def as_float32_rows(name: str, x, dim: int) -> np.ndarray:
    """Check a float array (..., dim) of finite values; return it as float32 (same shape)."""
    x = float_rows(name, x, dim)
    bad = ~np.isfinite(x)
    if bad.any():
        row = tuple(int(i) for i in first_bad_row(bad))
        raise ValueError(f"{name}: expected finite values, got NaN or inf in row {row}")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if x.dtype == np.float64 and not np.isfinite(x32).all():
        row = tuple(int(i) for i in first_bad_row(~np.isfinite(x32)))
        raise ValueError(f"{name}: expected values within float32 range, got an overflow in row {row}")
    return x32


def check_uint8(name: str, array, last: int, lead: tuple) -> np.ndarray:
    """A uint8 buffer of shape lead + (last,)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {array.dtype}")
    if array.shape != tuple(lead) + (last,):
        raise ValueError(f"{name}: expected shape {tuple(lead) + (last,)}, got {array.shape}")
    return array
