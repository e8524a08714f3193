"""Golden vectors at the float16 norm rule's boundaries: ``conformance/norm16-v1/``.

The float16 norm rule (reference/plan.py ``unstorable_norms``; docs/compatibility.md "The
float16 norm rule"): with ``normDtype`` float16 a quantizer stores a norm only when its float32
value is 0 or inside float16's normal range [2^-14, 65504]; it refuses every other input. v1
tests one vector on each side, far from the edges; this family puts vectors *on* both edges
and one float32 step outside each, for TurboQuant_mse and TurboQuant_prod, through the v1 test
types (MseTest, ProdTest) and schemas. v1 stays frozen (docs/compatibility.md); this family
lives in its own directory with its own index.json, like real-v1 (real_data.py).

Inputs are one-hot vectors c·e_i: the reference's norm of such a vector is exactly |c|
(fl(sqrt(fl(c²))) = |c| in binary floating point without overflow or underflow), so each
case sits exactly where it says; :func:`cases` checks that with the reference's split_norm.

``python -m tqref.conformance.norm16 --out conformance/norm16-v1`` writes the files;
tests/conformance/test_norm16_vectors.py regenerates them and fails on drift.
"""

from __future__ import annotations

import argparse
import functools
import sys

import numpy as np

from . import generate, spec
from .generate import FileBuilder, _projection, _quantizer_test, header, mse_tolerance, prod_tolerance
from ..reference import codebook as cb
from ..reference import mse
from ..reference.plan import FLOAT16_MAX, FLOAT16_NORMAL_MIN

DIR_NAME = "norm16-v1"
GENERATOR = "tqref/conformance/norm16.py"
_F32 = np.float32
FLAGS = {
    "Float16NormBoundary": ("EDGE_CASE", "normDtype float16: the vector's float32 norm is exactly 0, the smallest "
                                         "normal float16 2^-14 or the largest float16 65504 (stored)."),
    "Float16NormOutside": ("EDGE_CASE", "normDtype float16: the vector's float32 norm is the float32 next to "
                                        "2^-14 below it or next to 65504 above it (must be refused)."),
}


def cases(d: int) -> list:
    """(comment, flags, x float32 (d,), result) of every boundary case for dimension d."""
    low, high = _F32(FLOAT16_NORMAL_MIN), _F32(FLOAT16_MAX)
    below, above = np.nextafter(low, _F32(0)), np.nextafter(high, _F32(np.inf))
    plan = [("norm 0: the zero vector", "Float16NormBoundary", _F32(0), 0, "valid"),
            ("norm 2^-14, the smallest normal float16", "Float16NormBoundary", low, 0, "valid"),
            ("norm 2^-14 on the last coordinate", "Float16NormBoundary", -low, d - 1, "valid"),
            ("norm 65504, the largest float16", "Float16NormBoundary", high, 0, "valid"),
            ("norm 65504 on the last coordinate", "Float16NormBoundary", -high, d - 1, "valid"),
            ("norm 2^-14 − 2^-38, the float32 just below 2^-14", "Float16NormOutside", below, 0, "invalid"),
            ("norm 65504 + 2^-8, the float32 just above 65504", "Float16NormOutside", above, d - 1, "invalid")]
    out = []
    for comment, flag, value, index, result in plan:
        x = np.zeros(d, _F32)
        x[index] = value
        _, norm = mse.split_norm(x[None])
        if float(norm[0]) != abs(float(value)):
            raise AssertionError(f"{comment}: the reference's norm is {float(norm[0])!r}, not {abs(float(value))!r}")
        out.append((comment, [flag], x, result))
    return out


def builders() -> list:
    """FileBuilders of conformance/norm16-v1."""
    spec.register_flags(FLAGS)
    common = header() + [
        "Every vector sits on a boundary of the float16 norm rule (docs/compatibility.md \"The float16",
        "norm rule\") or one float32 step outside it: norms 0, 2^-14 and 65504 are stored (valid); the",
        "float32 next to 2^-14 below it and next to 65504 above it are refused (invalid). The outputs",
        "follow the rules of the v1 file of the same test type, with the same tolerance derivations.",
    ]
    files = []
    fb = FileBuilder("norm16_mse_test", "TQ-MSE-HADAMARD", "MseTest", common + [
        "TurboQuant_mse (Algorithm 1), 3-round Hadamard rotation, normDtype float16."])
    for d, b, seed in ((64, 3, 21), (17, 2, 22)):
        book = cb.lloyd_max(b, d)
        queries = generate._queries(d, 21000 + d * 16 + b)
        g = fb.group(f"d = {d}, b = {b}, hadamard, beta codebook, float16 norms", dim=d, bits=b, seed=seed,
                     rotation="hadamard", codebookLaw="beta", normDtype="float16", centroids=book.centroids_f32,
                     boundaries=np.array(book.boundaries), shrinkage=np.float64(cb.shrinkage(book)), m=2,
                     queries=queries)
        for comment, flags, x, result in cases(d):
            _quantizer_test(fb, g, comment, flags + ["Float16Norms"] + generate._dim_flags(d), x, result,
                            mse_tolerance)
    files.append(fb)

    fb = FileBuilder("norm16_prod_test", "TQ-PROD-RADEMACHER", "ProdTest", common + [
        "TurboQuant_prod (Algorithm 2), Rademacher S from the PRNG (portable tier), normDtype float16",
        "(the norm and γ are stored as float16; γ of a unit vector is far inside the normal range)."])
    for d, b, seed in ((64, 3, 23), (16, 4, 24)):
        book = cb.lloyd_max(b - 1, d)
        s, fields, extra = _projection("rademacher", d, seed)
        g = fb.group(f"d = {d}, b = {b} ({b - 1}-bit mse + QJL), rademacher S, float16 norms", dim=d, bits=b,
                     seed=seed, rotation="hadamard", codebookLaw="beta", normDtype="float16",
                     centroids=book.centroids_f32, boundaries=np.array(book.boundaries), **fields, m=2,
                     queries=generate._queries(d, 22000 + d + b))
        for comment, flags, x, result in cases(d):
            _quantizer_test(fb, g, comment, flags + ["Float16Norms"] + extra, x, result,
                            functools.partial(prod_tolerance, s=s))
    files.append(fb)
    return files


def render() -> dict:
    """relative path -> text of the whole norm16-v1 directory (nothing written)."""
    return generate.render_family(builders(), GENERATOR)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tqref.conformance.norm16", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="write the vectors here, e.g. conformance/norm16-v1")
    args = parser.parse_args(argv)
    files = generate.write(args.out, render())
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
