"""Public quantizers: TurboQuantMSE (Algorithm 1) and TurboQuantProd (Algorithm 2).

These classes validate once, flatten leading axes, call a backend (reference by default)
and wrap results in code objects that remember the configuration that made them.

>>> import numpy as np, tqref
>>> q = tqref.TurboQuantMSE(dim=128, bits=3, seed=1)
>>> x = np.random.default_rng(0).standard_normal((4, 128)).astype(np.float32)
>>> codes = q.quantize(x)
>>> codes.indices.shape, codes.norms.shape
((4, 48), (4,))
>>> q.dequantize(codes).shape
(4, 128)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import _rows
from . import _validate as v
from . import backends
from .reference import codebook as cb
from .reference import packing, qjl
from .reference.rotation import ROTATIONS
from .reference.plan import MSE_BITS, NORM_DTYPES, PROD_BITS, Config, Plan, make_plan, norm_rule, unstorable_norms


@dataclasses.dataclass(frozen=True)
class MSECodes:
    """Output of TurboQuantMSE.quantize.

    indices: uint8 (..., ceil(dim·bits/8)) packed codes; norms: float32 or float16 (...);
    config: the quantizer configuration that made them.
    """

    indices: np.ndarray
    norms: np.ndarray
    config: Config

    @property
    def shape(self) -> tuple:
        return self.norms.shape

    def __len__(self) -> int:
        return self.norms.shape[0] if self.norms.ndim else 1

    def nbytes(self) -> int:
        return int(self.indices.nbytes + self.norms.nbytes)


@dataclasses.dataclass(frozen=True)
class ProdCodes:
    """Output of TurboQuantProd.quantize.

    mse: MSECodes of the (bits − 1)-bit stage (decodable by TurboQuantMSE(dim, bits − 1));
    signs: uint8 (..., ceil(dim/8)) packed QJL sign bits; residual_norms: γ = ‖r‖ on the
    unit-vector scale, float32 or float16 (...); config: the prod configuration.
    """

    mse: MSECodes
    signs: np.ndarray
    residual_norms: np.ndarray
    config: Config

    @property
    def shape(self) -> tuple:
        return self.mse.shape

    def __len__(self) -> int:
        return len(self.mse)

    def nbytes(self) -> int:
        return int(self.mse.nbytes() + self.signs.nbytes + self.residual_norms.nbytes)


def _store_norms(name: str, norms: np.ndarray, norm_dtype: str) -> np.ndarray:
    """float32 norms -> stored dtype; reject values the dtype cannot hold (plan.unstorable_norms)."""
    bad = unstorable_norms(norms, norm_dtype)
    if bad.any():
        row = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"x: expected vectors whose {name} is {norm_rule(norm_dtype)}, got "
                         f"{float(norms[row]):.6g} at row {row}")
    return norms.astype(np.dtype(norm_dtype))


def on_device(x) -> bool:
    """True for GPU arrays: ``__cuda_array_interface__`` (CuPy, Numba, torch CUDA) or DLPack on CUDA."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__") or hasattr(x, "copy_to_host"):  # + Numba (simulator) arrays
        return True
    try:
        return int(x.__dlpack_device__()[0]) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
    except Exception:
        return False


