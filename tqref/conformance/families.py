"""Vector families built on optional parts of tqref: the KV cache and the runtime profiles.

Each family registers its test type, operations and flags (spec.register_type,
operations.register, spec.register_flags) when the module it exercises imports; the
generator then adds its files. If ``tqref.KVCache`` or a profile module is missing, its
family is simply absent (and the drift test reports the difference from the shipped set).
"""

from __future__ import annotations

import importlib

import numpy as np

from .. import tolerance
from . import operations, spec
from .spec import I, S, T, U, Op, TestType

_F32 = np.float32
FLAGS = {
    "GroupedQueryAttention": ("FUNCTIONALITY", "More attention heads than KV heads: head a reads KV head "
                                               "a // (heads / kv_heads)."),
    "Causal": ("FUNCTIONALITY", "Causal attention: query i (the last q_len positions) sees keys 0 … T − q_len + i."),
    "PrefillDecode": ("FUNCTIONALITY", "A prefill of several positions, then single-position decode appends."),
    "Debiased": ("FUNCTIONALITY", "Key scores divided by α_k and values by α_v (unbiased estimates)."),
    "BatchOfTwo": ("FUNCTIONALITY", "Batch size 2: each sequence is quantized and attended independently."),
    "ProdKeys": ("FUNCTIONALITY", "Keys in prod mode: (b − 1)-bit codes + QJL signs; the QJL term is a logit bias."),
    "KnownBug": ("KNOWN_BUG", "Reproduces a documented bug of the runtime (docs/runtimes/): the profile must "
                              "match the runtime's bytes, not the paper."),
    "BelowMinNorm": ("EDGE_CASE", "The norm is below the runtime's minimum norm: stored as a zero vector."),
    "NanPropagates": ("EDGE_CASE", "The runtime does not reject NaN: the profile reproduces its bytes "
                                   "(NaN scale, index 0 …)."),
    "InfNorm": ("EDGE_CASE", "The sum of squares overflows: the runtime stores an infinite scale."),
}


# --------------------------------------------------------------------------- KV cache


def _have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a half-written module counts as absent
        return False
    return True


def _kv_available() -> bool:
    return _have("tqref.cache") and hasattr(importlib.import_module("tqref"), "KVCache")


KV_TYPE = TestType(
    "KvCacheTest", "kv_cache_test_schema_v1.json",
    "Compressed KV cache (tqref.KVCache, turboquant-rs TqCache semantics): appended K/V codes, memory, "
    "dequantized K/V, QJL logit bias and attention over the codes.",
    {"dim": I("head dimension d"), "numKvHeads": I("KV heads H"), "numHeads": I("attention heads A (a multiple of H)"),
     "batch": I("batch size B"), "keyBits": I("key bits (prod: b − 1 mse bits + 1 QJL bit)"),
     "valueBits": I("value bits"), "mode": S("key mode", "mse", "prod"), "seed": U("seed of Π (and S)"),
     "projection": S("QJL projection (prod mode)", "rademacher", "gaussian", "orthogonal", required=False),
     "normDtype": S("dtype of stored norms and γ", "float32", "float16"),
     "debiased": I("1: key scores divided by α_k (mse mode)"), "debiasedValues": I("1: values divided by α_v"),
     "keyCentroids": T("float32 key (mse-stage) centroids", "float32"),
     "keyBoundaries": T("float64 key boundaries", "float64"),
     "valueCentroids": T("float32 value centroids", "float32"),
     "valueBoundaries": T("float64 value boundaries", "float64"),
     "keyShrinkage": T("α_k (float64 scalar)", "float64"), "valueShrinkage": T("α_v (float64 scalar)", "float64"),
     "scale": T("κ of the QJL stage (float64 scalar; prod mode)", "float64", required=False)},
    {"seqLen": I("positions T appended in total"), "prefill": I("positions in the first append; the rest one "
                                                                "per decode append"),
     "keys": T("K (B, H, T, d) float32", "float32"), "values": T("V (B, H, T, d) float32", "float32"),
     "qLen": I("query positions Lq"), "queries": T("Q (B, A, Lq, d) float32", "float32"),
     "causal": I("1: causal attention (queries are the last Lq positions)")},
    {"keyIndices": T("packed key codes (B, H, T, ceil(d·kb/8))", "uint8"),
     "keyNorms": T("‖k‖ (B, H, T) in normDtype", "float32", "float16"),
     "keySigns": T("QJL sign bits (B, H, T, ceil(d/8)), prod mode", "uint8"),
     "keyGammas": T("γ (B, H, T) in normDtype, prod mode", "float32", "float16"),
     "valueIndices": T("packed value codes (B, H, T, ceil(d·vb/8))", "uint8"),
     "valueNorms": T("‖v‖ (B, H, T) in normDtype", "float32", "float16"),
     "memoryUsage": T("bytes of codes stored (int64 scalar)", "int64"),
     "keysDequant": T("dequantized K (B, H, T, d) (mse stage, ÷ α_k when debiased)", "float32"),
     "valuesDequant": T("dequantized V (B, H, T, d) (÷ α_v when debiasedValues)", "float32"),
     "logitBias": T("QJL logit bias (B, A, Lq, T), prod mode", "float32", compare="tolerance"),
     "attention": T("attention output (B, A, Lq, d), softmax scale 1/sqrt(d)", "float32", compare="tolerance")},
    ("kv_cache",))

