"""Public quantizers: shapes, dtypes, determinism, edge inputs and clear errors."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tqref
from tqref.reference import mse, rotation

rng = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(128,), (3, 128), (2, 5, 128)])
def test_mse_shapes_and_dtypes(dtype, shape):
    q = tqref.TurboQuantMSE(128, 3, seed=1)
    x = rng.standard_normal(shape).astype(dtype)
    codes = q.quantize(x)
    assert codes.indices.dtype == np.uint8 and codes.indices.shape == shape[:-1] + (48,)
    assert codes.norms.dtype == np.float32 and codes.norms.shape == shape[:-1]
    out = q.dequantize(codes)
    assert out.dtype == np.float32 and out.shape == shape


def test_prod_shapes():
    q = tqref.TurboQuantProd(96, 4, seed=2, projection="rademacher")
    x = rng.standard_normal((7, 96)).astype(np.float32)
    codes = q.quantize(x)
    assert codes.mse.indices.shape == (7, 36) and codes.signs.shape == (7, 12)
    assert codes.residual_norms.shape == (7,) and q.dequantize(codes).shape == (7, 96)
    # the mse stage decodes with a (bits − 1)-bit TurboQuantMSE of the same seed
    stage = tqref.TurboQuantMSE(96, 3, seed=2)
    assert np.array_equal(stage.dequantize(codes.mse), mse.dequantize(codes.mse.indices, codes.mse.norms, stage.plan))


def test_inner_product_shapes():
    q = tqref.TurboQuantMSE(64, 2)
    codes = q.quantize(rng.standard_normal((10, 64)))
    assert q.inner_product(rng.standard_normal(64), codes).shape == (10,)
    assert q.inner_product(rng.standard_normal((3, 4, 64)), codes).shape == (3, 4, 10)
    p = tqref.TurboQuantProd(64, 3)
    pc = p.quantize(rng.standard_normal((2, 5, 64)))
    assert p.inner_product(rng.standard_normal((3, 64)), pc).shape == (3, 2, 5)


def test_deterministic_and_seed_dependent():
    x = rng.standard_normal((50, 128)).astype(np.float32)
    a = tqref.TurboQuantMSE(128, 3, seed=4).quantize(x)
    b = tqref.TurboQuantMSE(128, 3, seed=4).quantize(x)
    c = tqref.TurboQuantMSE(128, 3, seed=6).quantize(x)  # same parity as 4
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_zero_vectors_decode_to_zero():
    for q in (tqref.TurboQuantMSE(80, 3), tqref.TurboQuantProd(80, 3)):
        x = np.zeros((2, 80), np.float32)
        x[1, 5] = 1.0
        out = q.dequantize(q.quantize(x))
        assert np.all(out[0] == 0)


@given(st.integers(-140, 120), st.integers(0, 2**32 - 1))
def test_power_of_two_scaling_is_exact(exponent, seed):
    """Codes of x·2^k equal codes of x (the split norm scales exactly), from subnormal to
    huge magnitudes; norms scale by exactly 2^k while representable."""
    x = np.random.default_rng(seed).standard_normal((3, 40)).astype(np.float32)
    scaled = np.ldexp(x, exponent).astype(np.float32)
    if not np.all(np.isfinite(scaled)) or np.any((scaled == 0) != (x == 0)):
        return  # the scaled input itself lost information
    if np.any(np.abs(scaled[scaled != 0]) < np.finfo(np.float32).tiny):
        return  # subnormal inputs lose mantissa bits before we see them
    q = tqref.TurboQuantMSE(40, 4)
    a, b = q.quantize(x), q.quantize(scaled)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(np.ldexp(a.norms, exponent).astype(np.float32), b.norms)


def test_huge_and_tiny_vectors_quantize_like_unit_ones():
    x = rng.standard_normal((1, 64)).astype(np.float32)
    q = tqref.TurboQuantMSE(64, 3)
    unit = q.quantize(x)
    for scale in (np.float32(1e30), np.float32(1e-30)):
        assert np.array_equal(q.quantize(x * scale).indices, unit.indices)
    sub = np.zeros((1, 64), np.float32)
    sub[0, :3] = np.float32(1e-45)  # subnormal entries still have a direction
    out = q.dequantize(q.quantize(sub))
    assert np.all(np.isfinite(out)) and np.any(out != 0)


def test_norm_overflow_is_an_error():
    x = np.full((2, 64), 3e38, np.float32)
    x[0] = 1.0
    with pytest.raises(ValueError, match=r"norm is finite in float32, got inf at row \(1,\)"):
        tqref.TurboQuantMSE(64, 3).quantize(x)


def test_float16_norms():
    q = tqref.TurboQuantMSE(32, 3, norm_dtype="float16")
    x = rng.standard_normal((4, 32)).astype(np.float32)
    codes = q.quantize(x)
    assert codes.norms.dtype == np.float16
    assert np.allclose(codes.norms.astype(np.float32), np.linalg.norm(x, axis=1), rtol=2**-11)
    assert q.dequantize(codes).dtype == np.float32
    with pytest.raises(ValueError, match="float16"):
        q.quantize(np.full((1, 32), 1e5, np.float32))
    with pytest.raises(ValueError, match="float16"):
        q.quantize(np.full((1, 32), 1e-9, np.float32))
    with pytest.raises(ValueError, match=r"float16's normal range"):
        q.quantize(np.full((1, 32), 1e-6, np.float32))  # norm would be a float16 subnormal


@pytest.mark.parametrize("kwargs,match", [
    (dict(dim=1, bits=3), r"dim: expected an integer >= 2, got 1"),
    (dict(dim=64, bits=0), r"bits: expected an integer in \[1, 8\], got 0"),
    (dict(dim=64, bits=9), r"bits: expected an integer in \[1, 8\], got 9"),
    (dict(dim=64, bits=3, rotation="dct"), r"rotation: expected one of \('hadamard', 'haar'\), got 'dct'"),
    (dict(dim=64, bits=3, codebook="uniform"), r"codebook: expected one of"),
    (dict(dim=64, bits=3, norm_dtype="float64"), r"norm_dtype: expected one of"),
    (dict(dim=64.0, bits=3), r"dim: expected an integer"),
    (dict(dim=64, bits=3, backend="tpu"), r"backend: expected one of"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tqref.TurboQuantMSE(**kwargs)


def test_prod_constructor_errors():
    with pytest.raises(ValueError, match=r"bits: expected an integer in \[2, 9\], got 1"):
        tqref.TurboQuantProd(64, 1)
    with pytest.raises(ValueError, match=r"projection: expected one of"):
        tqref.TurboQuantProd(64, 3, projection="sparse")


def test_input_errors():
    q = tqref.TurboQuantMSE(16, 2)
    with pytest.raises(ValueError, match=r"x: expected last axis of length dim=16, got 15"):
        q.quantize(np.zeros((2, 15)))
    with pytest.raises(ValueError, match=r"x: expected dtype float16, float32 or float64, got int64"):
        q.quantize(np.zeros((2, 16), np.int64))
    x = np.zeros((3, 4, 16))
    x[2, 1, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in row \(2, 1\)"):
        q.quantize(x)
    x[2, 1, 5] = np.inf
    with pytest.raises(ValueError, match=r"row \(2, 1\)"):
        q.quantize(x)
    with pytest.raises(ValueError, match=r"float32 range.*row \(0,\)"):
        q.quantize(np.full((1, 16), 1e300))
    with pytest.raises(ValueError, match=r"query: expected last axis"):
        q.inner_product(np.zeros(8), q.quantize(np.ones((1, 16))))


def test_codes_errors():
    q = tqref.TurboQuantMSE(16, 2)
    codes = q.quantize(np.ones((3, 16)))
    with pytest.raises(ValueError, match=r"another configuration \(seed: expected 0, got 1\)"):
        q.dequantize(tqref.TurboQuantMSE(16, 2, seed=1).quantize(np.ones((3, 16))))
    with pytest.raises(ValueError, match=r"codes.indices: expected shape \(3, 4\), got \(3, 3\)"):
        q.dequantize(dataclasses.replace(codes, indices=codes.indices[:, :3]))
    with pytest.raises(ValueError, match=r"codes.indices: expected dtype uint8"):
        q.dequantize(dataclasses.replace(codes, indices=codes.indices.astype(np.int16)))
    with pytest.raises(ValueError, match=r"codes.norms: expected dtype float32"):
        q.dequantize(dataclasses.replace(codes, norms=codes.norms.astype(np.float64)))
    p = tqref.TurboQuantProd(16, 3)
    pc = p.quantize(np.ones((3, 16)))
    with pytest.raises(ValueError, match=r"codes.signs: expected shape \(3, 2\)"):
        p.dequantize(dataclasses.replace(pc, signs=pc.signs[:2]))
    with pytest.raises(ValueError, match="another configuration"):
        p.dequantize(tqref.TurboQuantProd(16, 3, projection="orthogonal").quantize(np.ones((3, 16))))


@pytest.mark.parametrize("rotation_kind", ["hadamard", "haar"])
@pytest.mark.parametrize("dim", [2, 3, 17, 80, 160])
def test_every_dim_works(rotation_kind, dim):
    q = tqref.TurboQuantProd(dim, 4, rotation=rotation_kind, projection="orthogonal")
    x = rng.standard_normal((20, dim)).astype(np.float32)
    err = np.sum((q.dequantize(q.quantize(x)) - x) ** 2) / np.sum(x**2)
    assert err < 0.5


def test_dequantize_is_the_written_formula():
    q = tqref.TurboQuantMSE(80, 3, seed=9)
    x = rng.standard_normal((4, 80)).astype(np.float32)
    codes = q.quantize(x)
    y_hat = q.plan.codebook.centroids_f32[tqref.unpack_bits(codes.indices, 3, 80)]
    expected = rotation.hadamard_inverse(y_hat, 9) * codes.norms[:, None]
    assert np.array_equal(q.dequantize(codes), expected)


def test_backends_listing():
    assert "reference" in tqref.backends()
