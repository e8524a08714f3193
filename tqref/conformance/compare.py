"""Compare an output with its expected value; describe the first mismatching element.

Rules (spec.py):

* ``exact`` — integers equal; floats bit-identical, except that any NaN equals any NaN and
  +0.0 equals −0.0 (the sign of a zero is not part of the contract).
* ``tolerance`` — ``tqref.tolerance.within``: |actual − expected| ≤ tol element-wise (as
  float64); NaN only matches NaN, an infinity only the same infinity. The tolerance itself is
  stated by each test, derived by the rule of ``tqref.tolerance``.

>>> first_mismatch("packed", np.array([1, 2], np.uint8), np.array([1, 3], np.uint8))
'packed[1]: expected 2 (0x02), got 3 (0x03)'
"""

from __future__ import annotations

import numpy as np

from .. import tolerance
from . import encoding


def _fmt(value, dtype: np.dtype) -> str:
    name = {np.dtype("<f2"): "float16", np.dtype("<f4"): "float32", np.dtype("<f8"): "float64"}.get(
        dtype.newbyteorder("<"))
    if name:
        dec = encoding.decimals(np.asarray([value], dtype=dtype), name)[0]
        return f"{dec} (hex {np.asarray(value, dtype=dtype.newbyteorder('<')).tobytes().hex()})"
    width = dtype.itemsize * 2
    return f"{int(value)} (0x{int(value) & ((1 << (8 * dtype.itemsize)) - 1):0{width}x})"


def _where(name: str, shape: tuple, flat_index: int) -> str:
    if not shape:
        return name
    idx = np.unravel_index(flat_index, shape)
    return f"{name}[{', '.join(str(int(i)) for i in idx)}]"


def first_mismatch(name: str, expected: np.ndarray, actual, rule: str = "exact", tol: float | None = None):
    """None if ``actual`` matches, else one line naming the first differing element."""
    expected = np.asarray(expected)
    try:
        actual = np.asarray(actual)
    except Exception as exc:  # noqa: BLE001 - any malformed value is a mismatch, not a crash
        return f"{name}: not an array ({type(exc).__name__})"
    if actual.size != expected.size:
        return f"{name}: expected {expected.size} element(s) (shape {list(expected.shape)}), got {actual.size}"
    if actual.dtype.kind not in "fiub":
        return f"{name}: expected numbers, got dtype {actual.dtype}"
    exp = expected.reshape(-1)
    if expected.dtype.kind == "f":
        act = actual.reshape(-1).astype(np.float64) if actual.dtype != expected.dtype else actual.reshape(-1)
        if rule == "tolerance":
            bad = np.flatnonzero(~tolerance.within(act, exp, tol))
            if bad.size:
                i = int(bad[0])
                diff = abs(float(act[i]) - float(exp[i]))
                return (f"{_where(name, expected.shape, i)}: expected {_fmt(exp[i], exp.dtype)}, got "
                        f"{_fmt(act[i], act.dtype)}; |difference| {diff:.3g} > tolerance {tol:.3g}"
                        f" ({bad.size} of {exp.size} elements outside)")
            return None
        act_cast = act.astype(exp.dtype)
        with np.errstate(invalid="ignore"):
            lossless = (act_cast.astype(np.float64) == act.astype(np.float64)) | np.isnan(act.astype(np.float64))
        same_bits = exp.view(f"u{exp.dtype.itemsize}") == act_cast.view(f"u{exp.dtype.itemsize}")
        ok = lossless & (same_bits | (np.isnan(exp) & np.isnan(act_cast)) | ((exp == 0) & (act_cast == 0)))
        bad = np.flatnonzero(~ok)
        if bad.size:
            i = int(bad[0])
            return (f"{_where(name, expected.shape, i)}: expected {_fmt(exp[i], exp.dtype)}, got "
                    f"{_fmt(act[i], act.dtype)} ({bad.size} of {exp.size} elements differ)")
        return None
    act = actual.reshape(-1)
    if act.dtype.kind == "f":
        return f"{name}: expected integers, got dtype {actual.dtype}"
    # compare as Python ints so that uint64 values above 2**63 and negative ints never wrap
    ok = np.array([int(e) == int(a) for e, a in zip(exp.tolist(), act.tolist())], dtype=bool)
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        return (f"{_where(name, expected.shape, i)}: expected {_fmt(exp[i], exp.dtype)}, got "
                f"{_fmt(act[i], exp.dtype)}" + (f" ({bad.size} of {exp.size} elements differ)" if bad.size > 1 else ""))
    return None
