"""Lloyd–Max scalar codebooks for a rotated unit-vector coordinate (paper §3.1, eq. (4)).

After a random rotation, each coordinate Y of a unit vector in R^d has the density
(paper Lemma 1)::

    f_d(y) ∝ (1 − y²)^((d−3)/2)  on [−1, 1]         ("beta" law, exact)

which tends to N(0, 1/d) (the "gaussian" law). A b-bit codebook has 2^b centroids
c_1 < … < c_K minimising E|Y − c(Y)|²: every centroid is the conditional mean of its cell
and every boundary is the midpoint of its neighbours (the Lloyd–Max conditions). Both laws
are symmetric, so tqref solves for the positive half with the middle boundary at exactly 0.

Cell integrals (docs/algorithm.md "Codebooks"): every cell by 40-point Gauss–Legendre,
for the beta law in θ = asin t (where the measure is cos^(d−2) θ dθ, smooth up to t = 1;
the last cell is cut where the density falls below e^-800 and split into 16 panels), for
the Gaussian law in t with the unbounded last cell by closed forms; conditional means are
formed as lo + ∫(t − lo) f / ∫ f so narrow cells keep full relative accuracy. Totals and
tails use closed forms:

* tail mass under (1 − t²)^a, a = (d−3)/2: J_a(x) = ∫_x^1, with J_{−1/2} = acos x,
  J_0 = 1 − x and the upward recurrence J_a = (2a J_{a−1} − x (1 − x²)^a) / (2a + 1) (its
  cancellation stays mild because Lloyd–Max boundaries sit at x ≲ 5/√d); the total is J_a(0);
* first moment: ∫_l^u t (1 − t²)^a dt = ((1 − l²)^{a+1} − (1 − u²)^{a+1}) / (2a + 2);
* Gaussian: masses from erfc, first moments from the density.

The solver starts from the Gaussian solution scaled by 1/√d (quantiles for the Gaussian law
itself), takes 20 Lloyd steps, then runs Newton's method on the fixed point (tridiagonal
Jacobian, quadratic convergence, damped to keep the centroids ordered) until its steps
reach the rounding floor, and checks the Lloyd–Max conditions hold to 1e-12; it never
stalls at large d, where plain Lloyd crawls.

Codebooks are on the unit-vector scale (centroids ≈ ±N(0,1) values / √d).

Quantization decision (the tie rule, normative): the index of a value v is the number of
boundaries *strictly less* than v — a value exactly on a boundary goes to the lower cell, so
±0.0 lands in cell K/2 − 1. v is a float32 compared exactly (promoted to float64) with the
float64 boundaries.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from . import portable_math as pm

LAWS = ("beta", "gaussian")
MIN_BITS = 1
MAX_BITS = 8
MIN_DIM = 2

_WARMUP_LLOYD = 20
_NEWTON_TOL = 4e-16  # stop when Newton steps are this small relative to the largest centroid
_ACCEPT_TOL = 1e-12  # required max|T(c) − c| relative to the largest centroid
_MAX_NEWTON = 60


@dataclasses.dataclass(frozen=True)
class Codebook:
    """A symmetric Lloyd–Max codebook on the unit-vector scale.

    Attributes:
        bits: b, 1..8.
        dim: d, the dimension of the rotated unit vector.
        law: "beta" (exact marginal) or "gaussian" (N(0, 1/d)).
        centroids: float64 (2^b,), increasing.
        boundaries: float64 (2^b − 1,), midpoints of neighbouring centroids; the middle one is 0.
        distortion: d · E|Y − c(Y)|² under the codebook's own law (normalised MSE of a unit
            vector, the paper's D_mse).
    """

    bits: int
    dim: int
    law: str
    centroids: np.ndarray
    boundaries: np.ndarray
    distortion: float

    @property
    def centroids_f32(self) -> np.ndarray:
        """Reconstruction values as float32 (round to nearest), the values decoders use."""
        return self.centroids.astype(np.float32)

    @property
    def thresholds_f32(self) -> np.ndarray:
        """Boundaries rounded *down* to float32: (K − 1,) float32.

        For every float32 v, ``v > boundary`` (exact, in float64) holds iff
        ``v > thresholds_f32`` (in float32): if t is the largest float32 ≤ b, no float32
        lies in (t, b]. Kernels compare in float32 with these and stay bit-exact.
        """
        return float32_round_down(self.boundaries)


def float32_round_down(values: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each float64 value (round toward −∞)."""
    t = np.asarray(values, dtype=np.float64).astype(np.float32)
    return np.where(t.astype(np.float64) > values, np.nextafter(t, np.float32(-np.inf)), t)


