"""The numba quantize kernels read rows of any float dtype and memory layout where they lie
(backend._rows): codes and norms equal the reference's on the same values converted by numpy
(``astype(float32)``, C-contiguous), bit for bit, and the public API refuses NaN, ±inf and
float64 overflow with the messages of a full check.

Layouts: every k-th row and reversed rows (a row stride), a column slice of a wider array
(rows contiguous inside, stride ≠ d), reversed columns and Fortran order (scattered: the
element-by-element path), repeated rows (stride 0), non-native byte order.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqref
from tqref import _rows
from tqref.backends.numba_cpu import NumbaBackend
from tqref.backends.numba_cpu import backend as numba_backend
from tqref.backends.reference import ReferenceBackend

from _numba_support import DIMS, KINDS, ROWS, SEEDS, assert_same, make_input, mse_plan, prod_plan

REF = ReferenceBackend()
NB = NumbaBackend()
DTYPES = st.sampled_from(["float16", "float32", "float64", ">f4", ">f8", ">f2"])
LAYOUTS = st.sampled_from(["every_third", "reversed_rows", "column_slice", "reversed_columns", "fortran",
                           "repeated"])
#: value families beyond _numba_support.KINDS: NaN or ±inf in some rows; float64 values
#: that float32 rounds (and rows beyond float32's range)
EXTRA_KINDS = st.sampled_from(["nonfinite", "float64_rounding"])


def values(kind: str, rows: int, dim: int, seed: int, dtype: str) -> np.ndarray:
    """C-contiguous (rows, dim) values of the family in ``dtype``."""
    rng = np.random.default_rng(seed)
    if kind == "nonfinite":
        x = make_input("normal", rows, dim, seed).astype(dtype)
        bad = rng.choice(rows, size=max(1, rows // 3), replace=False)
        x[bad, rng.integers(0, dim, bad.size)] = rng.choice([np.nan, np.inf, -np.inf], bad.size)
        return x
    if kind == "float64_rounding":
        x = rng.standard_normal((rows, dim)) * (1.0 + rng.uniform(-2.0**-30, 2.0**-30, (rows, dim)))
        x[::4] *= 1e300 if np.dtype(dtype).itemsize == 8 else 1.0  # beyond float32: ±inf after the cast
        return x.astype(dtype)
    with np.errstate(over="ignore"):
        return make_input(kind, rows, dim, seed).astype(dtype)


def laid_out(x: np.ndarray, layout: str) -> np.ndarray:
    """The values of x (n, d) as a view of the named layout (same values, same order)."""
    n, d = x.shape
    if layout == "every_third":
        big = np.zeros((3 * n, d), x.dtype)
        big[::3] = x
        return big[::3]
    if layout == "reversed_rows":
        return np.ascontiguousarray(x[::-1])[::-1]
    if layout == "column_slice":
        big = np.zeros((n, d + 7), x.dtype)
        big[:, 5 : 5 + d] = x
        return big[:, 5 : 5 + d]
    if layout == "reversed_columns":
        return np.ascontiguousarray(x[:, ::-1])[:, ::-1]
    if layout == "fortran":
        return np.asfortranarray(x)
    assert layout == "repeated"
    return np.broadcast_to(x[:1], x.shape)


def as_float32(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(x.astype(np.float32))


@settings(max_examples=60)
@given(kind=st.one_of(KINDS, EXTRA_KINDS), dtype=DTYPES, layout=LAYOUTS, dim=DIMS, rows=ROWS, seed=SEEDS,
       mode=st.sampled_from(["mse", "prod"]), bits=st.integers(2, 4), data_seed=st.integers(0, 2**32 - 1))
def test_codes_of_any_layout_equal_the_references(kind, dtype, layout, dim, rows, seed, mode, bits, data_seed):
    x = laid_out(values(kind, rows, dim, data_seed, dtype), layout)
    x32 = as_float32(x)
    plan = prod_plan(dim, bits, seed) if mode == "prod" else mse_plan(dim, bits, seed)
    nb = NB.prod_quantize if mode == "prod" else NB.mse_quantize
    ref = REF.prod_quantize if mode == "prod" else REF.mse_quantize
    finite = np.isfinite(x32).all(axis=1)  # the reference's domain: finite float32 values
    with np.errstate(all="ignore"):
        got, same_values = nb(x, plan), nb(x32, plan)
        want = ref(x32[finite], plan) if finite.any() else None
    names = ("packed", "norms", "signs", "gammas")
    for name, a, b in zip(names, got, same_values):  # every row: NaN and ±inf rows included
        assert_same(a, b, f"{name} of {layout} {dtype} vs its float32 copy")
    for name, a, b in zip(names, want or (), got):
        assert_same(a, b[finite], f"{name} of {layout} {dtype} vs the reference")
    assert not np.isfinite(got[1][~finite]).any()  # what the public API reports


@pytest.mark.parametrize("mode", ["mse", "prod"])
@pytest.mark.parametrize("layout", ["every_third", "column_slice", "fortran"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_public_api_refuses_as_a_full_check(mode, layout, dtype):
    """NaN, ±inf, and float64 beyond float32: the first bad row named, as for a C-contiguous
    copy (the message of _validate.as_float32_rows)."""
    q = (tqref.TurboQuantProd if mode == "prod" else tqref.TurboQuantMSE)(32, 3, backend="numba")
    bad_values = [np.nan, np.inf, -np.inf] + ([1e39] if dtype == "float64" else [])
    for bad in bad_values:
        x = make_input("normal", 40, 32, 1).astype(dtype)
        x[17, 3] = bad
        x[30, 0] = bad
        view = laid_out(x, layout)
        with pytest.raises(ValueError) as full:
            tqref.TurboQuantMSE(32, 3).quantize(np.ascontiguousarray(x))  # the reference: a full check
        with pytest.raises(ValueError, match=re.escape(str(full.value))):
            q.quantize(view)
        assert "(17,)" in str(full.value)


def test_leading_axes_of_a_transposed_view():
    """(T, H, d) stored, handed over as the (H, T, d) view: the same codes as its copy."""
    x = make_input("normal", 5 * 3, 64, 4).reshape(5, 3, 64)
    view = np.swapaxes(x, 0, 1)
    q = tqref.TurboQuantMSE(64, 3, backend="numba")
    got, want = q.quantize(view), q.quantize(np.ascontiguousarray(view))
    assert_same(got.indices, want.indices, "indices")
    assert_same(got.norms, want.norms, "norms")
    assert got.indices.flags.c_contiguous and got.norms.flags.c_contiguous  # codes are C-order data


@given(layout=LAYOUTS, dtype=DTYPES, rows=st.integers(0, 5), dim=st.integers(2, 9))
def test_source_spans_exactly_the_rows_memory(layout, dtype, rows, dim):
    """The kernels' 1-D view starts at the rows' lowest element and ends at their highest:
    nothing outside the array is ever addressed."""
    x = laid_out(values("normal", max(rows, 1), dim, 0, dtype), layout)[:rows]
    direct, _, (flat, first, rs, cs, half) = numba_backend._rows(x, dim)
    if direct.shape[0]:
        return  # C-contiguous float32: read as it is
    assert half == (np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize == 2)
    if rows == 0:
        assert flat.size == 0
        return
    assert flat.flags.c_contiguous and not flat.flags.writeable
    offsets = first + np.arange(rows)[:, None] * rs + np.arange(dim)[None, :] * cs
    assert offsets.min() == 0 and offsets.max() == flat.size - 1
    if x.dtype.isnative and x.dtype.itemsize == flat.itemsize:  # read in place: same memory
        lo, hi = np.lib.array_utils.byte_bounds(x)
        assert np.lib.array_utils.byte_bounds(flat) == (lo, hi)
        np.testing.assert_array_equal(flat[offsets].view(x.dtype), x)


def test_wrong_row_length_is_refused():
    with pytest.raises(ValueError, match=r"x: expected rows \(n, 16\), got shape \(3, 8\)"):
        NB.mse_quantize(np.zeros((3, 8), np.float64), mse_plan(16, 2, 0))


# ---------------------------------------------------------------- leading axes (tqref._rows)
def _row_outputs(rows):
    """Per-row outputs of two shapes, exact in any order of rows."""
    return rows[:, ::-1].copy(), rows.max(axis=1)


@settings(max_examples=40)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), last=st.integers(300, 700),
       perm_seed=st.integers(0, 100), cut=st.integers(1, 3), reverse=st.booleans())
def test_rows_apply_equals_the_c_order_rows(shape, last, perm_seed, cut, reverse):
    """Outputs in x's order of leading axes, whatever the layout; the operation gets views of
    x (no copy) when the leading axes collapse in some order or its blocks are long."""
    d = 3
    full = np.arange(np.prod(shape) * last * cut * d, dtype=np.float64).reshape(tuple(shape) + (last * cut, d))
    x = full[..., ::cut, :] if not reverse else full[..., ::-cut, :]  # a slice along the longest axis
    perm = list(np.random.default_rng(perm_seed).permutation(x.ndim - 1))
    x = x.transpose(perm + [x.ndim - 1])
    calls = []

    def fn(rows):
        calls.append(rows)
        return _row_outputs(rows)

    got = _rows.apply(fn, x)
    want = _row_outputs(np.ascontiguousarray(x).reshape(-1, d))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.reshape(x.shape[:-1] + w.shape[1:]))
    if (cut == 1 and not reverse) or last >= _rows.MIN_BLOCK_ROWS:  # collapses in stride order, or long blocks
        assert all(np.shares_memory(rows, full) for rows in calls)
    if cut == 1 and not reverse:
        assert len(calls) == 1


def test_rows_apply_of_no_rows():
    """A non-collapsing layout with an empty outer axis: no call, outputs of shape (…, 0 rows)."""
    x = np.zeros((2, 3, 700, 4))[:, :0, 50:650]
    got = _rows.apply(lambda rows: _row_outputs(rows), x)
    assert [a.shape for a in got] == [(2, 0, 600, 4), (2, 0, 600)]


@pytest.mark.parametrize("mode", ["mse", "prod"])
def test_cache_append_of_views(mode):
    """transformers' (B, H, T, d) = transpose of (B, T, H, d), and a slice along T of a longer
    buffer: stored codes equal those of the C-contiguous copy."""
    rng = np.random.default_rng(7)
    stored = rng.standard_normal((2, 600, 3, 32)).astype(np.float32)
    longer = rng.standard_normal((2, 3, 700, 32)).astype(np.float64)
    for k in (stored.transpose(0, 2, 1, 3), longer[:, :, 50:650], longer[:, :, 3:40]):
        v = k[..., ::-1]
        caches = [tqref.KVCache(1, 3, 32, key_bits=3, value_bits=2, mode=mode, backend="numba") for _ in range(2)]
        caches[0].append(0, k, v)
        caches[1].append(0, np.ascontiguousarray(k), np.ascontiguousarray(v))
        got, want = caches[0].stored(0), caches[1].stored(0)
        assert got.keys() == want.keys()
        for name in want:
            assert_same(got[name], want[name], name)