KV_OP = Op("kv_cache", "append K/V (prefill, then decode steps) to a one-layer cache; read codes, memory, "
                       "dequantized K/V, logit bias and attention",
           tuple(k for k, f in KV_TYPE.group.items() if f.required) + tuple(KV_TYPE.inputs),
           ("keyIndices", "keyNorms", "valueIndices", "valueNorms", "memoryUsage"),
           optional_inputs=("projection", "scale"),
           optional_outputs=("keySigns", "keyGammas", "keysDequant", "valuesDequant", "logitBias", "attention"),
           on_invalid=True)

_KV_NAMES = {"key_indices": "keyIndices", "key_norms": "keyNorms", "key_signs": "keySigns",
             "key_gammas": "keyGammas", "value_indices": "valueIndices", "value_norms": "valueNorms"}


def kv_cache(f, backend="reference"):
    import tqref

    d, h, a, b = int(f["dim"]), int(f["numKvHeads"]), int(f["numHeads"]), int(f["batch"])
    t, t0, lq = int(f["seqLen"]), int(f["prefill"]), int(f["qLen"])
    try:
        cache = tqref.KVCache(1, h, d, key_bits=int(f["keyBits"]), value_bits=int(f["valueBits"]), mode=f["mode"],
                              seed=int(f["seed"]), debiased=bool(f["debiased"]),
                              debiased_values=bool(f["debiasedValues"]), projection=f.get("projection"),
                              norm_dtype=f["normDtype"], backend=backend)
        keys = np.asarray(f["keys"], _F32).reshape(b, h, t, d)
        values = np.asarray(f["values"], _F32).reshape(b, h, t, d)
        queries = np.asarray(f["queries"], _F32).reshape(b, a, lq, d)
        cache.append(0, keys[:, :, :t0], values[:, :, :t0])
        for pos in range(t0, t):
            cache.append(0, keys[:, :, pos:pos + 1], values[:, :, pos:pos + 1])
        stored = cache.stored(0)
        out = {_KV_NAMES[k]: np.array(v) for k, v in stored.items()}
        out["memoryUsage"] = np.asarray(cache.memory_usage(), np.int64).reshape(())
        kd, vd = cache.dequantize(0)
        out["keysDequant"], out["valuesDequant"] = kd, vd
        if f["mode"] == "prod":
            out["logitBias"] = cache.logit_bias(0, queries)
        out["attention"] = cache.attend(0, queries, causal=bool(f["causal"]))
    except ValueError as exc:
        raise operations.Refused(str(exc)) from exc
    return out


