"""Write the conformance vectors from the reference: ``python -m tqref.conformance.generate --out DIR``.

This is the only writer of ``conformance/v1``. It assigns test ids, counts tests, collects the
notes of the flags each file uses, writes canonical JSON (encoding.canonical_text), the
schemas, the raw PRNG stream CSV and ``index.json`` (file list with counts and SHA-256).
Running it twice gives identical bytes; tests/conformance/test_generate.py regenerates into
a temporary directory and fails on any difference.

Test inputs come from :func:`test_normal`, a portable generator (Irwin–Hall sums of the
tqref PRNG's uniforms, stream 100: only integer and exactly specified float64 operations),
so that the inputs themselves do not depend on libm.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import pathlib
import sys

import numpy as np

from ..reference import codebook as cb
from ..reference.codebook_tables import DISTORTION_RTOL, SOLVER_RTOL
from ..reference import packing, prng, qjl, rotation
from ..tolerance import U32, from_bound, gamma
from . import encoding, operations, schemas, spec

_F32 = np.float32


# --------------------------------------------------------------------------- test data


def test_normal(seed: int, n: int) -> np.ndarray:
    """n approximately standard-normal float32 values: Σ_{k<12} u_k − 6 (Irwin–Hall), summed
    left to right in float64, u_k = prng.uniform(seed, STREAM_TEST_DATA) in row-major (n, 12)."""
    u = prng.uniform(seed, prng.STREAM_TEST_DATA, 12 * n).reshape(n, 12)
    total = u[:, 0].copy()
    for k in range(1, 12):
        total = total + u[:, k]
    return (total - 6.0).astype(_F32)


def one_hot(n: int, i: int) -> np.ndarray:
    """e_i: float32 zeros of length n with a 1 at i."""
    x = np.zeros(n, _F32)
    x[i] = 1
    return x


class Typed:
    """A value with an explicit tensor dtype (for fields that allow several)."""

    def __init__(self, value, dtype: str):
        self.value, self.dtype = value, dtype


def encode_field(field: spec.Field, value):
    if field.kind == "int":
        return int(value)
    if field.kind == "u64":
        return encoding.u64_text(value)
    if field.kind == "string":
        return str(value)
    if isinstance(value, Typed):
        return encoding.tensor(value.value, value.dtype)
    arr = np.asarray(value)
    dtype = field.dtypes[0]
    for candidate in field.dtypes:  # the array's own dtype when the field allows it
        if np.dtype(encoding.DTYPES[candidate]) == arr.dtype.newbyteorder("<"):
            dtype = candidate
    return encoding.tensor(arr, dtype)


# --------------------------------------------------------------------------- file builder


class FileBuilder:
    """Collects groups and tests of one file; :meth:`document` numbers and counts them."""

    def __init__(self, name: str, algorithm: str, type_name: str, header: list):
        self.name, self.algorithm = name, algorithm
        self.type = spec.TEST_TYPES[type_name]
        self.header = header
        self.groups: list = []

    def group(self, comment: str | None = None, **params) -> dict:
        group = {"type": self.type.name, "source": dict(spec.GENERATOR)}
        if comment:
            group["comment"] = comment
        for name, field in self.type.group.items():
            if name in params and params[name] is not None:
                group[name] = encode_field(field, params[name])
            elif field.required:
                raise ValueError(f"{self.name}: group field {name!r} missing")
        unknown = set(params) - set(self.type.group)
        if unknown:
            raise ValueError(f"{self.name}: unknown group fields {sorted(unknown)}")
        group["tests"] = []
        group["_raw"] = {k: v for k, v in params.items() if v is not None}
        self.groups.append(group)
        return group

    def test(self, group: dict, comment: str, flags, inputs: dict, *, result: str = "valid",
             outputs: dict | None = None, tolerance: dict | None = None) -> dict:
        """Add a test; ``outputs`` None computes them with the reference operations."""
        raw = {**group["_raw"], **inputs}
        if outputs is None:
            outputs = compute_outputs(self.type, raw, result, f"{self.name}: {comment}")
        test = {"tcId": 0, "comment": comment, "flags": sorted(set(flags)), "result": result}
        for name, field in self.type.inputs.items():
            if name in inputs and inputs[name] is not None:
                test[name] = encode_field(field, inputs[name])
            elif field.required:
                raise ValueError(f"{self.name}: input {name!r} missing")
        for name, field in self.type.outputs.items():
            if name in outputs:
                test[name] = encode_field(field, outputs[name])
        if tolerance:
            test["tolerance"] = {k: float(tolerance[k]) for k in self.type.outputs if k in tolerance}
        group["tests"].append(test)
        return test

    def document(self) -> dict:
        tc = 0
        used = set()
        groups = []
        for group in self.groups:
            clean = {k: v for k, v in group.items() if k != "_raw"}
            for test in clean["tests"]:
                tc += 1
                test["tcId"] = tc
                used.update(test["flags"])
            groups.append(clean)
        missing = used - set(spec.FLAGS)
        if missing:
            raise ValueError(f"{self.name}: undefined flags {sorted(missing)}")
        notes = {flag: {"bugType": spec.FLAGS[flag][0], "description": spec.FLAGS[flag][1]}
                 for flag in sorted(used)}
        return {"algorithm": self.algorithm, "schema": self.type.schema, "specVersion": spec.SPEC_VERSION,
                "numberOfTests": tc, "header": list(self.header), "notes": notes, "testGroups": groups}


def compute_outputs(test_type: spec.TestType, fields: dict, result: str, where: str) -> dict:
    """Run the type's operations in order, each seeing the previous ones' outputs."""
    fields = dict(fields)
    outputs: dict = {}
    for op_name in test_type.ops:
        op = spec.OPS[op_name]
        if result == "invalid" and not op.on_invalid:
            continue
        try:
            out = operations.run(op_name, fields)
        except operations.Refused:
            if result in ("invalid", "acceptable"):
                return {}
            raise
        if result == "invalid":
            raise ValueError(f"{where}: expected a refusal from {op_name}, got outputs")
        outputs.update(out)
        fields.update(out)
    return outputs


# --------------------------------------------------------------------------- tolerance bounds


def _stages(d: int) -> int:
    """Rounding stages of the Hadamard rotation (3 rounds of up to two log2(m)-stage blocks + scale)."""
    m = rotation.hadamard_block(d)
    blocks = 1 if m == d else 2
    return 3 * blocks * (int(math.log2(m)) + 1) + 2


def _rotated_queries(queries, rot_kind, seed, matrix=None):
    if rot_kind == "haar":
        from ..reference.reduction import ordered_matvec

        return ordered_matvec(matrix, queries).astype(np.float64)
    return rotation.hadamard_forward(queries, seed).astype(np.float64)


def mse_tolerance(raw: dict, out: dict) -> dict:
    d = raw["dim"]
    q = _rotated_queries(raw["queries"], raw["rotation"], raw["seed"], raw.get("matrix"))
    yhat = np.asarray(raw["centroids"], np.float64)[out["indices"].astype(int)]
    norm = float(np.asarray(out["norm"], np.float64))
    a1 = np.abs(q) @ np.abs(yhat)
    qn = np.linalg.norm(q, axis=1)
    est = np.abs(out["estimates"].astype(np.float64))
    bound = norm * (gamma(d) * a1 + _stages(d) * U32 * qn * np.linalg.norm(yhat)) + 2 * U32 * est
    alpha = float(raw["shrinkage"])
    return {"estimates": from_bound(bound), "estimatesUnbiased": from_bound(bound / alpha + U32 * est / alpha)}


def qjl_terms(s, q, z):
    """(A2, A3, ‖Sᵀz‖) of the QJL estimator's error bound for rotated queries q (m, d)."""
    s = np.asarray(s, np.float64)
    a2 = np.abs(q @ s.T).sum(axis=1)
    a3 = np.abs(q) @ np.abs(s).sum(axis=0)
    return a2, a3, np.linalg.norm(s.T @ z)


