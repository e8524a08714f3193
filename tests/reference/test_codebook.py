"""codebook: Lloyd–Max optimality, known values, frozen tables, tie rule, thresholds."""

import hashlib
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
    assert book.centroids[1] == pytest.approx(0.5, abs=2**-53) and book.distortion == pytest.approx(0.25, abs=1e-15)
    # d = 2: arcsine law; 1 bit centroid = E|Y| = 2/π.
    assert cb.solve(1, 2, "beta").centroids[1] == pytest.approx(2 / math.pi, abs=1e-15)
    # gaussian 1 bit: sqrt(2/π)/sqrt(d)
    assert cb.solve(1, 128, "gaussian").centroids[1] == pytest.approx(math.sqrt(2 / math.pi) / math.sqrt(128), rel=1e-15)


def _half(book):
    return book.centroids[len(book.centroids) // 2 :]


def test_frozen_tables_agree_with_the_solver_within_the_stated_tolerance():
    """The frozen tables are normative data; the solver (a derivation tool) reproduces them
    within SOLVER_RTOL / DISTORTION_RTOL on any CPU. Not bit for bit: the tables were solved
    with an earlier quadrature (codebook_tables.py)."""
    table = codebook_tables._load()
    assert len(table) >= 8 * 18 + 8
    worst = 0.0
    for (law, bits, dim), (half, distortion) in table.items():
        if law == "gaussian":
            fresh, fresh_d = cb._gaussian_half(bits), cb.solve(bits, 2, "gaussian").distortion
        else:
            book = cb.solve(bits, dim, law)
            fresh, fresh_d = _half(book), book.distortion
        rel = float(np.max(np.abs(fresh - half) / np.abs(half)))
        worst = max(worst, rel)
        assert rel <= codebook_tables.SOLVER_RTOL, (law, bits, dim, rel)
        assert abs(fresh_d - distortion) <= codebook_tables.DISTORTION_RTOL * distortion, (law, bits, dim)
    assert worst > 0  # the tables really are older data, not re-read solver output


def test_shipped_tables_are_normative_bit_for_bit():
    """The frozen tables are data a port loads: any change to their bytes is a format change."""
    data = (ROOT / "tqref" / "data" / "codebooks.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == "a1111272518e1ecd8da96ff35b92cc359c98f9d9c0a4854ed591fc63e17ccd3b"


def test_freeze_script_check_passes_and_keeps_entries_byte_for_byte(tmp_path):
    script = str(ROOT / "scripts" / "freeze_codebooks.py")
    result = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    # writing keeps every shipped entry: rewriting the file changes no byte
    shipped = (ROOT / "tqref" / "data" / "codebooks.json").read_text()
    copy = tmp_path / "codebooks.json"
    copy.write_text(shipped)
    subprocess.run([sys.executable, script, "--output", str(copy)], check=True, capture_output=True, cwd=ROOT)
    assert copy.read_text() == shipped
    # a tampered entry fails the check
    bad = shipped.replace('"0x1.9884533d43651p-1"', '"0x1.9884533e43651p-1"', 1)  # 1.5e-11 relative
    assert bad != shipped
    copy.write_text(bad)
    result = subprocess.run([sys.executable, script, "--check", "--output", str(copy)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 1 and "gaussian b=1 d=1 half" in result.stdout


def test_lloyd_max_uses_frozen_tables_and_solves_other_dims():
    half, distortion = codebook_tables.lookup(3, 128, "beta")
    frozen = cb.lloyd_max(3, 128)
    assert _half(frozen).tobytes() == half.tobytes() and frozen.distortion == distortion
    solved = cb.solve(3, 128)
    assert np.allclose(_half(solved), half, rtol=codebook_tables.SOLVER_RTOL, atol=0)
    odd = cb.lloyd_max(3, 77)  # not frozen: solved, with the portable solver's exact bits
    assert odd.dim == 77 and odd.centroids.tobytes() == cb.solve(3, 77).centroids.tobytes()


# Known answers of the portable solver at dims that are not frozen: exact float64 bits, the
# same on every CPU and NumPy SIMD dispatch (tqref/reference/portable_math.py). A machine that
# prints other bits has found an operation that is not portable.
SOLVER_KNOWN_BITS = {  # sha256(centroids ‖ distortion ‖ shrinkage as float64 bytes)[:16]
    (1, 2): "d5c4355218060fec", (2, 130): "3cae32d07411d31b", (3, 5): "13f2025daddba804",
    (3, 5000): "2b5a01261785682e", (4, 77): "4408fed312072928", (8, 200): "cb789033af1bc8f3",
}


@pytest.mark.parametrize("bits,dim", sorted(SOLVER_KNOWN_BITS))
def test_portable_solver_known_bits(bits, dim):
    book = cb.solve(bits, dim, "beta")
    digest = hashlib.sha256(book.centroids.tobytes() + np.float64(book.distortion).tobytes()
                            + np.float64(cb.shrinkage(book)).tobytes()).hexdigest()[:16]
    assert digest == SOLVER_KNOWN_BITS[(bits, dim)]


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