#: the logit bias's stated relative tolerance (× max(1, max|bias|)): the kv_cache_test file was
#: generated under it, before tqref.tolerance; the rule would state about 7× less (docs/compatibility.md)
LOGIT_BIAS_RTOL = 1e-5


def _kv_tolerance(raw, out) -> dict:
    """Attention: tqref.tolerance.measured (the float64 recomputation from the same dequantized K/V);
    logit bias: LOGIT_BIAS_RTOL."""
    b, a, lq, d = np.asarray(raw["queries"]).shape
    h = int(raw["numKvHeads"])
    group = a // h
    q = np.asarray(raw["queries"], np.float64)
    k = np.repeat(out["keysDequant"].astype(np.float64), group, axis=1)
    v = np.repeat(out["valuesDequant"].astype(np.float64), group, axis=1)
    t = k.shape[2]
    scores = q @ np.swapaxes(k, -1, -2)
    tol = {}
    if "logitBias" in out:
        bias32 = out["logitBias"].astype(np.float64)
        scores = scores + bias32
        tol["logitBias"] = float(LOGIT_BIAS_RTOL * max(1.0, np.max(np.abs(bias32))))
    scores = scores / np.sqrt(d)
    if raw["causal"]:
        visible = np.arange(t)[None, :] <= (t - lq + np.arange(lq))[:, None]
        scores = np.where(visible, scores, -np.inf)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    tol["attention"] = tolerance.measured(out["attention"], w @ v)
    return tol


def _kv_builder():
    from ..reference import codebook as cb
    from ..reference import qjl
    from .generate import FileBuilder, compute_outputs, header, test_normal

    fb = FileBuilder("kv_cache_test", "TQ-KV-CACHE", "KvCacheTest", header() + [
        "One-layer tqref.KVCache scenarios (docs/kv-cache.md): append 'prefill' positions, then one position",
        "per decode step; keys and values use one rotation Π (seed). Codes, norms, memory and the",
        "dequantized K/V are exact; the logit bias and attention (softmax scale 1/sqrt(d)) use unordered",
        "sums and are compared with each test's tolerance (4 × the float32 − float64 difference measured",
        "by the generator, plus a floor).",
    ])
    scenarios = [
        ("mse keys, GQA 4 query heads on 2 KV heads, causal", dict(dim=64, numKvHeads=2, numHeads=4, batch=1,
         keyBits=3, valueBits=2, mode="mse", seed=11, normDtype="float32", debiased=0, debiasedValues=0),
         dict(seqLen=6, prefill=4, qLen=2, causal=1), ["GroupedQueryAttention", "Causal", "PrefillDecode"]),
        ("prod keys (Rademacher QJL), float16 norms", dict(dim=32, numKvHeads=1, numHeads=2, batch=1, keyBits=3,
         valueBits=3, mode="prod", seed=12, projection="rademacher", normDtype="float16", debiased=0,
         debiasedValues=0), dict(seqLen=5, prefill=3, qLen=1, causal=0),
         ["ProdKeys", "Float16Norms", "GroupedQueryAttention", "PrefillDecode"]),
        ("debiased mse, d = 17, batch 2", dict(dim=17, numKvHeads=1, numHeads=1, batch=2, keyBits=2, valueBits=2,
         mode="mse", seed=13, normDtype="float32", debiased=1, debiasedValues=1),
         dict(seqLen=4, prefill=4, qLen=1, causal=1), ["Debiased", "NonPowerOfTwoDim", "BatchOfTwo", "Causal"]),
    ]
    for comment, cfg, inp, flags in scenarios:
        kb = cfg["keyBits"] - (1 if cfg["mode"] == "prod" else 0)
        kbook, vbook = cb.lloyd_max(kb, cfg["dim"]), cb.lloyd_max(cfg["valueBits"], cfg["dim"])
        scale = np.float64(qjl.estimator_scale(cfg["projection"], cfg["dim"])) if cfg["mode"] == "prod" else None
        g = fb.group(comment, **cfg, keyCentroids=kbook.centroids_f32, keyBoundaries=np.array(kbook.boundaries),
                     valueCentroids=vbook.centroids_f32, valueBoundaries=np.array(vbook.boundaries),
                     keyShrinkage=np.float64(cb.shrinkage(kbook)), valueShrinkage=np.float64(cb.shrinkage(vbook)),
                     scale=scale)
        d, h, a, b = cfg["dim"], cfg["numKvHeads"], cfg["numHeads"], cfg["batch"]
        t, lq = inp["seqLen"], inp["qLen"]
        seed0 = 20000 + 100 * cfg["seed"]
        keys = test_normal(seed0, b * h * t * d).reshape(b, h, t, d)
        values = test_normal(seed0 + 1, b * h * t * d).reshape(b, h, t, d)
        queries = test_normal(seed0 + 2, b * a * lq * d).reshape(b, a, lq, d)
        tin = {**inp, "keys": keys, "values": values, "queries": queries}
        raw = {**g["_raw"], **tin}
        out = compute_outputs(KV_TYPE, raw, "valid", comment)
        fb.test(g, comment, flags, tin, outputs=out, tolerance=_kv_tolerance(raw, out))
        if cfg["seed"] == 11:
            bad = keys.copy()
            bad[0, 1, 2, 5] = np.nan
            fb.test(g, "NaN in a key: the append is refused (nothing stored)", ["NanInput"],
                    {**tin, "keys": bad}, result="invalid")
            fb.test(g, "3 attention heads on 2 KV heads: refused", ["GroupedQueryAttention"],
                    {**tin, "queries": test_normal(seed0 + 3, 3 * lq * d).reshape(1, 3, lq, d)}, result="invalid")
    return fb


