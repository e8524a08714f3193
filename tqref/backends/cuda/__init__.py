"""The "cuda" backend: Numba-CUDA kernels, bit-exact with the reference on integer outputs.

Two ways in:

* :class:`CudaBackend` — the registry's backend object (``tqref.backends.get("cuda")``),
  with the :class:`~tqref.backends.reference.ReferenceBackend` method set. It takes and
  returns host NumPy arrays, as the public quantizers pass them today (one copy each way).
* ``*_device`` functions — arrays stay on the GPU: inputs may be CuPy arrays, anything with
  ``__cuda_array_interface__`` (Numba device arrays, PyTorch CUDA tensors) or DLPack GPU
  arrays (used in place), or host NumPy (copied once); results are device arrays (CuPy when
  installed, else Numba device arrays). :func:`quantize_device` / :func:`dequantize_device`
  take a public quantizer (``TurboQuantMSE``/``TurboQuantProd``) or its ``Plan``.

Kernels (docs/backends.md "CUDA"): mse.py (lane and warp layouts), prod.py, estimators.py,
attention.py, all built on ``_ops`` (correctly rounded float32 operations that never
contract into FMA, warp shuffles) and ``_warp`` (the written reduction order on a warp).
Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's CUDA simulator.

Device entry points assume finite float32 input, as the public quantizers guarantee after
validation; a non-finite input gives an unspecified code and a non-finite norm.
"""

from __future__ import annotations


import numpy as np
from numba import cuda

from ...reference.packing import packed_size
from ...reference.plan import Plan
from ...reference.rotation import hadamard_block, hadamard_steps, inverse_sqrt
from .._plan_cache import PlanCache
from . import attention as _attn
from . import estimators as _est
from . import mse as _mse
from . import prod as _prod
from ._arrays import cupy_module, empty, to_device, to_host, unwrap, with_stream, wrap
from ._ops import SIMULATOR

__all__ = [
    "CudaBackend",
    "available",
    "mse_quantize_device",
    "mse_dequantize_device",
    "prod_quantize_device",
    "prod_dequantize_device",
    "rotate_device",
    "mse_inner_product_device",
    "prod_inner_product_device",
    "attend_device",
    "quantize_device",
    "dequantize_device",
    "SIMULATOR",
]

#: default threads per block of the lane layout and warps per block of the warp layout
LANE_THREADS = 128
WARPS = 4
_SHARED_BUDGET = 48 * 1024  # static shared memory per block


