"""Quantizer configuration and the arrays derived from it (one place for both).

A :class:`Config` is the small, hashable description that travels (to worker processes, to
file headers, to conformance vectors): dimension, bit width, seed and the option names. A
:class:`Plan` holds what the reference and every backend derive from it — codebook,
rotation signs or Haar matrix, QJL projection matrix and constant — built once and cached.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from . import codebook as cb
from . import qjl, rotation

NORM_DTYPES = ("float32", "float16")
#: total bits per coordinate, inclusive ranges: mse spends them all on the codebook (≤ 8 so an
#: index fits a byte); prod spends bits − 1 on its mse stage and 1 on the QJL sign
MSE_BITS = (1, 8)
PROD_BITS = (2, 9)
BITS = {"mse": MSE_BITS, "prod": PROD_BITS}
#: float16 storage keeps a norm (or γ) only inside float16's normal range, or exactly 0:
#: a subnormal float16 loses relative precision (a 1e-6 norm keeps 4 bits) and above the
#: maximum it overflows (docs/decisions.md (f)). The one definition, used by the quantizers,
#: KVCache and everything built on them.
FLOAT16_NORMAL_MIN = float(np.finfo(np.float16).tiny)  # 6.1035e-05
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def unstorable_norms(norms: np.ndarray, norm_dtype: str) -> np.ndarray:
    """Boolean mask (same shape) of float32 ``norms`` that ``norm_dtype`` cannot store.

    "float32": non-finite values (a norm that overflowed). "float16": also every value
    outside [FLOAT16_NORMAL_MIN, FLOAT16_MAX] other than 0 (the float32 value is judged, so
    65519, which would round to 65504, is refused too).
    """
    norms = np.asarray(norms)
    bad = ~np.isfinite(norms)
    if norm_dtype == "float16":
        bad |= (norms > FLOAT16_MAX) | ((norms != 0) & (np.abs(norms) < FLOAT16_NORMAL_MIN))
    return bad


def norm_rule(norm_dtype: str) -> str:
    """The storage rule in words, for error messages."""
    if norm_dtype == "float16":
        return (f"0 or in float16's normal range [{FLOAT16_NORMAL_MIN:.3g}, {FLOAT16_MAX:.0f}] "
                "(norm_dtype='float16'; use norm_dtype='float32' for others)")
    return "finite in float32"


@dataclasses.dataclass(frozen=True)
class Config:
    """Configuration of one quantizer.

    kind: "mse" or "prod". bits: total bits per coordinate (prod spends bits − 1 on its mse
    stage and 1 on QJL). projection: QJL projection kind for prod, None for mse.
    """

    kind: str
    dim: int
    bits: int
    seed: int = 0
    rotation: str = "hadamard"
    codebook: str = "beta"
    projection: str | None = None
    norm_dtype: str = "float32"

    @property
    def mse_bits(self) -> int:
        return self.bits - 1 if self.kind == "prod" else self.bits

    @property
    def mse_config(self) -> "Config":
        """The Config of the mse stage: itself for mse; for prod, bits − 1 and no projection
        (the configuration of ``ProdCodes.mse``)."""
        if self.kind == "mse":
            return self
        return dataclasses.replace(self, kind="mse", bits=self.bits - 1, projection=None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _frozen(array, dtype, shape, name: str) -> np.ndarray:
    """A read-only copy of given data, checked against the shape the configuration implies."""
    out = np.array(array, dtype=dtype)
    if out.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {out.shape}")
    out.setflags(write=False)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """Everything a kernel needs for one configuration: the complete, immutable data contract.

    Built by :meth:`from_config` (every array derived from the seed, cached per Config) or by
    :meth:`with_data` (some arrays given, e.g. a Haar Π shipped in the conformance vectors,
    which LAPACK does not reproduce bit for bit). Steps take the arrays, never the seed:

        signs       float32 (len(rotation.hadamard_steps(d)), d) Hadamard signs; None for Haar
        matrix      float32 (d, d) Haar Π; None for Hadamard
        codebook    the mse-stage Lloyd–Max codebook (centroids, boundaries = thresholds)
        projection  float32 (d, d) QJL S for prod, None for mse
        qjl_scale   κ (float64; 0.0 for mse)
        alpha       α = codebook.shrinkage(codebook), the plain mse estimator's shrinkage

    Every array is read-only. ``given`` is True when some array was not derived from the
    seed (backends that cache per Config must not run such a plan: only the reference does).
    """

    config: Config
    dim: int
    bits: int  # bits of the mse stage
    seed: int
    rotation: str
    codebook: cb.Codebook
    signs: np.ndarray | None
    matrix: np.ndarray | None
    projection: np.ndarray | None
    qjl_scale: float
    alpha: float
    given: bool = False

    @classmethod
    def from_config(cls, config: Config) -> "Plan":
        """The derived Plan of a validated configuration (cached: :func:`make_plan`)."""
        return make_plan(config)

    def with_data(self, *, codebook: cb.Codebook | None = None, matrix=None, projection=None) -> "Plan":
        """This plan with given arrays in place of derived ones (each None: kept).

        codebook: a Codebook of this plan's bits and dim (α is recomputed from it). matrix:
        the Haar Π, float32 (d, d) (rotation "haar" only). projection: the QJL S, float32
        (d, d) (prod only). The arrays are copied and made read-only.
        """
        d = self.dim
        changes = {}
        if codebook is not None:
            k = 1 << self.bits
            centroids = _frozen(codebook.centroids, np.float64, (k,), "centroids")
            boundaries = _frozen(codebook.boundaries, np.float64, (k - 1,), "boundaries")
            book = dataclasses.replace(codebook, centroids=centroids, boundaries=boundaries)
            changes.update(codebook=book, alpha=cb.shrinkage(book))
        if matrix is not None:
            if self.rotation != "haar":
                raise ValueError(f"matrix: expected None for rotation={self.rotation!r} (only Haar Π is data)")
            changes["matrix"] = _frozen(matrix, np.float32, (d, d), "matrix")
        if projection is not None:
            if self.projection is None:
                raise ValueError("projection: expected None for an mse plan (no QJL stage)")
            changes["projection"] = _frozen(projection, np.float32, (d, d), "projection")
        if not changes:
            return self
        return dataclasses.replace(self, given=True, **changes)

    @property
    def thresholds(self) -> np.ndarray:
        """Cell boundaries float64 (2^bits − 1,) (nearest-centroid thresholds)."""
        return self.codebook.boundaries

    @property
    def centroids(self) -> np.ndarray:
        """Reconstruction values float32 (2^bits,)."""
        return self.codebook.centroids_f32

    @property
    def haar(self) -> np.ndarray | None:
        """The Haar Π (same array as :attr:`matrix`), for kernels that name it so."""
        return self.matrix

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Π x over the last axis, float32 (rotation.apply with this plan's arrays)."""
        return rotation.apply(x, self.signs, self.matrix)

    def rotate_inverse(self, y: np.ndarray) -> np.ndarray:
        """Πᵀ y over the last axis, float32."""
        return rotation.apply_inverse(y, self.signs, self.matrix)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=128)
def make_plan(config: Config) -> Plan:
    """Build (and cache) the :class:`Plan` of a validated configuration (= Plan.from_config)."""
    book = cb.lloyd_max(config.mse_bits, config.dim, config.codebook)
    _read_only(book.centroids), _read_only(book.boundaries)
    signs = matrix = projection = None
    if config.rotation == "haar":
        matrix = rotation.haar_matrix(config.dim, config.seed)
    else:
        signs = rotation.hadamard_signs(config.dim, config.seed)
    scale = 0.0
    if config.kind == "prod":
        projection = qjl.projection_matrix(config.projection, config.dim, config.seed)
        scale = qjl.estimator_scale(config.projection, config.dim)
    return Plan(config, config.dim, config.mse_bits, config.seed, config.rotation, book, signs, matrix,
                projection, scale, cb.shrinkage(book))
