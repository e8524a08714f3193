"""The conformance format in one place: test types, their fields, protocol operations, flags.

Everything else reads this module: the JSON schemas are generated from it
(:mod:`tqref.conformance.schemas`), the linter checks files against it, the verifier and the
protocol runner look up which operations a test type exercises and how each output is
compared, and docs/conformance-protocol.md describes the same operations.

Field kinds:

* ``int`` — a JSON integer (dimensions, bit widths, counts, stream ids).
* ``u64`` — a uint64 as the string ``"0x"`` + 16 hex digits (seeds, stream offsets).
* ``string`` — a JSON string, from ``enum`` when one is given.
* ``tensor`` — a tensor object (:mod:`tqref.conformance.encoding`) of one of ``dtypes``.

Outputs carry a comparison: ``exact`` (integers equal; floats bit-identical, except that any
NaN equals any NaN and +0.0 equals −0.0) or ``tolerance`` (|actual − expected| ≤ the test's
``tolerance[field]``, element-wise; the generator derives each bound from the computation —
see docs/conformance-protocol.md "Tolerances").
"""

from __future__ import annotations

import dataclasses

SPEC_VERSION = "tqref-conformance-1"
GENERATOR = {"name": "tqref/conformance/generate.py", "version": "1"}
RESULTS = ("valid", "invalid", "acceptable")


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str  # "int" | "u64" | "string" | "tensor"
    description: str
    dtypes: tuple = ()  # tensor dtypes allowed
    enum: tuple = ()  # allowed strings
    required: bool = True  # group fields / inputs only; outputs are governed by "result"
    compare: str = "exact"  # outputs: "exact" | "tolerance"


def T(description: str, *dtypes: str, required: bool = True, compare: str = "exact") -> Field:
    return Field("tensor", description, dtypes=dtypes, required=required, compare=compare)


def I(description: str, required: bool = True) -> Field:  # noqa: E743 (the int kind)
    return Field("int", description, required=required)


def U(description: str) -> Field:
    return Field("u64", description)


def S(description: str, *enum: str, required: bool = True) -> Field:
    return Field("string", description, enum=enum, required=required)


@dataclasses.dataclass(frozen=True)
class Op:
    """One protocol operation: a request carries ``inputs`` (+ ``optional_inputs`` present in
    the test), the answer must carry ``outputs`` and may carry ``optional_outputs``."""

    name: str
    description: str
    inputs: tuple
    outputs: tuple
    optional_inputs: tuple = ()
    optional_outputs: tuple = ()
    on_invalid: bool = False  # sent for tests whose result is "invalid" (expects an error)


@dataclasses.dataclass(frozen=True)
class TestType:
    name: str
    schema: str
    description: str
    group: dict
    inputs: dict
    outputs: dict
    ops: tuple

    def field(self, name: str) -> Field:
        for table in (self.group, self.inputs, self.outputs):
            if name in table:
                return table[name]
        raise KeyError(name)


# --------------------------------------------------------------------------- shared fields

_SEED = U("seed of the portable PRNG (tqref.reference.prng)")
_DIM = I("vector dimension d")
_F32_VEC = "float32"
_ROTATION = S("rotation kind: 'hadamard' (3-round randomized Hadamard, portable) or 'haar' (matrix given)",
              "hadamard", "haar")
_LAW = S("codebook law: 'beta' (exact marginal) or 'gaussian' (N(0, 1/d))", "beta", "gaussian")
_NORM_DTYPE = S("dtype the norms (and QJL residual norms) are stored in", "float32", "float16")
_MATRIX = T("the generated d×d float32 matrix, row-major (statistical tier: shipped as data)",
            "float32", required=False)
_CENTROIDS = T("float32 reconstruction values c_0 < … < c_{K−1} of the mse stage (K = 2^bits)", "float32")
_BOUNDARIES = T("float64 decision boundaries (K − 1), midpoints of neighbouring centroids", "float64")
_QUERIES = T("m queries (m × d float32) for the inner-product estimators", "float32")
_M = I("number of queries m")
_PROJECTION = S("QJL projection: 'rademacher' (portable), 'gaussian' or 'orthogonal' (matrix given)",
                "rademacher", "gaussian", "orthogonal")