class _Quantizer:
    """Shared parts of the two quantizers: configuration, validation, backend dispatch."""

    kind = ""

    def __init__(self, dim, bits, *, seed=0, rotation="hadamard", codebook="beta",
                 projection=None, norm_dtype="float32", backend="reference"):
        dim = v.check_int("dim", dim, 2)
        bits = v.check_int("bits", bits, *self.bits_range)
        seed = v.check_int("seed", seed, 0, 2**64 - 1)
        v.check_choice("rotation", rotation, ROTATIONS)
        v.check_choice("codebook", codebook, cb.LAWS)
        v.check_choice("norm_dtype", norm_dtype, NORM_DTYPES)
        if projection is not None:
            v.check_choice("projection", projection, qjl.PROJECTIONS)
        self.config = Config(self.kind, dim, bits, seed, rotation, codebook, projection, norm_dtype)
        self.backend = backends.get(backend)
        self.plan = make_plan(self.config)

    @classmethod
    def from_plan(cls, plan: Plan, *, backend="reference"):
        """The quantizer that runs ``plan`` — e.g. one with given arrays (:meth:`Plan.with_data`).

        Every backend runs a plan with given arrays: the accelerated ones derive their tables
        from the plan's arrays (cached per Config for derived plans, per plan object for given
        ones), so codes equal the reference's on the same plan.
        """
        if not isinstance(plan, Plan) or plan.config.kind != cls.kind:
            raise ValueError(f"plan: expected a {cls.kind} Plan, got {plan!r:.80}")
        c = plan.config
        extra = {"projection": c.projection} if cls.kind == "prod" else {}
        q = cls(c.dim, c.bits, seed=c.seed, rotation=c.rotation, codebook=c.codebook, norm_dtype=c.norm_dtype,
                backend=backend, **extra)
        q.plan = plan
        return q

    dim = property(lambda self: self.config.dim)
    bits = property(lambda self: self.config.bits)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={val!r}" for k, val in self.config.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({fields}, backend={self.backend.name!r})"

    def _rows(self, x, name="x"):
        x32 = v.as_float32_rows(name, x, self.dim)
        return x32.reshape(-1, self.dim), x32.shape[:-1]

    def _quantize_rows(self, quantize, x):
        """(x, quantize's arrays shaped x's leading axes + their own) for x (..., dim) of any
        accepted float dtype and layout, values unchecked (no pass over them): the backend
        converts block by block, rows handed over without a copy where the layout allows
        (_rows.apply), and :func:`_validate.check_norms` turns a non-finite norm into the
        error a full check would have raised. The arrays returned are C-contiguous (codes are
        data users write out and hand to other code): for a transposed x, only the codes —
        about a tenth of the input's bytes — are copied into x's order."""
        x = v.float_rows("x", x, self.dim)
        out = _rows.quantize("x", lambda rows: quantize(rows, self.plan), x, self.dim)
        return tuple(a if a.flags.c_contiguous else a.copy(order="C") for a in out)  # 0-d stays 0-d

    def _device(self, name: str):
        """The CUDA backend module for GPU-resident arrays (which never visit the host)."""
        if self.backend.name != "cuda":
            raise ValueError(f"{name}: a GPU array needs backend='cuda', this quantizer uses {self.backend.name!r}")
        if self.config.norm_dtype != "float32":
            raise ValueError("norm_dtype: GPU-resident codes keep float32 norms; use norm_dtype='float32'")
        import importlib

        return importlib.import_module("tqref.backends.cuda")

    def _device_rows(self, x):
        """Validate a GPU array x (n, dim) float32 on the device; returns the cuda module.

        Shape and dtype are checked from metadata; finiteness with one device reduction
        when CuPy is installed (a Numba-only device array is not scanned: documented).
        """
        cuda_backend = self._device("x")
        shape, dtype = tuple(x.shape), np.dtype(str(x.dtype).replace("torch.", ""))
        if len(shape) != 2 or shape[1] != self.dim:
            raise ValueError(f"x: expected a GPU array of shape (n, {self.dim}), got {shape}")
        if dtype != np.float32:
            raise ValueError(f"x: expected a float32 GPU array, got {dtype}")
        cp = cuda_backend.cupy_module()
        if cp is not None and not bool(cp.isfinite(cp.asarray(x)).all()):
            raise ValueError("x: expected finite values, got NaN or inf in a GPU array")
        return cuda_backend

    @staticmethod
    def _device_norms_finite(cuda_backend, norms) -> None:
        cp = cuda_backend.cupy_module()
        if cp is not None and not bool(cp.isfinite(norms).all()):
            raise ValueError("x: expected vectors whose norm fits float32, got an overflow in a GPU array")

    def _check_config(self, codes):
        if codes.config != self.config:
            mine, theirs = self.config.to_dict(), codes.config.to_dict()
            diff = ", ".join(f"{k}: expected {mine[k]!r}, got {theirs[k]!r}" for k in mine if mine[k] != theirs[k])
            raise ValueError(f"codes: made by a quantizer with another configuration ({diff})")

    def _check_mse_arrays(self, codes: MSECodes, name: str = "codes"):
        lead = np.shape(codes.norms)
        nbytes = packing.packed_size(self.dim, self.plan.bits)
        v.check_uint8(f"{name}.indices", codes.indices, nbytes, lead)
        norms = np.asarray(codes.norms)
        if norms.dtype != np.dtype(self.config.norm_dtype):
            raise ValueError(f"{name}.norms: expected dtype {self.config.norm_dtype}, got {norms.dtype}")
        return codes.indices.reshape(-1, nbytes), norms.reshape(-1).astype(np.float32), lead


