"""What tqref computes for each protocol operation (spec.OPS).

One function per operation, ``fn(fields, backend) -> outputs``: ``fields`` maps input names to
Python ints / strings (u64 already parsed to int) and numpy arrays (flat or shaped: each
function reshapes from the scalar fields), ``outputs`` maps output names to numpy arrays
(0-d for scalars). The generator writes these outputs into the vectors, the verifier
recomputes them with a chosen backend, and the reference adapter answers protocol requests
with them — one code path.

Given data. Requests carry the codebook (boundaries, centroids) and, in the statistical
tier, the matrices (Haar Π, QJL S). When they equal what tqref derives itself, tqref runs
unchanged on the chosen backend. When they differ (another platform's LAPACK, or an adapter
user sending their own tables), tqref runs a Plan built from the given arrays
(Plan.with_data) on the chosen backend: every backend reads its tables from the plan.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import backends
from ..backends.protocol import CodeSteps, RotationSteps, implements
from ..reference import codebook as cb
from ..reference import mse, packing, prng, qjl, reduction, rotation
from ..reference.plan import Config, Plan

_F32 = np.float32


class Unsupported(Exception):
    """The operation cannot run here (reason in the message); reported as skipped."""


class Refused(Exception):
    """The implementation refused the input (the expected outcome of an 'invalid' test)."""


def _flat(a, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=dtype).reshape(-1))


def _scalar(value, dtype) -> np.ndarray:
    return np.asarray(value, dtype=dtype).reshape(())


# --------------------------------------------------------------------------- prng


def prng_raw(f, backend="reference"):
    key = prng.stream_key(f["seed"], f["stream"])
    # raw(seed, stream, i) = mix64(key + GOLDEN·(i + 1)): index arithmetic wraps mod 2^64
    idx = (np.arange(f["count"], dtype=np.uint64) + np.uint64(f["start"]))
    with np.errstate(over="ignore"):
        values = prng._mix64(key + prng.GOLDEN * (idx + np.uint64(1)))
    return {"key": _scalar(key, np.uint64), "values": values.astype(np.uint64)}


def _wrapped(fn, f):
    """Call a prng helper for [start, start + count) with 64-bit wrapping of the index."""
    start, count = int(f["start"]), int(f["count"])
    if start + count <= 2**64:
        return fn(f["seed"], f["stream"], count, start=start)
    head = 2**64 - start
    return np.concatenate((fn(f["seed"], f["stream"], head, start=start),
                           fn(f["seed"], f["stream"], count - head, start=0)))


def prng_rademacher(f, backend="reference"):
    return {"signs": _wrapped(prng.rademacher, f).astype(np.int8)}


def prng_uniform(f, backend="reference"):
    return {"values": _wrapped(prng.uniform, f)}


def prng_gaussian(f, backend="reference"):
    return {"values": prng.gaussian(f["seed"], f["stream"], int(f["count"]))}


# --------------------------------------------------------------------------- building blocks


def ordered_dot(f, backend="reference"):
    n = int(f["n"])
    a, b = _flat(f["a"], _F32), _flat(f["b"], _F32)
    if a.size != n or b.size != n:
        raise Refused(f"a, b: expected {n} values each, got {a.size} and {b.size}")
    return {"dot": _scalar(reduction.ordered_dot(a, b), _F32)}


def split_norm(f, backend="reference"):
    x = _flat(f["x"], _F32).reshape(1, int(f["dim"]))
    if not np.all(np.isfinite(x)):
        raise Refused("x: expected finite values")
    with np.errstate(over="ignore", invalid="ignore"):
        u, norm = mse.split_norm(x)
    return {"norm": _scalar(norm[0], _F32), "unit": u[0]}


def fwht(f, backend="reference"):
    x = _flat(f["x"], _F32)
    if x.size != int(f["n"]) or not rotation.is_power_of_two(x.size):
        raise Refused(f"x: expected n = {f['n']} values, n a power of two")
    return {"y": rotation.fwht(x)}


def _steps(backend: str, protocol):
    """The backend object for a step operation: the reference runs the reference modules;
    another backend runs its own step when it implements ``protocol`` (backends/protocol.py)."""
    if backend == "reference":
        return None
    impl = backends.get(backend)
    if not implements(impl, protocol):
        raise Unsupported(f"backend {backend!r} has no {protocol.__name__} step operations")
    return impl


def rotate_hadamard(f, backend="reference"):
    x = _flat(f["x"], _F32).reshape(1, int(f["dim"]))
    impl = _steps(backend, RotationSteps)
    if impl is None:
        return {"forward": rotation.hadamard_forward(x, f["seed"])[0],
                "inverse": rotation.hadamard_inverse(x, f["seed"])[0]}
    plan = Plan.from_config(Config("mse", int(f["dim"]), 1, int(f["seed"])))  # the signs of (dim, seed)
    return {"forward": np.asarray(impl.rotate(x, plan))[0], "inverse": np.asarray(impl.rotate_inverse(x, plan))[0]}


def rotate_haar(f, backend="reference"):
    d = int(f["dim"])
    pi = _flat(f["matrix"], _F32).reshape(d, d)
    x = _flat(f["x"], _F32).reshape(1, d)
    return {"forward": rotation.apply(x, None, pi)[0], "inverse": rotation.apply_inverse(x, None, pi)[0]}


def codebook(f, backend="reference"):
    book = cb.lloyd_max(int(f["bits"]), int(f["dim"]), f["law"])
    return {"centroids": np.array(book.centroids), "boundaries": np.array(book.boundaries),
            "distortion": _scalar(book.distortion, np.float64), "centroidsF32": book.centroids_f32}


def nearest_index(f, backend="reference"):
    values = _flat(f["values"], _F32)
    impl = _steps(backend, CodeSteps)
    find = cb.nearest_index if impl is None else impl.nearest_index
    return {"indices": np.asarray(find(values[None], _flat(f["boundaries"], np.float64)))[0].astype(np.uint8)}


def pack(f, backend="reference"):
    idx = _flat(f["indices"], np.uint8)
    if idx.size != int(f["count"]):
        raise Refused(f"indices: expected {f['count']} values, got {idx.size}")
    if int(f["bits"]) < 8 and np.any(idx >> np.uint8(f["bits"])):
        raise Refused(f"indices: expected values below 2^{f['bits']}")
    impl = _steps(backend, CodeSteps)
    pack_bits = packing.pack_bits if impl is None else impl.pack_bits
    return {"packed": np.asarray(pack_bits(idx[None], int(f["bits"])))[0]}


def unpack(f, backend="reference"):
    impl = _steps(backend, CodeSteps)
    unpack_bits = packing.unpack_bits if impl is None else impl.unpack_bits
    try:
        return {"indices": np.asarray(unpack_bits(_flat(f["packed"], np.uint8)[None], int(f["bits"]),
                                                  int(f["count"])))[0]}
    except ValueError as exc:
        raise Refused(str(exc)) from exc


# --------------------------------------------------------------------------- quantizers


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _quantizer(kind: str, f: dict, backend: str):
    """The public quantizer for the request ``f``, running a Plan built from the given data.

    Arrays the request carries that differ from tqref's own (codebook, Haar Π, QJL S) go
    into the plan (:meth:`Plan.with_data`); such a plan runs on the reference only.
    """
    from ..quantizers import TurboQuantMSE, TurboQuantProd

    d, bits = int(f["dim"]), int(f["bits"])
    if kind == "prod" and f["rotation"] != "hadamard":
        raise Unsupported("prod requests carry one matrix (the QJL projection): rotation must be 'hadamard'")
    common = dict(seed=int(f["seed"]), rotation=f["rotation"], codebook=f.get("codebookLaw", "beta"),
                  norm_dtype=f["normDtype"], backend=backend)
    if kind == "mse":
        q = TurboQuantMSE(d, bits, **common)
    else:
        q = TurboQuantProd(d, bits, projection=f["projection"], **common)
    plan = q.plan
    given = {}
    book = plan.codebook
    if ("boundaries" in f and not _same(_flat(f["boundaries"], np.float64), book.boundaries)) or \
            ("centroids" in f and not _same(_flat(f["centroids"], _F32), book.centroids_f32)):
        boundaries = _flat(f["boundaries"], np.float64) if "boundaries" in f else book.boundaries
        centroids = (_flat(f["centroids"], _F32).astype(np.float64) if "centroids" in f else book.centroids)
        given["codebook"] = dataclasses.replace(book, centroids=centroids, boundaries=boundaries)
    if kind == "prod" and f.get("matrix") is not None and f["projection"] != "rademacher":
        matrix = _flat(f["matrix"], _F32).reshape(d, d)
        if not _same(matrix, plan.projection):
            given["projection"] = matrix
    if f["rotation"] == "haar" and f.get("matrix") is not None and kind == "mse":
        matrix = _flat(f["matrix"], _F32).reshape(d, d)
        if not _same(matrix, plan.matrix):
            given["matrix"] = matrix
    if not given:
        return q
    return type(q).from_plan(plan.with_data(**given), backend=backend)


def _x_row(f) -> np.ndarray:
    return _flat(f["x"], _F32).reshape(1, int(f["dim"]))


def _refusing(call):
    try:
        return call()
    except ValueError as exc:
        raise Refused(str(exc)) from exc


def _norm_dtype(f):
    return np.dtype(f["normDtype"])


def mse_quantize(f, backend="reference"):
    q = _quantizer("mse", f, backend)
    x = _x_row(f)
    codes = _refusing(lambda: q.quantize(x))
    # the intermediates (optional outputs) come from the reference functions
    u, _ = mse.split_norm(x)
    rotated = q.plan.rotate(u)
    return {"norm": _scalar(codes.norms[0], _norm_dtype(f)), "packed": codes.indices[0],
            "indices": packing.unpack_bits(codes.indices, q.plan.bits, q.dim)[0], "rotated": rotated[0]}


def _mse_codes(q, f):
    from ..quantizers import MSECodes

    nb = packing.packed_size(q.dim, q.plan.bits)
    packed = _flat(f["packed"], np.uint8).reshape(1, nb)
    norms = _flat(f["norm"], _norm_dtype(f)).reshape(1)
    return MSECodes(packed, norms, q.config.mse_config)


def mse_dequantize(f, backend="reference"):
    q = _quantizer("mse", f, backend)
    xhat = _refusing(lambda: q.dequantize(_mse_codes(q, f)))
    return {"xhat": xhat[0]}


def _queries(f) -> np.ndarray:
    return _flat(f["queries"], _F32).reshape(int(f["m"]), int(f["dim"]))


def mse_inner_product(f, backend="reference"):
    q = _quantizer("mse", f, backend)
    codes = _mse_codes(q, f)
    queries = _queries(f)
    plain = q.inner_product(queries, codes)[:, 0]
    alpha = float(np.asarray(f["shrinkage"], dtype=np.float64).reshape(()))
    if alpha == q.plan.alpha:
        unbiased = q.inner_product(queries, codes, unbiased=True)[:, 0]
    else:  # given α differs from tqref's: divide the plain estimate by the given α
        unbiased = (plain / _F32(alpha)).astype(_F32)
    return {"estimates": plain.astype(_F32), "estimatesUnbiased": unbiased.astype(_F32)}


def _prod_codes(q, f):
    from ..quantizers import ProdCodes

    mse_codes = _mse_codes(q, f)
    signs = _flat(f["signs"], np.uint8).reshape(1, packing.packed_size(q.dim, 1))
    gammas = _flat(f["gamma"], _norm_dtype(f)).reshape(1)
    return ProdCodes(mse_codes, signs, gammas, q.config)


def prod_quantize(f, backend="reference"):
    q = _quantizer("prod", f, backend)
    x = _x_row(f)
    codes = _refusing(lambda: q.quantize(x))
    return {"norm": _scalar(codes.mse.norms[0], _norm_dtype(f)), "packed": codes.mse.indices[0],
            "signs": codes.signs[0], "gamma": _scalar(codes.residual_norms[0], _norm_dtype(f)),
            "indices": packing.unpack_bits(codes.mse.indices, q.plan.bits, q.dim)[0]}


def prod_dequantize(f, backend="reference"):
    q = _quantizer("prod", f, backend)
    return {"xhat": _refusing(lambda: q.dequantize(_prod_codes(q, f)))[0]}


def prod_inner_product(f, backend="reference"):
    q = _quantizer("prod", f, backend)
    est = q.inner_product(_queries(f), _prod_codes(q, f))[:, 0]
    return {"estimates": est.astype(_F32)}


# --------------------------------------------------------------------------- QJL


def _projection(f) -> np.ndarray:
    d = int(f["dim"])
    if f["projection"] == "rademacher":
        return qjl.projection_matrix("rademacher", d, int(f["seed"]))
    if f.get("matrix") is None:
        raise Unsupported(f"projection {f['projection']!r} needs the matrix")
    return _flat(f["matrix"], _F32).reshape(d, d)


def qjl_sketch(f, backend="reference"):
    d = int(f["dim"])
    r = _flat(f["residual"], _F32).reshape(1, d)
    signs, gamma = qjl.sketch(r, _projection(f))
    return {"signs": signs[0], "gamma": _scalar(gamma[0], _F32)}


def qjl_estimate(f, backend="reference"):
    d = int(f["dim"])
    s = _projection(f)
    z = qjl.signs_of(_flat(f["signs"], np.uint8).reshape(1, packing.packed_size(d, 1)), d)[0]
    kappa = float(np.asarray(f["scale"], dtype=np.float64).reshape(()))
    gamma = _F32(np.asarray(f["gamma"], dtype=_F32).reshape(()))
    est = ((_queries(f) @ s.T) @ z) * (_F32(kappa) * gamma)
    return {"estimates": est.astype(_F32)}


OPERATIONS = {
    "prng_raw": prng_raw, "prng_rademacher": prng_rademacher, "prng_uniform": prng_uniform,
    "prng_gaussian": prng_gaussian, "ordered_dot": ordered_dot, "split_norm": split_norm, "fwht": fwht,
    "rotate_hadamard": rotate_hadamard, "rotate_haar": rotate_haar, "codebook": codebook,
    "nearest_index": nearest_index, "pack": pack, "unpack": unpack, "mse_quantize": mse_quantize,
    "mse_dequantize": mse_dequantize, "mse_inner_product": mse_inner_product, "qjl_sketch": qjl_sketch,
    "qjl_estimate": qjl_estimate, "prod_quantize": prod_quantize, "prod_dequantize": prod_dequantize,
    "prod_inner_product": prod_inner_product,
}

#: operations whose result depends on the backend (the others always run the reference): the
#: whole operations, and the step operations a backend runs when it implements their Protocol
#: (backends/protocol.py; a backend without them reports the step as skipped)
BACKEND_OPS = ["mse_quantize", "mse_dequantize", "mse_inner_product", "prod_quantize", "prod_dequantize",
               "prod_inner_product", "rotate_hadamard", "nearest_index", "pack", "unpack"]


def register(name: str, fn, *, uses_backend: bool = False) -> None:
    """Add the implementation of an operation defined elsewhere (profiles, KV cache)."""
    OPERATIONS[name] = fn
    if uses_backend and name not in BACKEND_OPS:
        BACKEND_OPS.append(name)


def run(op: str, fields: dict, backend: str = "reference") -> dict:
    """Run operation ``op`` on decoded ``fields``; raises Refused, Unsupported or KeyError."""
    if op not in OPERATIONS:
        raise Unsupported(f"operation {op!r} is not implemented by tqref")
    return OPERATIONS[op](fields, backend)