_SCALE = T("κ, the QJL estimator constant (float64 scalar; tqref.reference.qjl.estimator_scale)", "float64")

# --------------------------------------------------------------------------- operations

OPS = {op.name: op for op in (
    Op("prng_raw", "raw(seed, stream, i) for i in [start, start + count), and key(seed, stream)",
       ("seed", "stream", "start", "count"), ("key", "values")),
    Op("prng_rademacher", "±1 signs from bit 63 of raw(seed, stream, i)",
       ("seed", "stream", "start", "count"), ("signs",)),
    Op("prng_uniform", "(raw >> 11) · 2^−53 as float64",
       ("seed", "stream", "start", "count"), ("values",)),
    Op("prng_gaussian", "Box–Muller standard normals from raw values 2i, 2i+1 (libm: tolerance)",
       ("seed", "stream", "count"), ("values",)),
    Op("ordered_dot", "float32 dot product in the written 32-lane order (reduction.py)",
       ("n", "a", "b"), ("dot",)),
    Op("split_norm", "scale-safe norm and unit vector (mse.split_norm)",
       ("dim", "x"), ("norm", "unit")),
    Op("fwht", "normalised Walsh–Hadamard transform (rotation.fwht)", ("n", "x"), ("y",)),
    Op("rotate_hadamard", "Π x and Πᵀ x for the 3-round randomized Hadamard rotation",
       ("dim", "seed", "x"), ("forward", "inverse")),
    Op("rotate_haar", "Π x and Πᵀ x for a given matrix Π, written-order dot products",
       ("dim", "matrix", "x"), ("forward", "inverse")),
    Op("codebook", "Lloyd–Max codebook of (law, bits, dim); ports should load, not solve",
       ("law", "bits", "dim"), ("centroids", "boundaries", "distortion", "centroidsF32")),
    Op("nearest_index", "cell index: count of boundaries strictly less than the value",
       ("bits", "boundaries", "n", "values"), ("indices",)),
    Op("pack", "pack b-bit indices LSB-first", ("bits", "count", "indices"), ("packed",)),
    Op("unpack", "unpack b-bit indices; a buffer of the wrong length must be refused",
       ("bits", "count", "packed"), ("indices",), on_invalid=True),
    Op("mse_quantize", "TurboQuant_mse quantize (Algorithm 1)",
       ("dim", "bits", "seed", "rotation", "codebookLaw", "normDtype", "boundaries", "x"), ("norm", "packed"),
       optional_inputs=("matrix",), optional_outputs=("indices", "rotated"), on_invalid=True),
    Op("mse_dequantize", "TurboQuant_mse dequantize",
       ("dim", "bits", "seed", "rotation", "codebookLaw", "normDtype", "centroids", "packed", "norm"), ("xhat",),
       optional_inputs=("matrix",)),
    Op("mse_inner_product", "mse inner-product estimates, plain and divided by the shrinkage α",
       ("dim", "bits", "seed", "rotation", "codebookLaw", "normDtype", "centroids", "shrinkage", "m", "queries",
        "packed", "norm"), ("estimates", "estimatesUnbiased"), optional_inputs=("matrix",)),
    Op("qjl_sketch", "QJL sign bits of S r and γ = ‖r‖", ("dim", "seed", "projection", "residual"),
       ("signs", "gamma"), optional_inputs=("matrix",)),
    Op("qjl_estimate", "κ γ ⟨S q, z⟩ for each query",
       ("dim", "seed", "projection", "scale", "m", "queries", "signs", "gamma"), ("estimates",),
       optional_inputs=("matrix",)),
    Op("prod_quantize", "TurboQuant_prod quantize (Algorithm 2)",
       ("dim", "bits", "seed", "rotation", "codebookLaw", "normDtype", "boundaries", "centroids", "projection", "x"),
       ("norm", "packed", "signs", "gamma"), optional_inputs=("matrix",), optional_outputs=("indices",),
       on_invalid=True),
    Op("prod_dequantize", "TurboQuant_prod dequantize",
       ("dim", "bits", "seed", "rotation", "codebookLaw", "normDtype", "centroids", "projection", "scale", "packed",
        "norm", "signs", "gamma"), ("xhat",), optional_inputs=("matrix",)),
    Op("prod_inner_product", "TurboQuant_prod inner-product estimates",
       ("dim", "bits", "seed", "rotation", "codebookLaw", "normDtype", "centroids", "projection", "scale", "m",
        "queries", "packed", "norm", "signs", "gamma"), ("estimates",), optional_inputs=("matrix",)),
)}