class TurboQuantMSE(_Quantizer):
    """TurboQuant_mse (Algorithm 1) of ``bits`` (1–8) bits per coordinate.

    Args: dim ≥ 2; bits 1–8; seed (rotation); rotation "hadamard" | "haar"; codebook
    "beta" (exact marginal) | "gaussian"; norm_dtype "float32" | "float16"; backend name.
    """

    kind = "mse"
    bits_range = MSE_BITS

    def __init__(self, dim, bits, *, seed=0, rotation="hadamard", codebook="beta",
                 norm_dtype="float32", backend="reference"):
        super().__init__(dim, bits, seed=seed, rotation=rotation, codebook=codebook,
                         norm_dtype=norm_dtype, backend=backend)

    def quantize(self, x) -> MSECodes:
        """x float16/32/64 (..., dim) -> MSECodes with indices (..., nbytes), norms (...).

        A GPU array (float32, (n, dim)) with backend="cuda" stays on the device: the codes
        then hold device arrays (CuPy when installed).
        """
        if on_device(x):
            dev = self._device_rows(x)
            packed, norms = dev.mse_quantize_device(x, self.plan)
            self._device_norms_finite(dev, norms)
            return MSECodes(packed, norms, self.config)
        packed, norms = self._quantize_rows(self.backend.mse_quantize, x)
        return MSECodes(packed, _store_norms("norm", norms, self.config.norm_dtype), self.config)

    def dequantize(self, codes: MSECodes) -> np.ndarray:
        """MSECodes -> float32 (..., dim) (a device array for GPU-resident codes)."""
        self._check_config(codes)
        if on_device(codes.indices):
            return self._device("codes").mse_dequantize_device(codes.indices, codes.norms, self.plan)
        packed, norms, lead = self._check_mse_arrays(codes)
        return self.backend.mse_dequantize(packed, norms, self.plan).reshape(lead + (self.dim,))

    def inner_product(self, query, codes: MSECodes, *, unbiased: bool = False) -> np.ndarray:
        """Estimate ⟨query, x⟩: query (..., dim) against codes of shape S -> (..., *S) float32.

        ``unbiased=True`` divides by the codebook's shrinkage α (≈ 1 − D_mse).
        """
        self._check_config(codes)
        packed, norms, lead = self._check_mse_arrays(codes)
        q, qlead = self._rows(query, "query")
        est = self.backend.mse_inner_product(q, packed, norms, self.plan, unbiased=bool(unbiased))
        return est.reshape(qlead + lead)

    @property
    def shrinkage(self) -> float:
        """α: E[estimate] = α ⟨q, x⟩ for the plain mse estimator (Haar rotation)."""
        return self.plan.alpha