def prod_tolerance(raw: dict, out: dict, s) -> dict:
    d = raw["dim"]
    q = _rotated_queries(raw["queries"], raw["rotation"], raw["seed"])
    yhat = np.asarray(raw["centroids"], np.float64)[out["indices"].astype(int)]
    z = qjl.signs_of(out["signs"][None], d)[0].astype(np.float64)
    norm = float(np.asarray(out["norm"], np.float64))
    kg = float(raw["scale"]) * float(np.asarray(out["gamma"], np.float64))
    a1 = np.abs(q) @ np.abs(yhat)
    a2, a3, stz = qjl_terms(s, q, z)
    qn = np.linalg.norm(q, axis=1)
    est = np.abs(out["estimates"].astype(np.float64))
    corr = np.abs(q @ np.asarray(s, np.float64).T @ z) * kg
    bound = (norm * (gamma(d) * (a1 + kg * (a2 + a3)) + _stages(d) * U32 * qn * (np.linalg.norm(yhat) + kg * stz))
             + 4 * U32 * (est + norm * corr))
    # xhat = norm · Πᵀ(ŷ + κγ Sᵀz): the matmul error e_j ≤ κγ γ_d Σ_i |S_ij|, rotated (‖·‖₂ kept)
    e = kg * gamma(d) * np.abs(np.asarray(s, np.float64)).sum(axis=0)
    v = yhat + kg * (np.asarray(s, np.float64).T @ z)
    xb = norm * (np.linalg.norm(e) + _stages(d) * U32 * np.linalg.norm(v)) + 2 * U32 * np.max(np.abs(out["xhat"]))
    return {"estimates": from_bound(bound), "xhat": from_bound(xb)}


def qjl_tolerance(raw: dict, out: dict, s) -> dict:
    d = raw["dim"]
    q = np.asarray(raw["queries"], np.float64)
    z = qjl.signs_of(out["signs"][None], d)[0].astype(np.float64)
    kg = float(raw["scale"]) * float(np.asarray(out["gamma"], np.float64))
    a2, a3, _ = qjl_terms(s, q, z)
    est = np.abs(out["estimates"].astype(np.float64))
    return {"estimates": from_bound(kg * gamma(d) * (a2 + a3) + 4 * U32 * est)}


# --------------------------------------------------------------------------- families

_SEED_EXTREME = 2**64 - 1
_SEEDS = [(0, 1), (1, 1), (0x0123456789ABCDEF, 2), (_SEED_EXTREME, 3), (42, 100)]


def header(source: str = "the tqref reference") -> list:
    """The first lines of every file's header: what generated it and how tensors are read."""
    return [f"Generated by tqref.conformance.generate from {source}; do not edit by hand.",
            "Tensors: 'hex' is normative (row-major, little-endian element bytes); 'dec' is for reading."]


_HEADER_COMMON = header()


def _dim_flags(d: int) -> list:
    return (["SmallDim"] if d <= 4 else []) + (["NonPowerOfTwoDim"] if d & (d - 1) else [])