# --------------------------------------------------------------------------- test types

_PRNG_GROUP = {"seed": _SEED, "stream": I("stream id (prng.STREAM_*)")}
_RANGE = {"start": U("first index i"), "count": I("number of values")}

TEST_TYPES = {t.name: t for t in (
    TestType(
        "PrngRawTest", "prng_raw_test_schema_v1.json",
        "Raw SplitMix64 outputs raw(seed, stream, i) of the counter-based generator.",
        _PRNG_GROUP, _RANGE,
        {"key": T("key(seed, stream) (uint64 scalar)", "uint64"),
         "values": T("raw(seed, stream, i), i = start … start + count − 1", "uint64")},
        ("prng_raw",)),
    TestType(
        "PrngRademacherTest", "prng_rademacher_test_schema_v1.json",
        "Rademacher signs: +1 where bit 63 of raw is 0, else −1.",
        _PRNG_GROUP, _RANGE, {"signs": T("±1 as int8", "int8")}, ("prng_rademacher",)),
    TestType(
        "PrngUniformTest", "prng_uniform_test_schema_v1.json",
        "Uniform float64 on [0, 1): (raw >> 11) · 2^−53 (exact).",
        _PRNG_GROUP, _RANGE, {"values": T("uniform float64", "float64")}, ("prng_uniform",)),
    TestType(
        "PrngGaussianTest", "prng_gaussian_test_schema_v1.json",
        "Box–Muller standard normals (statistical tier: libm log/cos, compared with a tolerance).",
        _PRNG_GROUP, {"count": I("number of values (from index 0)")},
        {"values": T("standard normal float64", "float64", compare="tolerance")}, ("prng_gaussian",)),
    TestType(
        "OrderedDotTest", "ordered_dot_test_schema_v1.json",
        "float32 dot product in the written order: 32 strided lanes, then a butterfly 16, 8, 4, 2, 1.",
        {}, {"n": I("length"), "a": T("first operand", "float32"), "b": T("second operand", "float32")},
        {"dot": T("the dot product (float32 scalar)", "float32")}, ("ordered_dot",)),
    TestType(
        "SplitNormTest", "split_norm_test_schema_v1.json",
        "Scale-safe norm: frexp exponent of max|x|, exact ldexp scaling, written-order sum, sqrt, divide.",
        {"dim": _DIM}, {"x": T("input vector", "float32")},
        {"norm": T("‖x‖ (float32 scalar; +inf when it overflows)", "float32"),
         "unit": T("x / ‖x‖ (zeros for a zero vector)", "float32")}, ("split_norm",)),
    TestType(
        "FwhtTest", "fwht_test_schema_v1.json",
        "Normalised Walsh–Hadamard transform, natural (Sylvester) order, then × float32(1)/sqrt(float32(n)).",
        {}, {"n": I("length, a power of two"), "x": T("input", "float32")},
        {"y": T("H_n x", "float32")}, ("fwht",)),
    TestType(
        "HadamardRotationTest", "hadamard_rotation_test_schema_v1.json",
        "3-round randomized Hadamard rotation (portable tier) and its inverse.",
        {"dim": _DIM, "seed": _SEED,
         "signs": T("the steps' signs (S × d int8; S = 3, or 6 when d is not a power of two), "
                    "prng_rademacher(seed, stream 1, 0, S·d): for checking", "int8")},
        {"x": T("input vector", "float32")},
        {"forward": T("Π x", "float32"), "inverse": T("Πᵀ x", "float32")}, ("rotate_hadamard",)),
    TestType(
        "HaarRotationTest", "haar_rotation_test_schema_v1.json",
        "Haar rotation (statistical tier): Π is shipped; applying it uses written-order dot products.",
        {"dim": _DIM, "seed": _SEED, "matrix": T("Π, d × d float32 row-major", "float32"),
         "matrixTolerance": T("max |generated − shipped| allowed for a regenerated Π (float64 scalar)",
                              "float64")},
        {"x": T("input vector", "float32")},
        {"forward": T("Π x", "float32"), "inverse": T("Πᵀ x", "float32")}, ("rotate_haar",)),
    TestType(
        "CodebookTest", "codebook_test_schema_v1.json",
        "Lloyd–Max codebooks (a derivation: ports load these tables rather than re-solve).",
        {"law": _LAW}, {"bits": I("bits b (K = 2^b cells)"), "dim": _DIM},
        {"centroids": T("float64 centroids (K)", "float64", compare="tolerance"),
         "boundaries": T("float64 boundaries (K − 1)", "float64", compare="tolerance"),
         "distortion": T("d · E|Y − c(Y)|² (float64 scalar)", "float64", compare="tolerance"),
         "centroidsF32": T("centroids rounded to float32 (the decoder values)", "float32",
                           compare="tolerance")},
        ("codebook",)),
    TestType(
        "NearestIndexTest", "nearest_index_test_schema_v1.json",
        "Cell index = number of boundaries strictly below the value (ties to the lower cell; the float32 "
        "value compared exactly with float64 boundaries; NaN -> 0).",
        {"bits": I("bits b"), "boundaries": _BOUNDARIES},
        {"n": I("number of values"), "values": T("float32 values", "float32")},
        {"indices": T("cell indices", "uint8")}, ("nearest_index",)),
    TestType(
        "PackTest", "pack_test_schema_v1.json",
        "LSB-first bit packing of b-bit indices.",
        {}, {"bits": I("bits per index"), "count": I("number of indices"), "indices": T("indices", "uint8")},
        {"packed": T("ceil(count · bits / 8) bytes", "uint8")}, ("pack",)),
    TestType(
        "UnpackTest", "unpack_test_schema_v1.json",
        "Unpacking; a buffer whose length is not ceil(count · bits / 8) is refused.",
        {}, {"bits": I("bits per index"), "count": I("number of indices"), "packed": T("packed bytes", "uint8")},
        {"indices": T("indices", "uint8")}, ("unpack",)),
    TestType(
        "MseTest", "mse_test_schema_v1.json",
        "TurboQuant_mse: quantize, dequantize and the inner-product estimators.",
        {"dim": _DIM, "bits": I("bits b of the mse stage"), "seed": _SEED, "rotation": _ROTATION,
         "codebookLaw": _LAW, "normDtype": _NORM_DTYPE, "centroids": _CENTROIDS, "boundaries": _BOUNDARIES,
         "shrinkage": T("α = d·E[Y c(Y)] (float64 scalar): plain estimates are α⟨q, x⟩ on average", "float64"),
         "matrix": _MATRIX, "m": _M, "queries": _QUERIES},
        {"x": T("input vector", "float32")},
        {"norm": T("‖x‖ in normDtype (scalar)", "float32", "float16"),
         "indices": T("unpacked codes (d)", "uint8"),
         "packed": T("packed codes, ceil(d·b/8) bytes", "uint8"),
         "rotated": T("Π (x/‖x‖), the value quantized (d float32)", "float32"),
         "xhat": T("dequantized vector (exact: written order)", "float32"),
         "estimates": T("plain estimates of ⟨q_j, x⟩ (m)", "float32", compare="tolerance"),
         "estimatesUnbiased": T("estimates / α (m)", "float32", compare="tolerance")},
        ("mse_quantize", "mse_dequantize", "mse_inner_product")),
    TestType(
        "QjlTest", "qjl_test_schema_v1.json",
        "QJL 1-bit sketch of a residual and its inner-product estimator.",
        {"dim": _DIM, "seed": _SEED, "projection": _PROJECTION, "matrix": _MATRIX, "scale": _SCALE,
         "m": _M, "queries": _QUERIES},
        {"residual": T("residual vector r", "float32")},
        {"signs": T("packed sign bits of S r (bit = 1 for ≥ 0), ceil(d/8) bytes", "uint8"),
         "gamma": T("γ = ‖r‖ (float32 scalar, written order)", "float32"),
         "estimates": T("κ γ ⟨S q_j, z⟩ (m)", "float32", compare="tolerance")},
        ("qjl_sketch", "qjl_estimate")),
    TestType(
        "ProdTest", "prod_test_schema_v1.json",
        "TurboQuant_prod: (b − 1)-bit mse stage + QJL on the rotated-domain residual.",
        {"dim": _DIM, "bits": I("total bits b (mse stage b − 1)"), "seed": _SEED, "rotation": _ROTATION,
         "codebookLaw": _LAW, "normDtype": _NORM_DTYPE, "centroids": _CENTROIDS, "boundaries": _BOUNDARIES,
         "projection": _PROJECTION, "matrix": _MATRIX, "scale": _SCALE, "m": _M, "queries": _QUERIES},
        {"x": T("input vector", "float32")},
        {"norm": T("‖x‖ in normDtype (scalar)", "float32", "float16"),
         "indices": T("unpacked mse-stage codes (d)", "uint8"),
         "packed": T("packed mse-stage codes", "uint8"),
         "signs": T("packed QJL sign bits", "uint8"),
         "gamma": T("γ = ‖r‖ of the rotated unit-scale residual, in normDtype (scalar)", "float32", "float16"),
         "xhat": T("dequantized vector (matmul with S: tolerance)", "float32", compare="tolerance"),
         "estimates": T("estimates of ⟨q_j, x⟩ (m)", "float32", compare="tolerance")},
        ("prod_quantize", "prod_dequantize", "prod_inner_product")),
)}