# --------------------------------------------------------------------------- turboquant-rs profile


TQRS_TYPE = TestType(
    "TqrsQuantizeTest", "tqrs_quantize_test_schema_v1.json",
    "turboquant-rs profile: quantize_vec / dequantize_vec (PackedBlock: f16 scale + packed indices), bit-exact "
    "with the crate, bugs included.",
    {"bits": I("bits (2, 3, 4)"), "dim": I("dimension (a power of two)"), "seed": U("rotation_seed")},
    {"x": T("input vector", "float32")},
    {"scale": T("PackedBlock.scale (float16 scalar: the L2 norm)", "float16"),
     "packed": T("PackedBlock.packed_indices", "uint8"), "indices": T("unpacked indices (d)", "uint8"),
     "dequantized": T("dequantize_vec (d float32)", "float32")},
    ("tqrs_quantize", "tqrs_dequantize"))
TQRS_OPS = (
    Op("tqrs_quantize", "turboquant-rs quantize_vec", ("bits", "dim", "seed", "x"), ("scale", "packed"),
       optional_outputs=("indices",)),
    Op("tqrs_dequantize", "turboquant-rs dequantize_vec", ("bits", "dim", "seed", "scale", "packed"), ("dequantized",)),
)

TQRS_QJL_TYPE = TestType(
    "TqrsQjlTest", "tqrs_qjl_test_schema_v1.json",
    "turboquant-rs profile: quantize_with_qjl (QjlBlock) and estimate_inner_product, bit-exact with the crate.",
    {"bits": I("total bits (3, 4)"), "dim": I("dimension (a power of two)"), "seed": U("rotation_seed"),
     "qjlSeed": U("qjl_seed"), "m": I("number of queries"), "queries": T("m × d float32 queries", "float32")},
    {"x": T("input vector", "float32")},
    {"polarScale": T("polar_block.scale (float16 scalar)", "float16"),
     "polarPacked": T("polar_block.packed_indices ((bits − 1)-bit)", "uint8"),
     "signs": T("qjl_signs, ceil(d/8) bytes", "uint8"),
     "residualNorm": T("residual_norm (float16 scalar)", "float16"),
     "estimates": T("estimate_inner_product for each query (m float32; the crate's sequential sums)", "float32")},
    ("tqrs_qjl_quantize", "tqrs_qjl_estimate"))