def nearest_index(values: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Cell index of each value: the count of boundaries strictly less than it.

    ``values``: float array (...,), compared exactly as float64; ``boundaries``: float64
    (K − 1,) increasing. Returns uint8 (...,) (int64 if K > 256). Ties go to the lower cell;
    NaN maps to 0 (a documented convention the runtime profiles need; the public quantizers
    reject NaN before it gets here).

    >>> nearest_index(np.array([-1.0, 0.0, 0.5, 2.0]), np.array([-0.5, 0.0, 0.5])).tolist()
    [0, 1, 2, 3]
    """
    v = np.asarray(values)
    if v.dtype == np.float32 and len(boundaries) <= _COUNT_LIMIT:
        # Few boundaries: count them directly, in float32 (exact, see Codebook.thresholds_f32).
        idx = np.zeros(v.shape, dtype=np.uint8)
        for t in float32_round_down(boundaries):
            idx += v > t
        return idx
    if v.dtype == np.float32:
        idx = np.searchsorted(float32_round_down(boundaries), v, side="left")
    else:
        v = v.astype(np.float64)
        idx = np.searchsorted(np.asarray(boundaries, dtype=np.float64), v, side="left")
    idx = np.where(np.isnan(v), 0, idx)
    return idx.astype(np.uint8 if len(boundaries) < 256 else np.int64)


# --------------------------------------------------------------------------- cell integrals


class _BetaLaw:
    """Unnormalised density (1 − t²)^a, a = (d − 3)/2, on [0, 1] (positive half)."""

    def __init__(self, dim: int):
        self.a2 = dim - 3  # 2a, an integer
        self.upper = 1.0

    def density(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return pm.pow_half((1.0 - x) * (1.0 + x), self.a2)

    def mass_to_upper(self, x):
        """J_a(x) = ∫_x^1 (1 − t²)^a dt by the upward recurrence from a = −1/2 or a = 0."""
        x = np.asarray(x, dtype=np.float64)
        one_minus = (1.0 - x) * (1.0 + x)
        if self.a2 % 2:  # a = k − 1/2: start at J_{−1/2} = acos x = π/2 − asin x
            value, a2 = pm.HALF_PI - pm.asin(x), -1
        else:  # a integer: start at J_0 = 1 − x
            value, a2 = 1.0 - x, 0
        while a2 < self.a2:
            a2 += 2
            a = a2 / 2.0
            value = (2.0 * a * value - x * pm.pow_half(one_minus, a2)) / (2.0 * a + 1.0)
        return value

    def cells(self, lo, hi):
        """(masses, means) of cells [lo, hi] ⊂ [0, 1] by Gauss–Legendre in θ = asin t.

        With t = sin θ the measure (1 − t²)^a dt becomes cos^(d−2) θ dθ, an entire function,
        so the rule is exact to rounding even for the cell that ends at t = 1 (d = 2's
        arcsine singularity disappears). t − lo = 2 cos((θ + θ_lo)/2) sin((θ − θ_lo)/2).
        """
        th_lo, th_hi = pm.asin(lo), pm.asin(np.minimum(hi, 1.0))
        # The last cell reaches θ = π/2 but its mass sits within a few 1/√d of θ_lo: cut
        # it where cos^(d−2) has fallen below e^-800 and split it into _TAIL_PANELS panels.
        width = 40.0 / math.sqrt(max(self.a2 + 1, 1))
        cut = min(float(th_hi[-1]), float(th_lo[-1]) + width)
        panels = th_lo[-1] + (cut - th_lo[-1]) * (np.arange(_TAIL_PANELS + 1) / _TAIL_PANELS)
        panels[-1] = cut
        p_lo = np.concatenate((th_lo[:-1], panels[:-1]))
        p_hi = np.concatenate((th_hi[:-1], panels[1:]))
        owner_lo = np.concatenate((th_lo[:-1], np.full(_TAIL_PANELS, th_lo[-1])))
        half, offset, weights = _gauss_legendre(p_lo, p_hi)
        theta = p_lo[:, None] + offset
        f = pm.ipow(pm.sin_cos(theta)[1], self.a2 + 1)
        dt = 2.0 * pm.sin_cos(0.5 * (theta + owner_lo[:, None]))[1] * pm.sin_cos(0.5 * (theta - owner_lo[:, None]))[0]
        masses = half * pm.ordered_sum(f * weights)
        moments = half * pm.ordered_sum((f * dt) * weights)
        m = len(lo)
        masses = np.append(masses[: m - 1], pm.ordered_sum(masses[m - 1 :]))
        moments = np.append(moments[: m - 1], pm.ordered_sum(moments[m - 1 :]))
        return masses, lo + moments / masses

    def first_moment(self, lo, hi):
        """∫_lo^hi t (1 − t²)^a dt for 0 ≤ lo ≤ hi ≤ 1."""
        a1 = self.a2 / 2.0 + 1.0
        p = lambda x: pm.pow_half((1.0 - x) * (1.0 + x), self.a2 + 2)  # noqa: E731
        return (p(np.asarray(lo, dtype=np.float64)) - p(np.asarray(hi, dtype=np.float64))) / (2.0 * a1)

    def second_moment_total(self) -> float:
        """∫_0^1 t² (1 − t²)^a dt divided by ∫_0^1 (1 − t²)^a dt = E[Y²] = 1/d."""
        return 1.0 / (self.a2 + 3)


class _GaussianLaw:
    """Unnormalised density exp(−t²/2) of N(0, 1) on [0, ∞); rescaled by 1/√d afterwards."""

    upper = math.inf

    def density(self, x):
        return np.exp(-0.5 * np.asarray(x, dtype=np.float64) ** 2)

    def mass_to_upper(self, x):
        erfc = np.vectorize(math.erfc, otypes=[np.float64])
        return math.sqrt(math.pi / 2.0) * erfc(np.asarray(x, dtype=np.float64) / math.sqrt(2.0))

    def cells(self, lo, hi):
        """(masses, means) of cells [lo, hi]: Gauss–Legendre in t − lo; the last, unbounded
        cell by the closed forms (erfc mass, density difference first moment)."""
        b_lo, b_hi = lo[:-1], hi[:-1]
        half, offset, weights = _gauss_legendre(b_lo, b_hi)
        f = self.density(b_lo[:, None] + offset)
        masses = half * pm.ordered_sum(f * weights)
        means = b_lo + half * pm.ordered_sum((f * offset) * weights) / masses
        tail_mass = self.mass_to_upper(lo[-1:])[0]
        tail_mean = self.first_moment(lo[-1], hi[-1]) / tail_mass
        return np.append(masses, tail_mass), np.append(means, tail_mean)

    def first_moment(self, lo, hi):
        """∫_lo^hi t exp(−t²/2) dt."""
        return self.density(lo) - self.density(hi)

    def second_moment_total(self) -> float:
        return 1.0


_COUNT_LIMIT = 15  # nearest_index counts up to this many boundaries, else binary search
_GAUSS_LEGENDRE_POINTS = 40
_TAIL_PANELS = 16


def _gauss_legendre(lo, hi):
    """Gauss–Legendre nodes on each panel [lo, hi] (arrays (m,)): returns (half-widths (m,),
    node offsets from lo (m, 40), weights (40,)); ∫ f ≈ half · (f(lo + offset) @ weights)."""
    nodes, weights = pm.gauss_legendre(_GAUSS_LEGENDRE_POINTS)
    half = 0.5 * (hi - lo)
    offset = half[:, None] * (1.0 + nodes[None, :])
    return half, offset, weights


def _lloyd_step(law, c: np.ndarray):
    """One Lloyd update of the positive half ``c`` (m,): returns (new c, edges, masses)."""
    edges = np.concatenate(([0.0], 0.5 * (c[:-1] + c[1:]), [law.upper]))
    masses, means = law.cells(edges[:-1], edges[1:])
    return means, edges, masses


def _newton_step(law, c: np.ndarray):
    """Newton direction for F(c) = T(c) − c, T the Lloyd map (tridiagonal Jacobian).

    Returns (step, residual max|T(c) − c|).
    """
    t, edges, masses = _lloyd_step(law, c)
    m = len(c)
    g = law.density(edges[1:-1])  # density at the interior boundaries b_1 .. b_{m-1}
    upper = g * (edges[1:-1] - t[:-1]) / masses[:-1]  # dT_i/db_i, i < m - 1
    lower = g * (t[1:] - edges[1:-1]) / masses[1:]  # dT_i/db_{i-1}, i > 0
    diag = np.full(m, -1.0)
    diag[:-1] = diag[:-1] + 0.5 * upper
    diag[1:] = diag[1:] + 0.5 * lower
    step = pm.solve_tridiagonal(0.5 * lower, diag, 0.5 * upper, c - t)
    return step, float(np.max(np.abs(t - c)))


def _valid(law, c: np.ndarray) -> bool:
    return bool(c[0] > 0 and np.all(np.diff(c) > 0) and c[-1] < law.upper)


def _solve_positive_half(law, bits: int, init: np.ndarray | None = None) -> np.ndarray:
    """Positive-half centroids (2^(b−1),) satisfying the Lloyd–Max conditions to ~1 ulp."""
    m = 1 << (bits - 1)
    if m == 1:
        return _lloyd_step(law, np.array([0.5]))[0]
    if init is None:  # Gaussian quantiles of the cell centres
        init = math.sqrt(2.0) * _erfinv((np.arange(m) + 0.5) / m)
    c = np.array(init, dtype=np.float64)
    scale = float(c[-1])
    for _ in range(_WARMUP_LLOYD):  # a few Lloyd steps bring Newton into its basin
        c = _lloyd_step(law, c)[0]
    for _ in range(_MAX_NEWTON):
        step, residual = _newton_step(law, c)
        if np.max(np.abs(step)) <= _NEWTON_TOL * scale:  # at the rounding floor
            break
        damping = 1.0
        while not _valid(law, c + damping * step) and damping > 1e-9:
            damping *= 0.5
        c = c + damping * step
    if residual > _ACCEPT_TOL * scale:
        raise RuntimeError(f"Lloyd–Max did not converge for bits={bits}: residual {residual:.3e}")
    return c


def _erfinv(p: np.ndarray) -> np.ndarray:
    """Inverse error function by bisection-free Newton on math.erf (initial guesses only)."""
    y = np.zeros_like(p)
    for _ in range(60):
        err = np.vectorize(math.erf)(y) - p
        y = y - err / (2.0 / math.sqrt(math.pi) * np.exp(-y * y))
    return y


def _distortion(law, c: np.ndarray) -> float:
    """d · E|Y − c(Y)|² = 1 − d Σ p_i c_i² (by the centroid condition), per law scale."""
    edges = np.concatenate(([0.0], 0.5 * (c[:-1] + c[1:]), [law.upper]))
    masses, _ = law.cells(edges[:-1], edges[1:])
    total = law.mass_to_upper(np.array([0.0]))[0]
    second = law.second_moment_total()
    return float((second - pm.ordered_sum(masses * c * c) / total) / second)


def _validate(bits, dim, law) -> None:
    if not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits: expected an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not isinstance(dim, (int, np.integer)) or dim < MIN_DIM:
        raise ValueError(f"dim: expected an integer >= {MIN_DIM}, got {dim!r}")
    if law not in LAWS:
        raise ValueError(f"law: expected one of {LAWS}, got {law!r}")


def solve(bits: int, dim: int, law: str = "beta") -> Codebook:
    """Run the Lloyd–Max solver (derivation tool; :func:`lloyd_max` prefers frozen tables)."""
    _validate(bits, dim, law)
    bits, dim = int(bits), int(dim)
    if law == "beta":
        half_law = _BetaLaw(dim)
        guess = _start_half(bits) / math.sqrt(dim)
        guess = np.minimum(guess, (np.arange(len(guess)) + 0.5) / len(guess))
        half = _solve_positive_half(half_law, bits, guess)
        distortion = _distortion(half_law, half)
    else:
        half = _gaussian_half(bits)
        distortion = _distortion(_GaussianLaw(), half)
        half = half / math.sqrt(dim)
    return _assemble(bits, dim, law, half, distortion)


def _start_half(bits: int) -> np.ndarray:
    """N(0, 1) positive half the beta solver starts from: the frozen table (portable data),
    or the Gaussian solve when no table is shipped (only while freezing)."""
    from . import codebook_tables

    frozen = codebook_tables.lookup(bits, 1, "gaussian")
    return frozen[0] if frozen is not None else _gaussian_half(bits)


@functools.lru_cache(maxsize=None)
def _gaussian_half(bits: int) -> np.ndarray:
    """Positive half of the N(0, 1) Lloyd–Max codebook (read-only)."""
    half = _solve_positive_half(_GaussianLaw(), bits)
    half.setflags(write=False)
    return half


def _assemble(bits, dim, law, half: np.ndarray, distortion: float) -> Codebook:
    centroids = np.concatenate((-half[::-1], half)).astype(np.float64)
    inner = 0.5 * (half[:-1] + half[1:])
    boundaries = np.concatenate((-inner[::-1], [0.0], inner)).astype(np.float64)
    centroids.setflags(write=False)
    boundaries.setflags(write=False)
    return Codebook(bits, dim, law, centroids, boundaries, distortion)


@functools.lru_cache(maxsize=512)
def lloyd_max(bits: int, dim: int, law: str = "beta") -> Codebook:
    """The Lloyd–Max codebook for (bits, dim, law): frozen table if shipped, else solved.

    Frozen tables (tqref/data/codebooks.json, written by scripts/freeze_codebooks.py) hold
    the exact float64 values as hex; the solver reproduces them to 1e-15.

    >>> cb = lloyd_max(1, 128, "gaussian")
    >>> round(cb.centroids[1] * 128 ** 0.5, 5)
    0.79788
    """
    _validate(bits, dim, law)
    from . import codebook_tables

    frozen = codebook_tables.lookup(int(bits), int(dim), law)
    if frozen is not None:
        half, distortion = frozen
        return _assemble(int(bits), int(dim), law, half, distortion)
    return solve(bits, dim, law)


def shrinkage(codebook: Codebook) -> float:
    """α = d · E[Y c(Y)] under the exact marginal: E_Π[x̃_mse] = α x for unit x (Haar Π).

    For a Lloyd–Max codebook of the exact law α = 1 − D (the centroid condition); for the
    Gaussian codebook used at finite d it differs slightly, so it is computed, not assumed.
    Dividing the mse inner-product estimate by α debiases it (docs/algorithm.md §9 "estimators").
    """
    law = _BetaLaw(codebook.dim)
    half = codebook.centroids[len(codebook.centroids) // 2 :]
    edges = np.minimum(np.concatenate(([0.0], codebook.boundaries[len(half) :], [1.0])), 1.0)
    moments = law.first_moment(edges[:-1], edges[1:])
    total = law.mass_to_upper(np.array([0.0]))[0]
    return float(codebook.dim * pm.ordered_sum(moments * half) / total)