def register_type(test_type: TestType, ops=()) -> None:
    """Add a test type (and its operations) defined elsewhere (runtime profiles, KV cache)."""
    for op in ops:
        OPS[op.name] = op
    TEST_TYPES[test_type.name] = test_type


# --------------------------------------------------------------------------- flags

#: flag -> (bugType, description). A file's ``notes`` holds exactly the flags its tests use.
FLAGS = {
    "Pseudorandom": ("BASIC", "Input drawn from the portable test-data generator (Irwin–Hall sums of "
                              "prng uniforms, stream 100); nothing special about it."),
    "KnownAnswer": ("BASIC", "A small hand-checkable case (worked example in the reference docstrings)."),
    "ZeroVector": ("EDGE_CASE", "All-zero input: the norm is 0, the unit vector is defined as 0 and every "
                                "coordinate lands in cell K/2 − 1 (0 is on the middle boundary: ties go low)."),
    "NegativeZero": ("EDGE_CASE", "Input of −0.0 values: must behave exactly as +0.0 (max|x| = 0)."),
    "OneHot": ("EDGE_CASE", "A single non-zero coordinate: after rotation the vector is far from "
                            "'typical', exercising every round of the transform."),
    "Constant": ("EDGE_CASE", "All coordinates equal: many exact cancellations in the butterflies."),
    "Outlier": ("EDGE_CASE", "One coordinate 300× the others."),
    "TinyValues": ("EDGE_CASE", "Values around 1e-30: a naive sum of squares underflows to 0; the scale-safe "
                                "norm (frexp/ldexp) must not."),
    "SubnormalInput": ("EDGE_CASE", "Float32 subnormal inputs (around 1e-40): flush-to-zero hardware or "
                                    "compiler flags lose them."),
    "SubnormalNorm": ("EDGE_CASE", "The norm itself is a float32 subnormal: ldexp must round correctly and "
                                   "dequantization produces subnormals (flush-to-zero fails)."),
    "HugeValues": ("EDGE_CASE", "Values around 1e30: a naive sum of squares overflows float32; the "
                                "scale-safe norm must not."),
    "NormOverflow": ("EDGE_CASE", "The true norm exceeds float32's range: split_norm returns +inf; the "
                                  "quantizers must refuse the vector."),
    "Float16NormOverflow": ("EDGE_CASE", "The norm does not fit float16 storage (> 65504): must be refused, "
                                         "not stored as inf."),
    "Float16NormUnderflow": ("EDGE_CASE", "The norm is non-zero but rounds to 0 in float16 storage: must be "
                                          "refused, not silently stored as 0."),
    "NanInput": ("EDGE_CASE", "A NaN in the input: quantizers must refuse it (nearest_index maps NaN to 0, "
                              "a convention the runtime profiles need)."),
    "InfInput": ("EDGE_CASE", "An infinity in the input: quantizers must refuse it."),
    "BoundaryTie": ("EDGE_CASE", "A value exactly equal to a decision boundary: it goes to the lower cell "
                                 "(count of boundaries strictly less)."),
    "Float32BoundaryRounding": ("EDGE_CASE", "A float32 value within one float32 ulp of a float64 boundary: "
                                             "comparing against the boundary rounded to float32 gives the "
                                             "wrong cell."),
    "RotatedZero": ("EDGE_CASE", "Some rotated coordinate is exactly ±0.0, a tie on the middle boundary "
                                 "(goes to cell K/2 − 1)."),
    "NonPowerOfTwoDim": ("EDGE_CASE", "d is not a power of two: the rotation alternates H_m on [0, m) and on "
                                      "[d − m, d) (overlapping blocks; m the largest power of two ≤ d), with "
                                      "fresh signs before each block: 6 steps instead of 3."),
    "SmallDim": ("EDGE_CASE", "A very small dimension (d ≤ 4)."),
    "CancellationOrder": ("EDGE_CASE", "Terms chosen so that a different summation order (sequential, "
                                       "pairwise, FMA) gives a different float32 result."),
    "FmaContraction": ("EDGE_CASE", "Lane sums computed with fused multiply-add (a·b + s rounded once) give a "
                                    "different float32 result: compile the ordered sums without contraction."),
    "LongVector": ("EDGE_CASE", "More than 32 terms: lanes hold several terms each."),
    "ShortVector": ("EDGE_CASE", "Fewer than 32 terms: most lanes are empty (+0.0)."),
    "HighCounter": ("EDGE_CASE", "Stream indices near 2^32 or 2^63: 64-bit counter arithmetic must wrap."),
    "ExtremeSeed": ("EDGE_CASE", "Seed 0 or 2^64 − 1: 64-bit seed arithmetic must wrap."),
    "PartialByte": ("EDGE_CASE", "count · bits is not a multiple of 8: the last byte is zero-filled."),
    "MaxIndex": ("EDGE_CASE", "All indices 2^b − 1: every bit set."),
    "TruncatedBuffer": ("EDGE_CASE", "The packed buffer is shorter than ceil(count · bits / 8): must be refused."),
    "OversizedBuffer": ("EDGE_CASE", "The packed buffer is longer than ceil(count · bits / 8): must be refused."),
    "SignOfZero": ("EDGE_CASE", "A projection exactly 0 (±0.0): its sign bit is 1 (sign(0) = +1)."),
    "ZeroResidual": ("EDGE_CASE", "A zero residual: γ = 0 and every sign bit is 1."),
    "StatisticalTier": ("FUNCTIONALITY", "Uses a matrix generated with libm/LAPACK (Haar, Gaussian): the "
                                         "matrix is shipped in the group; given it, the integer outputs are "
                                         "exact."),
    "Float16Norms": ("FUNCTIONALITY", "Norms stored as float16 (round to nearest even from the float32 norm)."),
    "GaussianCodebook": ("FUNCTIONALITY", "The Gaussian-limit codebook N(0, 1/d) instead of the exact marginal."),
    "HighBits": ("FUNCTIONALITY", "A large bit width (b = 8)."),
    # the real-v1 family (real_data.py)
    "RealKey": ("FUNCTIONALITY", "A real post-RoPE key of SmolLM2-135M-Instruct (real_kv_inputs.json says "
                                 "which layer, head and position): outlier channels and RoPE structure."),
    "RealValue": ("FUNCTIONALITY", "A real value vector of SmolLM2-135M-Instruct."),
    "RealQueries": ("FUNCTIONALITY", "Real queries, keys and values of one layer of SmolLM2-135M-Instruct."),
    "OutlierLayer": ("EDGE_CASE", "From a layer with one of the largest key outlier channels (channel RMS many "
                                  "times the median channel's)."),
}

BUG_TYPES = ("BASIC", "EDGE_CASE", "FUNCTIONALITY", "KNOWN_BUG", "COMPATIBILITY")


def register_flags(flags: dict) -> None:
    """Add flags (name -> (bugType, description)) used by test types defined elsewhere."""
    for name, value in flags.items():
        if name in FLAGS and FLAGS[name] != value:
            raise ValueError(f"flag {name!r} is already defined differently")
        FLAGS[name] = value


def _register_families() -> None:
    """Add the KV-cache and runtime-profile test types whose modules are importable."""
    from . import families

    families.register_all()


_register_families()