TQRS_QJL_OPS = (
    Op("tqrs_qjl_quantize", "turboquant-rs quantize_with_qjl", ("bits", "dim", "seed", "qjlSeed", "x"),
       ("polarScale", "polarPacked", "signs", "residualNorm")),
    Op("tqrs_qjl_estimate", "turboquant-rs estimate_inner_product",
       ("bits", "dim", "seed", "qjlSeed", "m", "queries", "polarScale", "polarPacked", "signs", "residualNorm"),
       ("estimates",)),
)


def _tqrs():
    return importlib.import_module("tqref.profiles.turboquant_rs")


def _refuse(call):
    try:
        return call()
    except ValueError as exc:
        raise operations.Refused(str(exc)) from exc


def tqrs_quantize(f, backend="reference"):
    rs = _tqrs()
    cfg = _refuse(lambda: rs.TurboQuantConfig(int(f["bits"]), int(f["dim"]), int(f["seed"])))
    block = _refuse(lambda: rs.quantize_vec(cfg, np.asarray(f["x"], _F32).reshape(-1)))
    packed = np.frombuffer(block.packed_indices, np.uint8)
    return {"scale": np.asarray(block.scale, np.float16).reshape(()), "packed": packed,
            "indices": block.unpack(cfg.dim).astype(np.uint8)}


def tqrs_dequantize(f, backend="reference"):
    rs = _tqrs()
    cfg = _refuse(lambda: rs.TurboQuantConfig(int(f["bits"]), int(f["dim"]), int(f["seed"])))
    scale = np.asarray(f["scale"], np.float16).reshape(())
    block = rs.PackedBlock.from_raw(int(f["bits"]), scale, np.asarray(f["packed"], np.uint8).tobytes())
    return {"dequantized": _refuse(lambda: rs.dequantize_vec(cfg, block)).astype(_F32)}


def tqrs_qjl_quantize(f, backend="reference"):
    rs = _tqrs()
    cfg = _refuse(lambda: rs.TurboQuantConfig(int(f["bits"]), int(f["dim"]), int(f["seed"])))
    block = _refuse(lambda: rs.quantize_with_qjl(cfg, np.asarray(f["x"], _F32).reshape(-1), int(f["qjlSeed"])))
    return {"polarScale": np.asarray(block.polar_block.scale, np.float16).reshape(()),
            "polarPacked": np.frombuffer(block.polar_block.packed_indices, np.uint8),
            "signs": np.frombuffer(block.qjl_signs, np.uint8),
            "residualNorm": np.asarray(block.residual_norm, np.float16).reshape(())}


def tqrs_qjl_estimate(f, backend="reference"):
    rs = _tqrs()
    cfg = _refuse(lambda: rs.TurboQuantConfig(int(f["bits"]), int(f["dim"]), int(f["seed"])))
    polar = rs.PackedBlock.from_raw(int(f["bits"]) - 1, np.asarray(f["polarScale"], np.float16).reshape(()),
                                    np.asarray(f["polarPacked"], np.uint8).tobytes())
    block = rs.QjlBlock(polar, np.asarray(f["signs"], np.uint8).tobytes(),
                        np.asarray(f["residualNorm"], np.float16).reshape(()))
    queries = np.asarray(f["queries"], _F32).reshape(int(f["m"]), int(f["dim"]))
    est = [rs.estimate_inner_product(q, block, cfg, int(f["qjlSeed"])) for q in queries]
    return {"estimates": np.asarray(est, _F32)}