def available() -> bool:
    """True when kernels can run: a CUDA GPU with a driver, or the CUDA simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def _require_device() -> None:
    if SIMULATOR:
        return
    if not available():
        raise RuntimeError(
            "no usable CUDA GPU/driver (numba.cuda.is_available() is False); set "
            "NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's CUDA simulator"
        )


def _warps_for(d: int, per_row_bytes: int) -> int:
    warps = min(WARPS, _SHARED_BUDGET // max(per_row_bytes, 1))
    if warps < 1:
        raise ValueError(f"dim: the cuda backend's warp layout supports d up to ~4800, got {d}")
    return warps


# ----------------------------------------------------------------------------- plan tables


class _Tables:
    """Device copies of a plan's arrays (made once per plan's data and process: _tables).

    Everything comes from the Plan (signs, Π, thresholds, centroids, S, κ, α) or from the
    reference's definitions of d (the Hadamard step offsets of rotation.hadamard_steps and
    1/√m), never from the seed.
    """

    def __init__(self, plan):
        d = plan.dim
        self.d = d
        self.bits = plan.bits
        self.rotation = plan.rotation
        dummy = np.zeros((1, 1), np.float32)  # the array a kernel of the other rotation never reads
        self.signs = cuda.to_device(np.ascontiguousarray(plan.signs if plan.signs is not None else dummy, np.float32))
        #: block offsets lo of the Hadamard steps, in execution order (the warp layout's schedule)
        self.steps = cuda.to_device(np.array([lo for lo, _ in hadamard_steps(d)], np.int32))
        self.inv = np.float32(inverse_sqrt(hadamard_block(d)))
        self.pi = cuda.to_device(np.ascontiguousarray(plan.matrix if plan.matrix is not None else dummy))
        self.thr = cuda.to_device(np.ascontiguousarray(plan.codebook.thresholds_f32, np.float32))
        self.cents = cuda.to_device(np.ascontiguousarray(plan.centroids, np.float32))
        self.prod = plan.projection is not None
        self.proj = cuda.to_device(np.ascontiguousarray(plan.projection, np.float32) if self.prod else dummy)
        self.kappa = np.float32(plan.qjl_scale)
        self.alpha = np.float32(plan.alpha)


#: the device tables of a plan: per Config for a derived plan, per plan object for one with
#: given arrays (Plan.with_data), see backends/_plan_cache.py
_tables = PlanCache(_Tables)


def _plan_of(obj) -> Plan:
    """The Plan of a device call: a Plan, or a public quantizer's ``plan`` (never rebuilt).

    A plan with given arrays (``Plan.given``) runs with those arrays (its own tables).
    """
    plan = obj if isinstance(obj, Plan) else getattr(obj, "plan", None)
    if not isinstance(plan, Plan):
        raise TypeError(f"plan: expected a Plan or a public quantizer, got {type(obj).__name__}")
    return plan


def _setup(obj):
    """(plan, its device tables) for a device call, after checking that kernels can run."""
    _require_device()
    plan = _plan_of(obj)
    return plan, _tables(plan)


def _rows(x, d, name="x"):
    dev = to_device(x, np.float32, name, ndim=2)
    if dev.shape[1] != d:
        raise ValueError(f"{name}: expected shape (n, {d}), got {tuple(dev.shape)}")
    return dev


def _grid(n, per_block):
    return max(1, (n + per_block - 1) // per_block)


# ----------------------------------------------------------------------------- mse


@with_stream
def mse_quantize_device(x, plan, *, layout: str = "auto", threads: int | None = None, stream=0):
    """Algorithm 1 Quant on the GPU: x (n, d) float32 -> (packed uint8 (n, nbytes), norms (n,)).

    ``layout``: "auto" (lane layout where it applies, see mse.py), "lane" or "warp";
    ``threads``: threads per block (lane) or warps per block (warp); tests use odd values.
    """
    plan, tab = _setup(plan)
    d, bits = plan.dim, plan.bits
    xd = _rows(x, d)
    n = xd.shape[0]
    nbytes = packed_size(d, bits)
    packed = empty((n, nbytes), np.uint8)
    norms = empty((n,), np.float32)
    if n == 0:
        return wrap(packed), wrap(norms)
    use_lane = _mse.lane_layout_ok(d, plan.rotation) if layout == "auto" else layout == "lane"
    if use_lane:
        if not _mse.lane_layout_ok(d, plan.rotation):
            raise ValueError(f"layout: 'lane' needs the hadamard rotation and a power-of-two d ≤ {_mse.LANE_MAX_DIM}")
        tpb = threads or LANE_THREADS
        kern, _ = _mse.lane_quantize_kernel(d, bits, tpb)
        rows_per_block = tpb // _mse.lane_group(d)
        kern[_grid(n, rows_per_block), tpb, stream](xd, n, tab.signs, tab.inv, tab.thr, packed, norms)
    else:
        warps = threads or _warps_for(d, 9 * d)
        kern, _ = _mse.warp_quantize_kernel(d, bits, plan.rotation, warps)
        kern[_grid(n, warps), 32 * warps, stream](xd, n, tab.signs, tab.steps, tab.inv, tab.pi, tab.thr, packed, norms)
    return wrap(packed), wrap(norms)


@with_stream
def mse_dequantize_device(packed, norms, plan, *, layout: str = "auto", threads: int | None = None, stream=0):
    """Algorithm 1 DeQuant on the GPU: -> float32 (n, d), bit-identical to the reference."""
    plan, tab = _setup(plan)
    d, bits = plan.dim, plan.bits
    nbytes = packed_size(d, bits)
    pd = to_device(packed, np.uint8, "packed", ndim=2)
    nd = to_device(norms, np.float32, "norms", ndim=1)
    n = pd.shape[0]
    if pd.shape[1] != nbytes or nd.shape[0] != n:
        raise ValueError(f"packed/norms: expected shapes ({n}, {nbytes}) and ({n},), got "
                         f"{tuple(pd.shape)} and {tuple(nd.shape)}")
    out = empty((n, d), np.float32)
    if n == 0:
        return wrap(out)
    use_lane = _mse.lane_layout_ok(d, plan.rotation) if layout == "auto" else layout == "lane"
    if use_lane:
        tpb = threads or LANE_THREADS
        kern, _ = _mse.lane_dequantize_kernel(d, bits, tpb)
        rows_per_block = tpb // _mse.lane_group(d)
        kern[_grid(n, rows_per_block), tpb, stream](pd, nd, n, tab.signs, tab.inv, tab.cents, out)
    else:
        warps = threads or _warps_for(d, 9 * d)
        kern, _ = _mse.warp_dequantize_kernel(d, bits, plan.rotation, warps)
        kern[_grid(n, warps), 32 * warps, stream](pd, nd, n, tab.signs, tab.steps, tab.inv, tab.pi, tab.cents, out)
    return wrap(out)


# ----------------------------------------------------------------------------- prod


@with_stream
def prod_quantize_device(x, plan, *, threads: int | None = None, stream=0):
    """Algorithm 2 Quant: -> (packed (n, nb), norms (n,), signs (n, ceil(d/8)), gammas (n,))."""
    plan, tab = _setup(plan)
    d, bits = plan.dim, plan.bits
    xd = _rows(x, d)
    n = xd.shape[0]
    packed = empty((n, packed_size(d, bits)), np.uint8)
    norms = empty((n,), np.float32)
    signs = empty((n, packed_size(d, 1)), np.uint8)
    gammas = empty((n,), np.float32)
    if n:
        warps = threads or _warps_for(d, 10 * d)
        kern, _ = _prod.warp_quantize_kernel(d, bits, plan.rotation, warps)
        kern[_grid(n, warps), 32 * warps, stream](xd, n, tab.signs, tab.steps, tab.inv, tab.pi, tab.thr, tab.cents,
                                                  tab.proj, packed, norms, signs, gammas)
    return wrap(packed), wrap(norms), wrap(signs), wrap(gammas)


@with_stream
def prod_dequantize_device(packed, norms, signs, gammas, plan, *, threads: int | None = None, stream=0):
    """Algorithm 2 DeQuant: -> float32 (n, d) (float output, compared by tolerance)."""
    plan, tab = _setup(plan)
    d, bits = plan.dim, plan.bits
    pd = to_device(packed, np.uint8, "packed", ndim=2)
    nd = to_device(norms, np.float32, "norms", ndim=1)
    sd = to_device(signs, np.uint8, "signs", ndim=2)
    gd = to_device(gammas, np.float32, "gammas", ndim=1)
    n = pd.shape[0]
    out = empty((n, d), np.float32)
    if n:
        warps = threads or _warps_for(d, 9 * d)
        kern, _ = _prod.warp_dequantize_kernel(d, bits, plan.rotation, warps)
        kern[_grid(n, warps), 32 * warps, stream](pd, nd, sd, gd, n, tab.signs, tab.steps, tab.inv, tab.pi, tab.cents,
                                                  tab.proj, tab.kappa, out)
    return wrap(out)


# ----------------------------------------------------------------------------- estimators


@with_stream
def rotate_device(x, plan, *, inverse: bool = False, threads: int | None = None, stream=0):
    """Π x (or Πᵀ x) for rows x (n, d), bit-identical to reference rotation.rotate(_inverse)."""
    plan, tab = _setup(plan)
    d = plan.dim
    xd = _rows(x, d)
    n = xd.shape[0]
    out = empty((n, d), np.float32)
    if n:
        warps = threads or _warps_for(d, 8 * d)
        kern, _ = _est.rotate_kernel(d, plan.rotation, warps, bool(inverse))
        kern[_grid(n, warps), 32 * warps, stream](xd, n, tab.signs, tab.steps, tab.inv, tab.pi, out)
    return wrap(out)


def _project(q_rot, tab, n, d, warps, stream):
    out = empty((n, d), np.float32)
    kern, _ = _est.matvec_kernel(d, warps)
    kern[_grid(n, warps), 32 * warps, stream](q_rot, n, tab.signs, tab.steps, tab.inv, tab.proj, out)
    return out


def _scores(queries, packed, norms, signs, gammas, plan, unbiased, qt, stream):
    plan, tab = _setup(plan)
    d, bits = plan.dim, plan.bits
    qd = _rows(queries, d, "queries")
    m = qd.shape[0]
    pd = to_device(packed, np.uint8, "packed", ndim=2)
    nd = to_device(norms, np.float32, "norms", ndim=1)
    n = pd.shape[0]
    out = empty((m, n), np.float32)
    if m == 0 or n == 0:
        return wrap(out)
    warps = _warps_for(d, 8 * d)
    q_rot = unwrap(rotate_device(qd, plan, stream=stream))
    prod = signs is not None
    if prod:
        sd = to_device(signs, np.uint8, "signs", ndim=2)
        gd = to_device(gammas, np.float32, "gammas", ndim=1)
        q_proj = _project(q_rot, tab, m, d, warps, stream)
    else:
        sd, gd, q_proj = pd, nd, q_rot
    kern, _ = _est.score_kernel(d, bits, qt, prod, bool(unbiased))
    grid = (_grid(n, 32), min(_grid(m, qt), 1024))
    kern[grid, (32, qt), stream](q_rot, q_proj, m, pd, nd, sd, gd, n, tab.cents, tab.kappa, tab.alpha, out)
    return wrap(out)


@with_stream
def mse_inner_product_device(queries, packed, norms, plan, *, unbiased: bool = False, qt: int = 4, stream=0):
    """mse estimator of ⟨q, x⟩: queries (m, d) against n codes -> float32 (m, n) on the device."""
    return _scores(queries, packed, norms, None, None, plan, unbiased, qt, stream)


@with_stream
def prod_inner_product_device(queries, packed, norms, signs, gammas, plan, *, qt: int = 4, stream=0):
    """Algorithm 2 estimator: float32 (m, n) on the device."""
    return _scores(queries, packed, norms, signs, gammas, plan, False, qt, stream)


# ----------------------------------------------------------------------------- attention


@with_stream
def attend_device(q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan, *,
                  key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size, causal, start=0, lag=0,
                  return_lse=False, chunk: int = 256, threads: int = 128, stream=0):
    """Fused attention over packed KV codes (contract of ReferenceBackend.attend).

    Returns float32 (B, A, Lq, d) in the value plan's rotated domain, on the device (with
    ``return_lse``, also the log-sum-exp float32 (B, A, Lq), on the device).
    ``chunk``: tokens per block (split-K); ``threads``: threads per block (multiple of 32).
    """
    key_plan, kt = _setup(key_plan)
    value_plan, vt = _setup(value_plan)
    qd = to_device(q_rot, np.float32, "q_rot", ndim=4)
    B, A, lq, d = qd.shape
    kid = to_device(key_indices, np.uint8, "key_indices", ndim=4)
    H, T = kid.shape[1], kid.shape[2]
    kn = to_device(key_norms, np.float32, "key_norms", ndim=3)
    vid = to_device(value_indices, np.uint8, "value_indices", ndim=4)
    vn = to_device(value_norms, np.float32, "value_norms", ndim=3)
    prod = key_signs is not None
    G = int(group_size)
    rows = G * lq
    # grouped queries (B·H, G·Lq, d): a contiguous (B, A, Lq, d) array reshapes for free
    qg = _contiguous(qd).reshape(B * H, rows, d)
    if prod:
        ks = to_device(key_signs, np.uint8, "key_signs", ndim=4)
        kg = to_device(key_gammas, np.float32, "key_gammas", ndim=3)
        flat = qg.reshape(B * H * rows, d)
        qp = _project(flat, kt, B * H * rows, d, _warps_for(d, 8 * d), stream).reshape(B * H, rows, d)
    else:
        ks, kg, qp = kid, kn, qg
    splits = max(1, (T - int(start) + chunk - 1) // chunk)
    m_part = empty((B * H, splits, rows), np.float32)
    l_part = empty((B * H, splits, rows), np.float32)
    acc_part = empty((B * H, splits, rows, d), np.float32)
    kern, _ = _attn.partial_kernel(d, key_plan.bits, value_plan.bits, rows, prod, chunk, threads)
    kern[(B * H, splits), threads, stream](qg, qp, kid, kn, ks, kg, vid, vn, H, T, lq, bool(causal), int(start),
                                          int(lag), np.float32(scale), kt.cents, vt.cents, kt.kappa, m_part, l_part, acc_part)
    out = empty((B * H, rows, d), np.float32)
    lse = empty((B * H, rows), np.float32)
    comb, _ = _attn.combine_kernel(d, rows)
    comb[(B * H, rows), 32 * ((d + 31) // 32), stream](m_part, l_part, acc_part, splits, np.float32(value_scale), out,
                                                       lse)
    out = wrap(out.reshape(B, A, lq, d))
    return (out, wrap(lse.reshape(B, A, lq))) if return_lse else out


def _contiguous(dev):
    if SIMULATOR or dev.is_c_contiguous():
        return dev
    cp = cupy_module()
    if cp is not None:
        return cuda.as_cuda_array(cp.ascontiguousarray(cp.asarray(dev)))
    return cuda.to_device(np.ascontiguousarray(dev.copy_to_host()))


# ----------------------------------------------------------------------------- conveniences


def quantize_device(x, quantizer, **kw):
    """Quantize on the device with a public quantizer or a Plan (mse or prod).

    mse -> (packed, norms); prod -> (packed, norms, signs, gammas). Norms stay float32
    (the quantizer's float16 ``norm_dtype`` storage is a host-side step).
    """
    plan = _plan_of(quantizer)
    if plan.config.kind == "prod":
        return prod_quantize_device(x, plan, **kw)
    return mse_quantize_device(x, plan, **kw)


def dequantize_device(codes, quantizer, **kw):
    """Inverse of :func:`quantize_device`: ``codes`` is the tuple it returned."""
    plan = _plan_of(quantizer)
    if plan.config.kind == "prod":
        return prod_dequantize_device(*codes, plan, **kw)
    return mse_dequantize_device(*codes, plan, **kw)


# ----------------------------------------------------------------------------- backend object


class CudaBackend:
    """Registry backend: host NumPy in and out (one transfer each way), kernels as above."""

    name = "cuda"
    #: True under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): usable by explicit
    #: request (tests), never chosen by "auto".
    simulated = SIMULATOR

    def __init__(self):
        _require_device()

    def mse_quantize(self, x, plan):
        packed, norms = mse_quantize_device(x, plan)
        return to_host(packed), to_host(norms)

    def mse_dequantize(self, packed, norms, plan):
        return to_host(mse_dequantize_device(packed, norms, plan))

    def prod_quantize(self, x, plan):
        return tuple(to_host(a) for a in prod_quantize_device(x, plan))

    def prod_dequantize(self, packed, norms, signs, gammas, plan):
        return to_host(prod_dequantize_device(packed, norms, signs, gammas, plan))

    def mse_inner_product(self, queries, packed, norms, plan, unbiased=False):
        return to_host(mse_inner_product_device(queries, packed, norms, plan, unbiased=unbiased))

    def prod_inner_product(self, queries, packed, norms, signs, gammas, plan):
        return to_host(prod_inner_product_device(queries, packed, norms, signs, gammas, plan))

    def attend(self, q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan, *,
               key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size, causal, start=0, lag=0,
               return_lse=False):
        res = attend_device(q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan,
                            key_signs=key_signs, key_gammas=key_gammas, scale=scale, value_scale=value_scale,
                            group_size=group_size, causal=causal, start=start, lag=lag, return_lse=return_lse)
        return tuple(to_host(r) for r in res) if return_lse else to_host(res)

    # ------------------------------------------------------------------ steps (backends/protocol.py)
    def rotate(self, x, plan):
        """Π x for float32 rows (n, d), host arrays (rotate_device, bit-identical to the reference)."""
        return to_host(rotate_device(x, plan))

    def rotate_inverse(self, y, plan):
        """Πᵀ y for float32 rows (n, d), host arrays."""
        return to_host(rotate_device(y, plan, inverse=True))

    # the device operations (protocol.DeviceOps): the module functions above
    mse_quantize_device = staticmethod(mse_quantize_device)
    mse_dequantize_device = staticmethod(mse_dequantize_device)
    prod_quantize_device = staticmethod(prod_quantize_device)
    prod_dequantize_device = staticmethod(prod_dequantize_device)
    mse_inner_product_device = staticmethod(mse_inner_product_device)
    prod_inner_product_device = staticmethod(prod_inner_product_device)
    attend_device = staticmethod(attend_device)
    rotate_device = staticmethod(rotate_device)