class TurboQuantProd(_Quantizer):
    """TurboQuant_prod (Algorithm 2): ``bits`` (2–9) total = (bits − 1)-bit mse + 1-bit QJL.

    Args as TurboQuantMSE, plus projection "gaussian" (paper) | "orthogonal" | "rademacher".
    """

    kind = "prod"
    bits_range = PROD_BITS

    def __init__(self, dim, bits, *, seed=0, rotation="hadamard", codebook="beta",
                 projection="gaussian", norm_dtype="float32", backend="reference"):
        super().__init__(dim, bits, seed=seed, rotation=rotation, codebook=codebook,
                         projection=projection, norm_dtype=norm_dtype, backend=backend)
        self.mse_config = self.config.mse_config

    def quantize(self, x) -> ProdCodes:
        """x (..., dim) -> ProdCodes (mse stage, packed signs, residual norms γ).

        GPU arrays with backend="cuda" stay on the device, as for TurboQuantMSE.
        """
        if on_device(x):
            dev = self._device_rows(x)
            packed, norms, signs, gammas = dev.prod_quantize_device(x, self.plan)
            self._device_norms_finite(dev, norms)
            return ProdCodes(MSECodes(packed, norms, self.mse_config), signs, gammas, self.config)
        packed, norms, signs, gammas = self._quantize_rows(self.backend.prod_quantize, x)
        norms = _store_norms("norm", norms, self.config.norm_dtype)
        gammas = _store_norms("residual norm", gammas, self.config.norm_dtype)
        return ProdCodes(MSECodes(packed, norms, self.mse_config), signs, gammas, self.config)

    def _arrays(self, codes: ProdCodes):
        self._check_config(codes)
        if codes.mse.config != self.mse_config:
            raise ValueError("codes.mse: made by a quantizer with another configuration")
        packed, norms, lead = self._check_mse_arrays(codes.mse, "codes.mse")
        signs = v.check_uint8("codes.signs", codes.signs, packing.packed_size(self.dim, 1), lead)
        gammas = np.asarray(codes.residual_norms)
        if gammas.shape != lead or gammas.dtype != np.dtype(self.config.norm_dtype):
            raise ValueError(
                f"codes.residual_norms: expected shape {lead} dtype {self.config.norm_dtype}, "
                f"got shape {gammas.shape} dtype {gammas.dtype}"
            )
        return packed, norms, signs.reshape(-1, signs.shape[-1]), gammas.reshape(-1).astype(np.float32), lead

    def dequantize(self, codes: ProdCodes) -> np.ndarray:
        """ProdCodes -> float32 (..., dim) (a device array for GPU-resident codes)."""
        if on_device(codes.signs):
            self._check_config(codes)
            if codes.mse.config != self.mse_config:
                raise ValueError("codes.mse: made by a quantizer with another configuration")
            return self._device("codes").prod_dequantize_device(
                codes.mse.indices, codes.mse.norms, codes.signs, codes.residual_norms, self.plan)
        packed, norms, signs, gammas, lead = self._arrays(codes)
        return self.backend.prod_dequantize(packed, norms, signs, gammas, self.plan).reshape(lead + (self.dim,))

    def inner_product(self, query, codes: ProdCodes) -> np.ndarray:
        """Unbiased estimate of ⟨query, x⟩: query (..., dim), codes shape S -> (..., *S)."""
        packed, norms, signs, gammas, lead = self._arrays(codes)
        q, qlead = self._rows(query, "query")
        est = self.backend.prod_inner_product(q, packed, norms, signs, gammas, self.plan)
        return est.reshape(qlead + lead)


def from_config(config: Config, *, backend="reference"):
    """The public quantizer (TurboQuantMSE or TurboQuantProd) of ``config``, validated."""
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a Config, got {type(config).__name__}")
    common = dict(seed=config.seed, rotation=config.rotation, codebook=config.codebook,
                  norm_dtype=config.norm_dtype, backend=backend)
    if config.kind == "prod":
        return TurboQuantProd(config.dim, config.bits, projection=config.projection, **common)
    if config.kind != "mse":
        raise ValueError(f"kind: expected 'mse' or 'prod', got {config.kind!r}")
    if config.projection is not None:
        raise ValueError(f"projection: expected None for an mse configuration, got {config.projection!r}")
    return TurboQuantMSE(config.dim, config.bits, **common)


def record_fields(config: Config) -> list:
    """(name, dtype, row shape) of the codes of one vector, in storage order (io, dask).

    indices uint8 (ceil(dim·mse_bits/8),), norms norm_dtype (); prod adds signs uint8
    (ceil(dim/8),) and residual_norms norm_dtype () — the arrays of MSECodes / ProdCodes.
    """
    norm = np.dtype(config.norm_dtype)
    fields = [("indices", np.dtype(np.uint8), (packing.packed_size(config.dim, config.mse_bits),)),
              ("norms", norm, ())]
    if config.kind == "prod":
        fields += [("signs", np.dtype(np.uint8), (packing.packed_size(config.dim, 1),)),
                   ("residual_norms", norm, ())]
    return fields


def lloyd_max(bits: int, dim: int, law: str = "beta") -> cb.Codebook:
    """The Lloyd–Max codebook (see :func:`tqref.reference.codebook.lloyd_max`)."""
    return cb.lloyd_max(bits, dim, law)


def pack_bits(indices, bits: int) -> np.ndarray:
    """Pack b-bit indices LSB-first (see :func:`tqref.reference.packing.pack_bits`)."""
    return packing.pack_bits(indices, bits)


def unpack_bits(packed, bits: int, count: int) -> np.ndarray:
    """Unpack ``count`` b-bit indices (see :func:`tqref.reference.packing.unpack_bits`)."""
    return packing.unpack_bits(packed, bits, count)