def _prng_files() -> list:
    files = []
    ranges = [(0, 16, ["Pseudorandom"]), (1000, 4, ["Pseudorandom"]), (2**32 - 2, 4, ["HighCounter"]),
              (2**63 - 1, 2, ["HighCounter"]), (2**64 - 2, 4, ["HighCounter"])]
    specs = [
        ("prng_raw_test", "TQ-PRNG-RAW", "PrngRawTest",
         ["Raw outputs of the counter-based SplitMix64 stream (tqref/reference/prng.py):",
          "key(seed, stream) = mix64(seed + GOLDEN·(stream + 1)); raw(seed, stream, i) = mix64(key + GOLDEN·(i + 1)),",
          "all arithmetic modulo 2^64 (the index i + 1 wraps too). Check prng_streams.csv first."]),
        ("prng_rademacher_test", "TQ-PRNG-RADEMACHER", "PrngRademacherTest",
         ["Rademacher signs: +1 where bit 63 of raw(seed, stream, i) is 0, else −1."]),
        ("prng_uniform_test", "TQ-PRNG-UNIFORM", "PrngUniformTest",
         ["Uniform float64 on [0, 1): (raw >> 11) · 2^−53, exact."]),
    ]
    for name, algo, type_name, header in specs:
        fb = FileBuilder(name, algo, type_name, _HEADER_COMMON + header)
        for seed, stream in _SEEDS:
            g = fb.group(seed=seed, stream=stream)
            for start, count, flags in ranges:
                if type_name != "PrngRawTest" and start == 1000:
                    continue
                extra = ["ExtremeSeed"] if seed in (0, _SEED_EXTREME) else []
                fb.test(g, f"seed {seed:#x}, stream {stream}, i = {start} … {start + count - 1} (mod 2^64)",
                        flags + extra, {"start": start, "count": count})
        files.append(fb)
    fb = FileBuilder("prng_gaussian_test", "TQ-PRNG-GAUSSIAN", "PrngGaussianTest", _HEADER_COMMON + [
        "Box–Muller normals of the statistical tier: sample i = sqrt(−2 ln u1) · cos(2π u2) with",
        "u1 = ((raw(2i) >> 11) + 1) · 2^−53 and u2 = (raw(2i+1) >> 11) · 2^−53, in float64.",
        "libm's log and cos are not correctly rounded everywhere: compare with the stated tolerance.",
    ])
    for seed, stream in [(1, prng.STREAM_HAAR), (7, prng.STREAM_QJL_GAUSSIAN), (_SEED_EXTREME, prng.STREAM_HAAR)]:
        g = fb.group(seed=seed, stream=stream)
        out = operations.prng_gaussian({"seed": seed, "stream": stream, "count": 32})
        tol = 1e-13 * max(1.0, float(np.max(np.abs(out["values"]))))
        fb.test(g, f"first 32 normals of seed {seed:#x}, stream {stream}",
                ["StatisticalTier"] + (["ExtremeSeed"] if seed == _SEED_EXTREME else []), {"count": 32},
                outputs=out, tolerance={"values": tol})
    files.append(fb)
    return files


