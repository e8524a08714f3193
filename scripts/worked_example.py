"""Print the worked example of docs/algorithm.md: one d = 8 vector through every reference step.

    python scripts/worked_example.py

Every number in the walkthrough's example blocks comes from this script (the reference
modules called one step at a time), so the document can be regenerated and checked.
"""

from __future__ import annotations

import math

import numpy as np

from tqref.reference import codebook as cb
from tqref.reference import estimators, mse, packing, prng, prod, qjl, reduction, rotation
from tqref.reference.plan import Config, make_plan

np.set_printoptions(precision=6, suppress=True, linewidth=110, floatmode="fixed")


def hexes(values) -> str:
    return "[" + ", ".join(f"0x{int(v):02x}" for v in np.asarray(values).ravel()) + "]"


def main() -> None:
    d, bits, seed = 8, 3, 0
    print("== prng ==")
    print("key(0, 1)              =", hex(int(prng.stream_key(0, prng.STREAM_ROTATION_SIGNS))))
    print("raw(0, 1, i), i = 0..3 =", [hex(int(v)) for v in prng.raw_stream(0, prng.STREAM_ROTATION_SIGNS, 4)])
    print("rademacher(0, 1, 0..7) =", prng.rademacher(0, prng.STREAM_ROTATION_SIGNS, 8))
    print("uniform(0, 1, 0..3)    =", prng.uniform(0, prng.STREAM_ROTATION_SIGNS, 4))
    print("gaussian(0, 3, 0..3)   =", prng.gaussian(0, prng.STREAM_QJL_GAUSSIAN, 4))

    x = np.array([[0.9, -1.7, 0.3, 2.2, 0.0, -0.4, 1.1, -2.5]], dtype=np.float32)
    print("\n== input ==")
    print("x =", x[0])

    print("\n== reduction + split norm (mse.split_norm) ==")
    m = np.max(np.abs(x))
    frac, exp = np.frexp(m)
    print(f"max|x_j| = {m}, frexp -> ({frac}, {exp})")
    xs = np.ldexp(x, -exp).astype(np.float32)
    print("xs = ldexp(x, -E) =", xs[0])
    s = reduction.ordered_dot(xs, xs)
    print(f"s = ordered_dot(xs, xs) = {s[0]!r} ({float(s[0]).hex()})")
    u, norm = mse.split_norm(x)
    print(f"ns = sqrt(s) = {np.sqrt(s)[0]!r}; norm = ldexp(ns, E) = {norm[0]!r} ({float(norm[0]).hex()})")
    print("u = xs / ns =", u[0])

    print("\n== rotation (hadamard, 3 rounds, seed 0) ==")
    signs = rotation.hadamard_signs(d, seed)
    y = u.copy()
    for r in range(rotation.HADAMARD_ROUNDS):
        y = y * signs[r]
        print(f"round {r}: signs {signs[r]}")
        y = rotation.fwht(y)
        print(f"         after H_8 * 1/sqrt(8): {y[0]}")
    assert np.array_equal(y, rotation.hadamard_forward(u, seed))
    print("y = Pi u =", y[0], "  (sqrt(d) * y =", (y[0] * math.sqrt(d)).round(4), ")")

    print("\n== codebook (beta, b = 3, d = 8) ==")
    book = cb.lloyd_max(bits, d, "beta")
    print("centroids          =", book.centroids)
    print("boundaries         =", book.boundaries)
    print("thresholds_f32     =", book.thresholds_f32)
    print("distortion d*C     =", round(book.distortion, 6))
    print("gaussian centroids =", cb.lloyd_max(bits, d, "gaussian").centroids)

    print("\n== nearest centroid (codebook.nearest_index) ==")
    idx = cb.nearest_index(y, book.boundaries)
    print("idx =", idx[0])
    print("y_hat = c[idx] =", book.centroids_f32[idx][0])

    print("\n== packing (3 bits, LSB-first) ==")
    packed = packing.pack_bits(idx, bits)
    stream = "".join(format(int(i), "03b")[::-1] for i in idx[0])
    print("bit stream (index 0 first, each index LSB first):", " ".join(stream[i:i + 3] for i in range(0, len(stream), 3)))
    print("packed =", hexes(packed), "=", packed[0].tolist())

    print("\n== TurboQuant_mse (mse.quantize / dequantize) ==")
    plan = make_plan(Config("mse", d, bits, seed))
    pk, nr = mse.quantize(x, plan)
    assert np.array_equal(pk, packed)
    xh = mse.dequantize(pk, nr, plan)
    print("x_hat =", xh[0])
    err = float(np.sum((xh.astype(np.float64) - x) ** 2) / np.sum(x.astype(np.float64) ** 2))
    print(f"||x - x_hat||^2 / ||x||^2 = {err:.5f}   (codebook distortion {book.distortion:.5f})")

    print("\n== TurboQuant_prod, 3 bits = 2-bit mse + QJL (rademacher S, portable) ==")
    pplan = make_plan(Config("prod", d, 3, seed, projection="rademacher"))
    yy, idx2, _ = mse.quantize_rotated(x, pplan)
    r = yy - pplan.codebook.centroids_f32[idx2]
    print("2-bit centroids =", pplan.codebook.centroids)
    print("idx (2-bit) =", idx2[0])
    print("r = y - c[idx] =", r[0])
    proj = reduction.ordered_matvec(pplan.projection, r)
    print("S r =", proj[0])
    p2, n2, sg, gm = prod.quantize(x, pplan)
    print("sign bits (1 = non-negative) =", (proj[0] >= 0).astype(int), "-> packed", hexes(sg))
    print(f"gamma = ||r|| = {gm[0]!r}; kappa = sqrt(pi/2)/d = {pplan.qjl_scale!r}")
    print("mse packed =", hexes(p2), " norm =", repr(n2[0]))
    print("x_tilde =", prod.dequantize(p2, n2, sg, gm, pplan)[0])

    print("\n== estimators: query q = (1, 1, 1, 1, 0, 0, 0, 0) ==")
    q = np.array([[1, 1, 1, 1, 0, 0, 0, 0]], dtype=np.float32)
    print("true <q, x>               =", float(q[0] @ x[0]))
    print("mse, plain (3 bits)       =", estimators.mse_inner_product(q, pk, nr, plan)[0, 0])
    print(f"mse, debiased (alpha = {cb.shrinkage(book):.5f}) =",
          estimators.mse_inner_product(q, pk, nr, plan, unbiased=True)[0, 0])
    print("prod (2-bit + QJL)        =", estimators.prod_inner_product(q, p2, n2, sg, gm, pplan)[0, 0])

    print("\n== QJL constants at d = 8 ==")
    for kind in qjl.PROJECTIONS:
        print(f"kappa[{kind}] = {qjl.estimator_scale(kind, d)!r}")


if __name__ == "__main__":
    main()
