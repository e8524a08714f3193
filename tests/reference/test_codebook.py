"""codebook: Lloyd–Max optimality, known values, frozen tables, tie rule, thresholds."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tqref.reference import codebook as cb
from tqref.reference import codebook_tables

ROOT = Path(__file__).resolve().parents[2]


def conditional_means_by_midpoint_rule(book, panels=200_000):
    """Independent check of the centroid condition by a dense midpoint rule on the density."""
    d = book.dim
    end = 1.0 if book.law == "beta" else 12.0 / np.sqrt(d)  # Gaussian: ±12σ holds all the mass
    edges = np.concatenate(([-end], book.boundaries, [end]))
    means = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        t = lo + (np.arange(panels) + 0.5) * (hi - lo) / panels
        if book.law == "beta":
            f = np.power(np.clip(1 - t * t, 0, None), (d - 3) / 2)
        else:
            f = np.exp(-0.5 * d * t * t)
        means.append(np.sum(t * f) / np.sum(f))
    return np.array(means)


@pytest.mark.parametrize("law", ["beta", "gaussian"])
@pytest.mark.parametrize("bits,dim", [(1, 4), (2, 16), (3, 128), (4, 80), (5, 1536), (8, 64)])
def test_lloyd_max_conditions(law, bits, dim):
    book = cb.solve(bits, dim, law)
    c, b = book.centroids, book.boundaries
    assert len(c) == 2**bits and len(b) == 2**bits - 1
    assert np.all(np.diff(c) > 0)
    assert np.allclose(c, -c[::-1], atol=0, rtol=0)  # exactly symmetric
    assert b[len(b) // 2] == 0.0
    assert np.allclose(b, 0.5 * (c[:-1] + c[1:]), rtol=0, atol=1e-17)
    # centroid = conditional mean, checked by an independent quadrature (its own error ~1e-9)
    assert np.allclose(conditional_means_by_midpoint_rule(book), c, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bits,dim", [(3, 2), (8, 2), (4, 16), (8, 128), (8, 4096), (6, 10000)])
def test_solver_fixed_point_to_1e12(bits, dim):
    """The Lloyd map leaves the solution fixed to 1e-12 (the issue's accuracy bar)."""
    book = cb.solve(bits, dim, "beta")
    half = book.centroids[len(book.centroids) // 2 :]
    again, _, _ = cb._lloyd_step(cb._BetaLaw(dim), half)
    assert np.max(np.abs(again - half)) < 1e-12


# Independently known values (paper-anchors.md §1.3): d·C for Gaussian and exact marginals.
KNOWN = [
    ("gaussian", 1, 128, 0.36338), ("gaussian", 2, 128, 0.11748), ("gaussian", 3, 128, 0.034548),
    ("gaussian", 4, 128, 0.009501), ("beta", 1, 128, 0.36089), ("beta", 2, 128, 0.11600),
    ("beta", 3, 128, 0.033966), ("beta", 4, 128, 0.009315), ("beta", 3, 64, 0.033391),
    ("beta", 4, 16, 0.008094), ("beta", 1, 16, 0.34319),
]


@pytest.mark.parametrize("law,bits,dim,value", KNOWN)
def test_known_distortions(law, bits, dim, value):
    assert cb.lloyd_max(bits, dim, law).distortion == pytest.approx(value, rel=2e-4)


def test_closed_forms_at_tiny_dims():
    # d = 3: the marginal is uniform on [-1, 1]; 1 bit gives centroids ±1/2, d·C = 3/12.
    book = cb.solve(1, 3, "beta")
    assert book.centroids.tolist() == [-0.5, 0.5] and book.distortion == pytest.approx(0.25, abs=1e-15)
    # d = 2: arcsine law; 1 bit centroid = E|Y| = 2/π.
    assert cb.solve(1, 2, "beta").centroids[1] == pytest.approx(2 / math.pi, abs=1e-15)
    # gaussian 1 bit: sqrt(2/π)/sqrt(d)
    assert cb.solve(1, 128, "gaussian").centroids[1] == pytest.approx(math.sqrt(2 / math.pi) / math.sqrt(128), rel=1e-15)


def test_frozen_tables_equal_the_solver():
    table = codebook_tables._load()
    assert len(table) >= 8 * 18 + 8
    for (law, bits, dim), (half, distortion) in table.items():
        if law == "gaussian":
            assert np.array_equal(half, cb._gaussian_half(bits))
            continue
        solved = cb.solve(bits, dim, law)
        assert np.allclose(solved.centroids[len(solved.centroids) // 2 :], half, rtol=1e-15, atol=0)


def test_freeze_script_reproduces_the_shipped_file_byte_for_byte():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "freeze_codebooks.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lloyd_max_uses_frozen_tables_and_solves_other_dims():
    assert cb.lloyd_max(3, 128).centroids.tolist() == cb.solve(3, 128).centroids.tolist()
    odd = cb.lloyd_max(3, 77)  # not frozen
    assert odd.dim == 77 and odd.distortion == pytest.approx(cb.solve(3, 77).distortion)


def test_shrinkage_is_one_minus_distortion_for_the_exact_law():
    for bits in (1, 2, 3, 4):
        book = cb.lloyd_max(bits, 128, "beta")
        assert cb.shrinkage(book) == pytest.approx(1 - book.distortion, abs=1e-9)
    # the Gaussian codebook at finite d is not its law's optimum: α is computed, not 1 − D
    g = cb.lloyd_max(2, 16, "gaussian")
    assert abs(cb.shrinkage(g) - (1 - g.distortion)) > 1e-4


@pytest.mark.parametrize("bad", [dict(bits=0, dim=8), dict(bits=9, dim=8), dict(bits=2, dim=1), dict(bits=2, dim=8, law="laplace")])
def test_invalid_arguments(bad):
    with pytest.raises(ValueError):
        cb.lloyd_max(**bad)


def test_tie_rule_lower_cell_and_nan():
    b = np.array([-0.5, 0.0, 0.5])
    v = np.array([-0.5, -0.0, 0.0, 0.5, np.nextafter(0.5, 1), np.nan, -np.inf, np.inf])
    assert cb.nearest_index(v, b).tolist() == [0, 1, 1, 2, 3, 0, 0, 3]
    v32 = v.astype(np.float32)
    v32[4] = np.nextafter(np.float32(0.5), np.float32(1))
    assert cb.nearest_index(v32, b).tolist() == [0, 1, 1, 2, 3, 0, 0, 3]


@given(st.integers(1, 8), st.sampled_from([16, 80, 128, 1536]), st.integers(-3, 3), st.data())
def test_float32_thresholds_decide_exactly_like_float64_boundaries(bits, dim, step, data):
    """Values at, and a few ulps around, every boundary give the same index both ways."""
    book = cb.lloyd_max(bits, dim)
    k = data.draw(st.integers(0, len(book.boundaries) - 1))
    v = np.float32(book.boundaries[k])
    for _ in range(abs(step)):
        v = np.nextafter(v, np.float32(np.sign(step) * np.inf))
    values = np.array([v, -v], dtype=np.float32)
    assert np.array_equal(cb.nearest_index(values, book.boundaries),
                          cb.nearest_index(values.astype(np.float64), book.boundaries))


def test_thresholds_round_down():
    book = cb.lloyd_max(4, 128)
    t = book.thresholds_f32
    assert np.all(t.astype(np.float64) <= book.boundaries)
    assert np.all(np.nextafter(t, np.float32(np.inf)).astype(np.float64) > book.boundaries)