def _profile_cases(d: int, seed: int):
    from .generate import test_normal

    x = test_normal(seed, d)
    nan = test_normal(seed + 1, d)
    nan[d // 2] = np.nan
    return [
        ("random normal #0", ["Pseudorandom"], x),
        ("random normal #1", ["Pseudorandom"], test_normal(seed + 2, d)),
        ("zero vector", ["ZeroVector", "BelowMinNorm"], np.zeros(d, _F32)),
        ("norm 4e-12·‖n‖ below MIN_NORM = 1e-10", ["BelowMinNorm"], test_normal(seed + 3, d) * _F32(4e-12)),
        ("huge: Σx² overflows float32", ["InfNorm", "KnownBug"], test_normal(seed + 4, d) * _F32(3e19)),
        ("NaN at d/2: not rejected by the crate", ["NanPropagates", "KnownBug"], nan),
    ]


def _tqrs_builders():
    from .generate import FileBuilder, header, test_normal

    lines = header("tqref.profiles.turboquant_rs") + [
        "Bit-exact profile of turboquant-rs 0.3.1/0.4.1 (docs/runtimes/turboquant-rs.md), including its known",
        "bugs (flag KnownBug): a port that claims turboquant-rs compatibility reproduces these bytes.",
    ]
    fb = FileBuilder("tqrs_quantize_test", "TURBOQUANT-RS-QUANTIZE", "TqrsQuantizeTest", lines)
    for bits, d, seed in ((3, 128, 0), (2, 32, 42), (4, 64, 7)):
        g = fb.group(f"TQ{bits}, d = {d}, rotation_seed {seed}", bits=bits, dim=d, seed=seed)
        for comment, flags, x in _profile_cases(d, 30000 + d + bits):
            fb.test(g, comment, flags, {"x": x})
    qb = FileBuilder("tqrs_qjl_test", "TURBOQUANT-RS-QJL", "TqrsQjlTest", lines)
    for bits, d, seed, qseed in ((3, 128, 0, 12345), (4, 64, 5, 99)):
        g = qb.group(f"TQ{bits} with QJL, d = {d}", bits=bits, dim=d, seed=seed, qjlSeed=qseed, m=2,
                     queries=test_normal(31000 + d, 2 * d).reshape(2, d))
        for comment, flags, x in _profile_cases(d, 32000 + d + bits)[:4]:
            qb.test(g, comment, flags, {"x": x})
    return [fb, qb]


# --------------------------------------------------------------------------- llama.cpp profile

LLAMA_TYPE = TestType(
    "LlamacppBlockTest", "llamacpp_block_test_schema_v1.json",
    "llama.cpp TurboQuant KV block formats (turbo2/3/4 of TheTom's fork, tq3_0 of Aaryan-Kapoor's): the C "
    "reference quantize_row / dequantize_row, bit-exact.",
    {"kind": S("block kind", "turbo2_0", "turbo3_0", "turbo4_0", "tq3_0"),
     "version": S("format version (turbo kinds)", "v3", "v1"), "n": I("row length (a multiple of the block size)")},
    {"x": T("row of n float32 values", "float32")},
    {"blocks": T("the row's blocks (bytes)", "uint8"), "indices": T("stored indices (n)", "uint8"),
     "dequantized": T("dequantize_row (turbo kinds: rotated domain; tq3_0: original domain)", "float32")},
    ("llamacpp_quantize", "llamacpp_dequantize"))
LLAMA_OPS = (
    Op("llamacpp_quantize", "llama.cpp quantize_row_*_ref", ("kind", "version", "n", "x"), ("blocks",),
       optional_outputs=("indices",)),
    Op("llamacpp_dequantize", "llama.cpp dequantize_row_*", ("kind", "version", "n", "blocks"), ("dequantized",)),
)


def _llama():
    return importlib.import_module("tqref.profiles.llamacpp")


def llamacpp_quantize(f, backend="reference"):
    lc = _llama()
    x = np.asarray(f["x"], _F32).reshape(-1)
    blocks = _refuse(lambda: lc.quantize_row(x, f["kind"], version=f["version"]))
    idx = _refuse(lambda: lc.quantize_indices(x, f["kind"], version=f["version"]))
    return {"blocks": np.asarray(blocks, np.uint8).reshape(-1), "indices": np.asarray(idx, np.uint8).reshape(-1)}


def llamacpp_dequantize(f, backend="reference"):
    lc = _llama()
    out = _refuse(lambda: lc.dequantize_row(np.asarray(f["blocks"], np.uint8).reshape(-1), f["kind"],
                                            version=f["version"]))
    return {"dequantized": np.asarray(out, _F32).reshape(-1)}


def _llama_builders():
    from .generate import FileBuilder, header, test_normal

    out = []
    for kind, versions in (("turbo2_0", ("v3",)), ("turbo3_0", ("v3", "v1")), ("turbo4_0", ("v3", "v1")),
                           ("tq3_0", ("v3",))):
        short = kind.replace("_0", "")
        lines = header("tqref.profiles.llamacpp") + [
            f"llama.cpp {kind} blocks (docs/runtimes/llamacpp.md): C reference quantize_row / dequantize_row."]
        fb = FileBuilder(f"llamacpp_{short}_test", f"LLAMACPP-{short.upper()}", "LlamacppBlockTest", lines)
        block = 32 if kind == "tq3_0" else 128
        for version in versions:
            n = 2 * block
            g = fb.group(f"{kind} {version}, two blocks per row", kind=kind, version=version, n=n)
            seed = 33000 + 10 * len(out) + (1 if version == "v1" else 0)
            rows = [("random normal", ["Pseudorandom"], test_normal(seed, n)),
                    ("random normal × 0.01", ["Pseudorandom"], test_normal(seed + 1, n) * _F32(0.01)),
                    ("zero row", ["ZeroVector"], np.zeros(n, _F32))]
            outlier = test_normal(seed + 2, n)
            outlier[block // 3] *= _F32(300)
            rows.append(("outlier ×300 in block 0", ["Outlier"], outlier))
            for comment, flags, x in rows:
                fb.test(g, comment, flags, {"n": n, "x": x})
        out.append(fb)
    return out


# --------------------------------------------------------------------------- registration

_REGISTERED = []


def register_all() -> None:
    """Register the families whose modules import (idempotent)."""
    if _REGISTERED:
        return
    _REGISTERED.append(True)
    spec.register_flags(FLAGS)
    families = [
        (_kv_available, KV_TYPE, (KV_OP,), {"kv_cache": kv_cache}),
        (lambda: _have("tqref.profiles.turboquant_rs"), TQRS_TYPE, TQRS_OPS,
         {"tqrs_quantize": tqrs_quantize, "tqrs_dequantize": tqrs_dequantize}),
        (lambda: _have("tqref.profiles.turboquant_rs"), TQRS_QJL_TYPE, TQRS_QJL_OPS,
         {"tqrs_qjl_quantize": tqrs_qjl_quantize, "tqrs_qjl_estimate": tqrs_qjl_estimate}),
        (lambda: _have("tqref.profiles.llamacpp"), LLAMA_TYPE, LLAMA_OPS,
         {"llamacpp_quantize": llamacpp_quantize, "llamacpp_dequantize": llamacpp_dequantize}),
    ]
    for available, test_type, ops, fns in families:
        if available():
            spec.register_type(test_type, ops)
            for name, fn in fns.items():
                operations.register(name, fn, uses_backend=name == "kv_cache")


def extra_builders() -> list:
    register_all()
    out = []
    if "KvCacheTest" in spec.TEST_TYPES:
        out.append(_kv_builder())
    if "TqrsQuantizeTest" in spec.TEST_TYPES:
        out += _tqrs_builders()
    if "LlamacppBlockTest" in spec.TEST_TYPES:
        out += _llama_builders()
    return out