def prng_stream_csv() -> str:
    """``seed,stream,index,value`` rows (hex) for a few streams: the first file a porter checks."""
    lines = ["seed,stream,index,value"]
    indices = list(range(256)) + [2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
    for seed, stream in _SEEDS:
        key = prng.stream_key(seed, stream)
        with np.errstate(over="ignore"):
            vals = prng._mix64(key + prng.GOLDEN * (np.array(indices, dtype=np.uint64) + np.uint64(1)))
        for i, v in zip(indices, vals):
            lines.append(f"{encoding.u64_text(seed)},{stream},{encoding.u64_text(i)},{encoding.u64_text(int(v))}")
    return "\n".join(lines) + "\n"


def _fma_dot(a, b) -> np.float32:
    """The written order computed with fused multiply-adds in the lanes (a contracted port)."""
    pad = (-len(a)) % 32
    lanes_a = np.pad(a, (0, pad)).reshape(-1, 32).astype(np.float64)
    lanes_b = np.pad(b, (0, pad)).reshape(-1, 32).astype(np.float64)
    s = (lanes_a[0] * lanes_b[0]).astype(_F32)
    for k in range(1, lanes_a.shape[0]):  # float64 a·b is exact for float32 inputs: one rounding = FMA
        s = (s.astype(np.float64) + lanes_a[k] * lanes_b[k]).astype(_F32)
    width = 32
    while width > 1:
        width //= 2
        s = s[:width] + s[width:2 * width]
    return s[0]


def _ordered_dot_file() -> FileBuilder:
    fb = FileBuilder("ordered_dot_test", "TQ-ORDERED-DOT", "OrderedDotTest", _HEADER_COMMON + [
        "Every sum that feeds a quantization decision uses this order (tqref/reference/reduction.py):",
        "lane l (0..31) sums the float32-rounded products p_j, j = l, l+32, … in increasing j, starting from",
        "the first term; then s[l] += s[l+16] for l < 16, then offsets 8, 4, 2, 1; the result is s[0].",
        "No FMA: each product is rounded to float32 before it is added.",
    ])
    g = fb.group()
    fb.test(g, "worked example a = [1, 2, 3], b = [1, 1, 1]", ["KnownAnswer", "ShortVector"],
            {"n": 3, "a": np.array([1, 2, 3], _F32), "b": np.ones(3, _F32)})
    for k, n in enumerate((1, 5, 31, 32, 33, 64, 100, 128, 257)):
        a, b = test_normal(1000 + k, n), test_normal(2000 + k, n)
        flags = ["Pseudorandom", "LongVector" if n > 32 else "ShortVector"]
        if _fma_dot(a, b) != operations.ordered_dot({"n": n, "a": a, "b": b})["dot"]:
            flags.append("FmaContraction")
        fb.test(g, f"random, n = {n}", flags, {"n": n, "a": a, "b": b})
    # cancellation: large terms that cancel, small ones that survive only in some orders
    found = 0
    for k in range(200):
        n = 96
        a = test_normal(3000 + k, n)
        a[::7] *= _F32(4096.0)
        b = test_normal(4000 + k, n)
        ref = operations.ordered_dot({"n": n, "a": a, "b": b})["dot"]
        p = (a * b).astype(_F32)
        seq = _F32(0)
        for t in p:
            seq = _F32(seq + t)
        fma_like = np.float32(np.dot(a.astype(np.float64), b.astype(np.float64)))
        if ref != seq and ref != fma_like and ref != np.sum(p, dtype=_F32):
            fb.test(g, "cancellation: sequential, pairwise and float64 sums all give other float32 results",
                    ["CancellationOrder", "LongVector"], {"n": n, "a": a, "b": b})
            found += 1
            if found == 2:
                break
    fb.test(g, "all products −0.0", ["NegativeZero"], {"n": 4, "a": np.full(4, -0.0, _F32), "b": np.ones(4, _F32)})
    fb.test(g, "subnormal products", ["SubnormalInput"],
            {"n": 40, "a": test_normal(5000, 40) * _F32(1e-20), "b": test_normal(5001, 40) * _F32(1e-20)})
    return fb


def _vector_cases(d: int, seed: int, *, full: bool, f16: bool = False):
    """(comment, flags, x float32 (d,), result) input vectors for norm/mse/prod tests."""
    cases = []
    for k in range(3 if full else 2):
        cases.append((f"random normal #{k}", ["Pseudorandom"], test_normal(seed + k, d), "valid"))
    cases.append(("zero vector", ["ZeroVector"], np.zeros(d, _F32), "valid"))
    if not full:
        return cases
    onehot = np.zeros(d, _F32)
    onehot[d // 4] = _F32(-2.0)
    outlier = test_normal(seed + 10, d)
    outlier[d // 5] *= _F32(300.0)
    cases += [
        ("all −0.0", ["NegativeZero"], np.full(d, -0.0, _F32), "valid"),
        ("one-hot −2·e_{d/4}", ["OneHot"], onehot, "valid"),
        ("constant −0.5", ["Constant"], np.full(d, -0.5, _F32), "valid"),
        ("outlier ×300 at d/5", ["Outlier"], outlier, "valid"),
        ("tiny: normal × 1e-30 (squares underflow)", ["TinyValues"], test_normal(seed + 11, d) * _F32(1e-30), "valid"),
        ("subnormal inputs: normal × 1e-40", ["SubnormalInput"],
         (test_normal(seed + 12, d).astype(np.float64) * 1e-40).astype(_F32), "valid"),
        ("huge: normal × 1e30 (squares overflow)", ["HugeValues"], test_normal(seed + 13, d) * _F32(1e30), "valid"),
        ("norm overflows float32: all 3e38", ["NormOverflow"], np.full(d, 3e38, _F32), "invalid"),
    ]
    nan = test_normal(seed + 14, d)
    nan[d // 2] = np.nan
    inf = test_normal(seed + 15, d)
    inf[0] = -np.inf
    cases += [("NaN at d/2", ["NanInput"], nan, "invalid"), ("−inf at 0", ["InfInput"], inf, "invalid")]
    if f16:  # float16 storage cannot hold the extreme norms: the quantizer must refuse them
        relabel = {"TinyValues": "Float16NormUnderflow", "SubnormalInput": "Float16NormUnderflow",
                   "HugeValues": "Float16NormOverflow"}
        cases = [(c, sorted(set(fl + [relabel[f] for f in fl if f in relabel])) if any(f in relabel for f in fl)
                  else fl, x, "invalid" if any(f in relabel for f in fl) else r) for c, fl, x, r in cases]
        cases = [(c, [f for f in fl if f != "SubnormalNorm"], x, r) for c, fl, x, r in cases]
        cases += [
            ("norm > 65504 does not fit float16", ["Float16NormOverflow"], test_normal(seed + 16, d) * _F32(3e4),
             "invalid"),
            ("norm below float16's smallest subnormal", ["Float16NormUnderflow"],
             test_normal(seed + 17, d) * _F32(1e-10), "invalid"),
        ]
    return cases


def _split_norm_file() -> FileBuilder:
    fb = FileBuilder("split_norm_test", "TQ-SPLIT-NORM", "SplitNormTest", _HEADER_COMMON + [
        "Scale-safe norm (tqref/reference/mse.py split_norm): m = max|x_j|; 0 -> norm 0, unit 0; else",
        "E = frexp exponent of m, xs = ldexp(x, −E) (exact), s = ordered_dot(xs, xs), ns = sqrt(s) (float32),",
        "unit = xs / ns (float32 division), norm = ldexp(ns, E) rounded to float32 (+inf on overflow).",
    ])
    for d, seed in ((3, 10), (17, 20), (128, 30)):
        g = fb.group(dim=d)
        for comment, flags, x, result in _vector_cases(d, seed, full=True):
            if result == "invalid" and "NormOverflow" not in flags:
                continue  # NaN / inf: split_norm's domain is finite input
            # an overflowing norm is a valid split_norm result (+inf); the quantizers refuse it
            fb.test(g, comment, flags + (["SmallDim"] if d <= 4 else []), {"x": x})
    return fb


def _fwht_file() -> FileBuilder:
    fb = FileBuilder("fwht_test", "TQ-FWHT", "FwhtTest", _HEADER_COMMON + [
        "Walsh–Hadamard transform, natural order: stages h = 1, 2, 4, …, n/2; in stage h each pair",
        "(j, j + h) with j mod 2h < h becomes (x_j + x_{j+h}, x_j − x_{j+h}); then every element is",
        "multiplied by float32(1) / sqrt(float32(n)) (two correctly rounded operations).",
    ])
    g = fb.group()
    fb.test(g, "worked example [1, 0, 0, 0]", ["KnownAnswer"], {"n": 4, "x": np.array([1, 0, 0, 0], _F32)})
    for k, n in enumerate((1, 2, 8, 32, 128, 256)):
        fb.test(g, f"random, n = {n}", ["Pseudorandom"], {"n": n, "x": test_normal(6000 + k, n)})
    fb.test(g, "one-hot e_5, n = 64", ["OneHot"], {"n": 64, "x": one_hot(64, 5)})
    fb.test(g, "constant 3, n = 16", ["Constant"], {"n": 16, "x": np.full(16, 3.0, _F32)})
    return fb


def _hadamard_file() -> FileBuilder:
    fb = FileBuilder("rotation_hadamard_test", "TQ-ROTATION-HADAMARD", "HadamardRotationTest", _HEADER_COMMON + [
        "Randomized Hadamard rotation (tqref/reference/rotation.py hadamard_steps): step s multiplies the",
        "whole vector by s_s = prng_rademacher(seed, stream 1, start s·d, count d), then applies the",
        "normalised H_m to one block. d a power of two: 3 steps on [0, d). Otherwise (m = largest power of",
        "two < d): 6 steps alternating [0, m) and [d − m, d). The inverse undoes the steps in reverse order",
        "(block transform, then signs). Portable tier: every output is exact. 'signs' lists s_0 … s_{S−1}.",
    ])
    for d, seed in ((2, 0), (3, 1), (5, 7), (8, 1), (17, 3), (32, _SEED_EXTREME), (96, 5), (100, 2), (128, 1),
                    (256, 9)):
        g = fb.group(dim=d, seed=seed, signs=rotation.hadamard_signs(d, seed).astype(np.int8))
        extra = _dim_flags(d) + (["ExtremeSeed"] if seed in (0, _SEED_EXTREME) else [])
        for k in range(2):
            fb.test(g, f"random, d = {d}", ["Pseudorandom"] + extra, {"x": test_normal(7000 + 10 * d + k, d)})
        fb.test(g, f"e_0, d = {d}", ["OneHot"] + extra, {"x": one_hot(d, 0)})
        if d in (17, 128):
            fb.test(g, f"constant, d = {d}", ["Constant"] + extra, {"x": np.full(d, 0.25, _F32)})
    return fb


def _haar_file() -> FileBuilder:
    fb = FileBuilder("rotation_haar_test", "TQ-ROTATION-HAAR", "HaarRotationTest", _HEADER_COMMON + [
        "Haar rotation, statistical tier: Π = Q·diag(sign(diag R)) of the QR of d×d generator Gaussians",
        "(prng_gaussian, stream 2, row-major), cast to float32. LAPACK is not bit-portable, so Π is shipped;",
        "a regenerated Π must agree within matrixTolerance. Given Π, outputs are exact: y_i =",
        "ordered_dot(Π[i, :], x) (forward) and ordered_dot(Π[:, i], x) (inverse).",
    ])
    for d, seed in ((16, 1), (64, 2)):
        g = fb.group(dim=d, seed=seed, matrix=rotation.haar_matrix(d, seed), matrixTolerance=np.float64(1e-6))
        for k in range(3):
            fb.test(g, f"random, d = {d}", ["Pseudorandom", "StatisticalTier"], {"x": test_normal(8000 + d + k, d)})
        fb.test(g, f"e_3 (picks column / row 3), d = {d}", ["OneHot", "StatisticalTier"], {"x": one_hot(d, 3)})
    return fb


def _codebook_files() -> list:
    files = []
    header = _HEADER_COMMON + [
        "Lloyd–Max codebooks (tqref/reference/codebook.py). The solver is a derivation tool, not part of the",
        "portable spec: ports load these tables. Values are compared with the stated tolerance (a re-solve",
        "on another platform may differ in the last bits); quantization vectors carry their codebook.",
    ]
    fb = FileBuilder("codebook_beta_test", "TQ-CODEBOOK-BETA", "CodebookTest", header + [
        "Law 'beta': the exact marginal f_d(y) ∝ (1 − y²)^((d−3)/2) of a rotated unit vector's coordinate."])
    g = fb.group(law="beta")
    pairs = [(b, d) for d in (2, 3, 4, 16, 64, 96, 128, 256, 1024) for b in (1, 2, 3, 4)] + [(8, 128), (5, 64)]
    for b, d in pairs:
        flags = (["SmallDim"] if d <= 4 else []) + (["HighBits"] if b == 8 else [])
        _codebook_test(fb, g, b, d, "beta", flags)
    files.append(fb)
    fb = FileBuilder("codebook_gaussian_test", "TQ-CODEBOOK-GAUSSIAN", "CodebookTest", header + [
        "Law 'gaussian': the N(0, 1/d) limit; the N(0, 1) codebook divided by sqrt(d)."])
    g = fb.group(law="gaussian")
    for b, d in [(b, 128) for b in range(1, 9)] + [(3, 64), (3, 256)]:
        _codebook_test(fb, g, b, d, "gaussian", ["GaussianCodebook"] + (["HighBits"] if b == 8 else []))
    files.append(fb)
    return files


def _codebook_test(fb, g, b, d, law, flags):
    out = operations.codebook({"bits": b, "dim": d, "law": law})
    top = float(np.max(np.abs(out["centroids"])))
    tol = {"centroids": SOLVER_RTOL * top, "boundaries": SOLVER_RTOL * top,
           "distortion": DISTORTION_RTOL * float(out["distortion"]),
           "centroidsF32": float(np.spacing(_F32(top)))}
    fb.test(g, f"{law}, b = {b}, d = {d}", flags or ["KnownAnswer"], {"bits": b, "dim": d}, outputs=out,
            tolerance=tol)


def _nearest_index_file() -> FileBuilder:
    fb = FileBuilder("nearest_index_test", "TQ-NEAREST-INDEX", "NearestIndexTest", _HEADER_COMMON + [
        "index(v) = number of boundaries b_k with b_k < v, the float32 v promoted exactly to float64.",
        "A value on a boundary goes to the lower cell; ±0.0 land in cell K/2 − 1; NaN gives 0 (a",
        "convention of the runtime profiles; the quantizers refuse NaN before this step).",
    ])
    g = fb.group(bits=2, boundaries=np.array([-0.5, 0.0, 0.5]))
    vals = np.array([-1.0, -0.5, -0.25, 0.0, -0.0, 0.25, 0.5, 0.75], _F32)
    fb.test(g, "values on and between float32-exact boundaries", ["BoundaryTie", "KnownAnswer"],
            {"n": len(vals), "values": vals})
    near = np.array([np.nextafter(_F32(-0.5), _F32(-1)), np.nextafter(_F32(-0.5), _F32(1)),
                     np.nextafter(_F32(0), _F32(-1)), np.nextafter(_F32(0), _F32(1)),
                     np.nextafter(_F32(0.5), _F32(0)), np.nextafter(_F32(0.5), _F32(1))], _F32)
    fb.test(g, "one float32 ulp either side of each boundary", ["BoundaryTie"], {"n": len(near), "values": near})
    fb.test(g, "±inf", ["InfInput"], {"n": 2, "values": np.array([-np.inf, np.inf], _F32)})
    fb.test(g, "NaN -> 0", ["NanInput"], {"n": 2, "values": np.array([np.nan, -np.nan], _F32)})
    for b, d in ((1, 128), (3, 128), (4, 64), (2, 17)):
        book = cb.lloyd_max(b, d)
        g = fb.group(f"beta codebook b = {b}, d = {d}", bits=b, boundaries=np.array(book.boundaries))
        bnd = book.boundaries
        f32 = bnd.astype(_F32)
        around = np.concatenate([np.nextafter(f32, _F32(-1)), f32, np.nextafter(f32, _F32(1))])
        fb.test(g, "each boundary rounded to float32, and its float32 neighbours",
                ["Float32BoundaryRounding", "BoundaryTie"], {"n": len(around), "values": around})
        rnd = test_normal(9000 + b * 100 + d, 64) / _F32(math.sqrt(d))
        fb.test(g, "random values of the coordinate's scale", ["Pseudorandom"], {"n": 64, "values": rnd})
    return fb


def _packing_files() -> list:
    header = _HEADER_COMMON + [
        "Layout (tqref/reference/packing.py): one LSB-first stream; index j occupies bits [b·j, b·j + b);",
        "stream bit k is bit (k mod 8) of byte k // 8; a partial last byte is zero-filled;",
        "length ceil(count·b / 8). Worked example b = 3, [5, 2, 7] -> d5 01.",
    ]
    cases = [(3, np.array([5, 2, 7], np.uint8), "worked example", ["KnownAnswer", "PartialByte"])]
    for bits in range(1, 9):
        for k, count in enumerate((1, 3, 8, 13, 128)):
            raw = prng.raw_stream(bits * 100 + k, prng.STREAM_TEST_DATA, count)
            idx = (raw >> np.uint64(64 - bits)).astype(np.uint8)  # the top bits: uniform b-bit indices
            flags = ["Pseudorandom"] + (["PartialByte"] if (count * bits) % 8 else [])
            cases.append((bits, idx, f"random, b = {bits}, count = {count}", flags))
        cases.append((bits, np.full(9, (1 << bits) - 1, np.uint8), f"all ones, b = {bits}",
                      ["MaxIndex"] + (["PartialByte"] if (9 * bits) % 8 else [])))
    pack = FileBuilder("pack_test", "TQ-PACK", "PackTest", header)
    g = pack.group()
    for bits, idx, comment, flags in cases:
        pack.test(g, comment, flags, {"bits": bits, "count": len(idx), "indices": idx})
    unpack = FileBuilder("unpack_test", "TQ-UNPACK", "UnpackTest", header + [
        "A buffer whose length differs from ceil(count·b / 8) must be refused (result 'invalid')."])
    g = unpack.group()
    for bits, idx, comment, flags in cases:
        unpack.test(g, comment, flags, {"bits": bits, "count": len(idx), "packed": packing.pack_bits(idx, bits)})
    for bits, count in ((3, 8), (4, 5), (1, 9)):
        good = packing.pack_bits(np.ones(count, np.uint8), bits)
        unpack.test(g, f"truncated: {len(good) - 1} bytes for {count} × {bits} bits", ["TruncatedBuffer"],
                    {"bits": bits, "count": count, "packed": good[:-1]}, result="invalid")
        unpack.test(g, f"oversized: {len(good) + 1} bytes for {count} × {bits} bits", ["OversizedBuffer"],
                    {"bits": bits, "count": count, "packed": np.append(good, np.uint8(0))}, result="invalid")
    return [pack, unpack]


def _queries(d: int, seed: int, m: int = 2) -> np.ndarray:
    q = test_normal(seed, m * d).reshape(m, d)
    return q


def _mse_files() -> list:
    files = []
    header = _HEADER_COMMON + [
        "TurboQuant_mse (paper Algorithm 1; tqref/reference/mse.py): split_norm, rotate, nearest_index",
        "against 'boundaries', pack. Dequantize: centroids[idx] (float32), inverse rotation, × norm (one",
        "float32 multiply). These steps are written down, so norm, indices, packed, rotated and xhat are",
        "exact. Estimates (⟨q, x⟩ ≈ norm·⟨Π q, ŷ⟩, and that divided by 'shrinkage') use unordered dot",
        "products: compared with each test's tolerance. Invalid tests: the quantizer must refuse x.",
    ]
    fb = FileBuilder("mse_hadamard_test", "TQ-MSE-HADAMARD", "MseTest", header + [
        "Rotation: 3-round randomized Hadamard (portable tier)."])
    groups = [
        (128, 3, 1, "beta", "float32", True), (128, 1, 2, "beta", "float32", False),
        (128, 2, 3, "beta", "float32", False), (128, 4, 4, "beta", "float32", False),
        (17, 2, 5, "beta", "float32", True), (3, 3, 6, "beta", "float32", False),
        (256, 4, _SEED_EXTREME, "beta", "float32", False), (96, 3, 7, "beta", "float32", False),
        (64, 8, 8, "beta", "float32", False), (128, 3, 9, "gaussian", "float32", False),
        (128, 4, 10, "beta", "float16", True),
    ]
    for d, b, seed, law, norm_dtype, full in groups:
        _mse_group(fb, d, b, seed, "hadamard", law, norm_dtype, full)
    files.append(fb)
    fb = FileBuilder("mse_haar_test", "TQ-MSE-HAAR", "MseTest", header + [
        "Rotation: Haar (statistical tier); Π is the group's 'matrix' (see rotation_haar_test.json)."])
    for d, b, seed in ((64, 3, 2), (16, 2, 1)):
        _mse_group(fb, d, b, seed, "haar", "beta", "float32", d == 64)
    files.append(fb)
    return files


def _mse_group(fb, d, b, seed, rot, law, norm_dtype, full):
    book = cb.lloyd_max(b, d, law)
    matrix = rotation.haar_matrix(d, seed) if rot == "haar" else None
    params = dict(dim=d, bits=b, seed=seed, rotation=rot, codebookLaw=law, normDtype=norm_dtype,
                  centroids=book.centroids_f32, boundaries=np.array(book.boundaries),
                  shrinkage=np.float64(cb.shrinkage(book)), matrix=matrix, m=2,
                  queries=_queries(d, 11000 + d * 16 + b))
    g = fb.group(f"d = {d}, b = {b}, {rot}, {law} codebook, {norm_dtype} norms", **params)
    extra = _dim_flags(d) + (["StatisticalTier"] if rot == "haar" else []) + (
        ["GaussianCodebook"] if law == "gaussian" else []) + (["Float16Norms"] if norm_dtype == "float16" else []) + (
        ["HighBits"] if b == 8 else []) + (["ExtremeSeed"] if seed == _SEED_EXTREME else [])
    for comment, flags, x, result in _vector_cases(d, 12000 + d * 16 + b, full=full, f16=norm_dtype == "float16"):
        _quantizer_test(fb, g, comment, flags + extra, x, result, mse_tolerance, _rotated_zero)


def _rotated_zero(x, out) -> list:
    """RotatedZero when a non-zero input has a rotated coordinate that is exactly ±0."""
    return ["RotatedZero"] if np.any(out["rotated"] == 0) and np.any(x != 0) else []


def _quantizer_test(fb, g, comment, flags, x, result, tolerance, more_flags=None) -> None:
    """One input vector of an mse or prod file. A refusal ('invalid') carries no outputs;
    otherwise the reference's outputs, the flag SubnormalNorm when the stored norm is a
    float32 subnormal, ``more_flags(x, out)``, and ``tolerance(raw, out)``."""
    if result == "invalid":
        fb.test(g, comment, flags, {"x": x}, result="invalid")
        return
    raw = {**g["_raw"], "x": x}
    out = compute_outputs(fb.type, raw, result, comment)
    norm = abs(float(np.asarray(out["norm"], np.float64)))
    flags = flags + (["SubnormalNorm"] if 0 < norm < np.finfo(np.float32).tiny else [])
    if more_flags is not None:
        flags = flags + more_flags(x, out)
    fb.test(g, comment, flags, {"x": x}, outputs=out, tolerance=tolerance(raw, out))


def _projection(kind: str, d: int, seed: int):
    """(S, group fields, flags) of a QJL projection: a Rademacher S comes from the PRNG (portable,
    not shipped); the others are shipped as the group's 'matrix' (statistical tier)."""
    s = qjl.projection_matrix(kind, d, seed)
    portable = kind == "rademacher"
    fields = dict(projection=kind, matrix=None if portable else s, scale=np.float64(qjl.estimator_scale(kind, d)))
    return s, fields, ([] if portable else ["StatisticalTier"]) + _dim_flags(d)


def _qjl_files() -> list:
    files = []
    for kind, dims in (("rademacher", (16, 100, 128)), ("gaussian", (64,)), ("orthogonal", (64,))):
        tier = ("Portable tier: S[i, j] = prng_rademacher(seed, stream 5, start 0, count d·d)[i·d + j] "
                "(not shipped)." if kind == "rademacher" else
                "Statistical tier: S is the group's 'matrix' (generated with libm/LAPACK; use it as given).")
        fb = FileBuilder(f"qjl_{kind}_test", f"TQ-QJL-{kind.upper()}", "QjlTest", _HEADER_COMMON + [
            "QJL sketch (tqref/reference/qjl.py): bit i = 1 when ordered_dot(S[i, :], r) ≥ 0 (so −0.0 and",
            "+0.0 give 1), packed LSB-first; γ = sqrt(ordered_dot(r, r)). Estimate for a query q:",
            "κ·γ·⟨S q, z⟩ with z = 2·bit − 1, κ = 'scale' (float32(κ)·γ in the reference); unordered: tolerance.",
            tier,
        ])
        for d in dims:
            seed = 3 + d
            s, fields, extra = _projection(kind, d, seed)
            g = fb.group(f"d = {d}, {kind} S", dim=d, seed=seed, **fields, m=2, queries=_queries(d, 13000 + d))
            cases = [(f"random residual #{k}", ["Pseudorandom"], test_normal(14000 + d * 4 + k, d) * _F32(0.05))
                     for k in range(3)]
            cases.append(("zero residual", ["ZeroResidual", "SignOfZero"], np.zeros(d, _F32)))
            if kind == "rademacher":  # r = e0 − S[0,0]·S[0,1]·e1 makes row 0's projection exactly 0
                r = np.zeros(d, _F32)
                r[0], r[1] = 1.0, -s[0, 0] * s[0, 1]
                cases.append(("row 0 projects to exactly 0", ["SignOfZero"], r))
            for comment, flags, r in cases:
                raw = {**g["_raw"], "residual": r}
                out = compute_outputs(fb.type, raw, "valid", comment)
                fb.test(g, comment, flags + extra, {"residual": r}, outputs=out,
                        tolerance=qjl_tolerance(raw, out, s))
        files.append(fb)
    return files


def _prod_files() -> list:
    files = []
    for kind, groups in (("rademacher", ((128, 3, 1, True), (100, 2, 2, False), (16, 4, 3, False))),
                         ("gaussian", ((64, 3, 4, True),)), ("orthogonal", ((64, 3, 5, False),))):
        tier = ("Projection: Rademacher S from the PRNG (stream 5), portable tier." if kind == "rademacher" else
                "Projection: the group's 'matrix' S (statistical tier).")
        fb = FileBuilder(f"prod_{kind}_test", f"TQ-PROD-{kind.upper()}", "ProdTest", _HEADER_COMMON + [
            "TurboQuant_prod (paper Algorithm 2; tqref/reference/prod.py): mse quantize with bits − 1 bits,",
            "residual r = rotated − centroids[idx] (float32, rotated domain), QJL sketch of r (signs, γ).",
            "norm, indices, packed, signs and γ are exact. xhat = norm·Πᵀ(ŷ + κγ Sᵀz) and the estimates",
            "norm·(⟨Π q, ŷ⟩ + κγ⟨S Π q, z⟩) use matrix products: compared with each test's tolerance.",
            tier,
        ])
        for d, b, seed, full in groups:
            book = cb.lloyd_max(b - 1, d)
            s, fields, extra = _projection(kind, d, seed)
            g = fb.group(f"d = {d}, b = {b} ({b - 1}-bit mse + QJL), {kind} S", dim=d, bits=b, seed=seed,
                         rotation="hadamard", codebookLaw="beta", normDtype="float32", centroids=book.centroids_f32,
                         boundaries=np.array(book.boundaries), **fields, m=2, queries=_queries(d, 15000 + d + b))
            for comment, flags, x, result in _vector_cases(d, 16000 + d + b, full=full):
                _quantizer_test(fb, g, comment, flags + extra, x, result, functools.partial(prod_tolerance, s=s))
        files.append(fb)
    return files


def builders() -> list:
    """Every file builder, in ladder order (the order of index.json)."""
    out = []
    out += _prng_files()
    out.append(_ordered_dot_file())
    out.append(_split_norm_file())
    out.append(_fwht_file())
    out.append(_hadamard_file())
    out.append(_haar_file())
    out += _codebook_files()
    out.append(_nearest_index_file())
    out += _packing_files()
    out += _mse_files()
    out += _qjl_files()
    out += _prod_files()
    from . import families

    out += families.extra_builders()
    return out


# --------------------------------------------------------------------------- writing

STREAM_CSV = "prng_streams.csv"
INDEX = "index.json"


def render() -> dict:
    """relative path -> file text for the whole vector set (nothing written)."""
    files: dict = {}
    entries = []
    for fb in builders():
        doc = fb.document()
        text = encoding.canonical_text(doc)
        path = f"{fb.name}.json"
        files[path] = text
        entries.append({"file": path, "algorithm": doc["algorithm"], "schema": doc["schema"],
                        "testType": fb.type.name, "numberOfTests": doc["numberOfTests"],
                        "sha256": hashlib.sha256(text.encode()).hexdigest()})
    files[STREAM_CSV] = prng_stream_csv()
    for name, schema in schemas.all_schemas().items():
        files[f"schemas/{name}"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    index = {"specVersion": spec.SPEC_VERSION, "generator": dict(spec.GENERATOR),
             "rawStreams": {"file": STREAM_CSV,
                            "sha256": hashlib.sha256(files[STREAM_CSV].encode()).hexdigest()},
             "files": entries}
    files[INDEX] = encoding.canonical_text(index)
    return files


def render_family(builders: list, generator: str) -> dict:
    """relative path -> text of a vector family added beside v1 (real-v1, norm16-v1): its files,
    the schemas they use (and the common one) and an index.json naming ``generator``, the
    module that wrote it, with no PRNG stream file (lint.py tells added families by this)."""
    files, entries, used = {}, [], set()
    for fb in builders:
        doc = fb.document()
        text = encoding.canonical_text(doc)
        files[f"{fb.name}.json"] = text
        used.add(fb.type.schema)
        entries.append({"file": f"{fb.name}.json", "algorithm": doc["algorithm"], "schema": doc["schema"],
                        "testType": fb.type.name, "numberOfTests": doc["numberOfTests"],
                        "sha256": hashlib.sha256(text.encode()).hexdigest()})
    for name, schema in schemas.all_schemas().items():
        if name in used or name == schemas.COMMON:
            files[f"schemas/{name}"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    index = {"specVersion": spec.SPEC_VERSION, "generator": {"name": generator, "version": "1"}, "files": entries}
    files[INDEX] = encoding.canonical_text(index)
    return files


def write(out_dir, files: dict | None = None) -> dict:
    """Write the vector set into ``out_dir`` (created); stale .json files there are removed."""
    out = pathlib.Path(out_dir)
    files = render() if files is None else files
    (out / "schemas").mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.json")) + list((out / "schemas").glob("*.json")):
        if str(old.relative_to(out)) not in files:
            old.unlink()
    for rel, text in files.items():
        (out / rel).write_text(text, encoding="utf-8")
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tqref.conformance.generate",
                                     description="Write the tqref conformance vectors.")
    parser.add_argument("--out", required=True, help="output directory, e.g. conformance/v1")
    args = parser.parse_args(argv)
    files = write(args.out)
    total = sum(len(t.encode()) for t in files.values())
    print(f"wrote {len(files)} files ({total / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
