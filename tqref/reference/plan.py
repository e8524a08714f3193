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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Derived arrays for the mse stage of a configuration (and QJL for prod)."""

    config: Config
    dim: int
    bits: int  # bits of the mse stage
    seed: int
    rotation: str
    codebook: cb.Codebook
    projection: np.ndarray | None  # QJL S, float32 (d, d)
    qjl_scale: float  # κ

    @property
    def rotation_signs(self) -> np.ndarray:
        return rotation.hadamard_signs(self.dim, self.seed)

    @property
    def haar(self) -> np.ndarray:
        return rotation.haar_matrix(self.dim, self.seed)


@functools.lru_cache(maxsize=128)
def make_plan(config: Config) -> Plan:
    """Build (and cache) the :class:`Plan` of a validated configuration."""
    book = cb.lloyd_max(config.mse_bits, config.dim, config.codebook)
    projection, scale = None, 0.0
    if config.kind == "prod":
        projection = qjl.projection_matrix(config.projection, config.dim, config.seed)
        scale = qjl.estimator_scale(config.projection, config.dim)
    return Plan(config, config.dim, config.mse_bits, config.seed, config.rotation, book, projection, scale)

