"""``tqref reproduce``: recompute the paper's distortion table on this machine.

For b = 1..4 bits at dimension d it measures, on random unit vectors and unit queries:

* D_mse = E‖x − x̃‖² of TurboQuant_mse beside the Lloyd–Max optimum d·C(f, b), the paper's
  refined values and Theorems 1 and 3's bounds 4^-b ≤ D_mse ≤ (√3·π/2)·4^-b;
* d·D_prod = d·E(⟨y, x⟩ − estimate)² for the four estimators of docs/algorithm.md §9 — mse plain,
  mse debiased, prod with Gaussian S, prod with orthogonal S — beside the paper's refined
  values and the bounds 4^-b ≤ d·D_prod ≤ √3·π²·4^-b. (prod spends b − 1 bits on its mse
  stage and one on QJL, so every column uses b bits per coordinate.)

Each measurement is printed with its standard error.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from ..reference.plan import MSE_BITS

PAPER_MSE = {1: 0.36, 2: 0.117, 3: 0.03, 4: 0.009}
PAPER_PROD = {1: 1.57, 2: 0.56, 3: 0.18, 4: 0.047}
ESTIMATORS = ("mse", "mse_debiased", "prod_gaussian", "prod_orthogonal")


@dataclasses.dataclass
class Row:
    bits: int
    mse: float
    mse_se: float
    optimum: float
    ip: dict  # estimator -> (d·D_prod, SE)


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _mean_se(values: np.ndarray):
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def measure(dim: int = 128, vectors: int = 20000, bits=(1, 2, 3, 4), seed: int = 0,
            rotation: str = "hadamard", backend: str = "reference", show_progress: bool = True):
    """Run the measurements; returns a list of :class:`Row`."""
    import tqref

    from .._progress import progress

    x = _unit_rows(vectors, dim, seed)
    y = _unit_rows(vectors, dim, seed + 1)
    truth = np.sum(x.astype(np.float64) * y, axis=1)
    rows = []
    steps = [(b, e) for b in bits for e in ("distortion",) + ESTIMATORS]
    estimates = {}
    for b, what in progress(steps, "reproduce", enabled=show_progress):
        common = dict(seed=seed + 17, rotation=rotation, backend=backend)
        if what == "distortion":
            q = tqref.TurboQuantMSE(dim, b, **common)
            err = np.sum((q.dequantize(q.quantize(x)) - x) ** 2, axis=1)
            estimates[(b, what)] = (_mean_se(err), q.plan.codebook.distortion)
            continue
        if what.startswith("mse"):
            q = tqref.TurboQuantMSE(dim, b, **common)
            codes = q.quantize(x)
            est = _pairwise(q, y, codes, unbiased=(what == "mse_debiased"))
        else:
            if b < 2:  # prod needs at least one mse bit plus the QJL bit
                estimates[(b, what)] = None
                continue
            q = tqref.TurboQuantProd(dim, b, projection=what.split("_")[1], **common)
            est = _pairwise(q, y, q.quantize(x))
        sq = dim * (est - truth) ** 2
        estimates[(b, what)] = _mean_se(sq)
    for b in bits:
        (mse, mse_se), optimum = estimates[(b, "distortion")]
        rows.append(Row(b, mse, mse_se, optimum, {e: estimates[(b, e)] for e in ESTIMATORS}))
    return rows


def _pairwise(q, y, codes, **kwargs) -> np.ndarray:
    """Estimate ⟨y_i, x_i⟩ for matching rows in blocks (avoids the full n×n matrix)."""
    n = len(codes)
    out = np.empty(n, dtype=np.float64)
    block = 512
    for start in range(0, n, block):
        sl = slice(start, start + block)
        part = _take(codes, sl)
        out[sl] = np.diagonal(q.inner_product(y[sl], part, **kwargs))
    return out


def _take(codes, sl):
    if hasattr(codes, "signs"):
        mse = dataclasses.replace(codes.mse, indices=codes.mse.indices[sl], norms=codes.mse.norms[sl])
        return dataclasses.replace(codes, mse=mse, signs=codes.signs[sl], residual_norms=codes.residual_norms[sl])
    return dataclasses.replace(codes, indices=codes.indices[sl], norms=codes.norms[sl])


def format_table(rows, dim: int, vectors: int) -> str:
    c = math.sqrt(3) * math.pi / 2
    lines = [
        f"TurboQuant distortion, d = {dim}, {vectors} unit vectors (± one standard error)",
        "",
        "MSE distortion D_mse = E|x - x~|^2",
        f"{'bits':>4}  {'measured':>18}  {'Lloyd-Max opt':>13}  {'paper':>6}  {'lower 4^-b':>10}  {'upper 2.72*4^-b':>15}",
    ]
    for r in rows:
        lines.append(f"{r.bits:>4}  {r.mse:>10.5f} ± {r.mse_se:.5f}  {r.optimum:>13.5f}  "
                     f"{PAPER_MSE.get(r.bits, float('nan')):>6.3f}  {4.0**-r.bits:>10.5f}  {c * 4.0**-r.bits:>15.5f}")
    lines += ["", "Inner-product distortion d*E(<y,x> - estimate)^2, unit y, same total bits",
              f"{'bits':>4}  " + "  ".join(f"{e:>18}" for e in ESTIMATORS)
              + f"  {'paper prod':>10}  {'lower':>7}  {'upper':>7}"]
    for r in rows:
        cells = []
        for e in ESTIMATORS:
            v = r.ip[e]
            cells.append(f"{'n/a':>18}" if v is None else f"{v[0]:>9.4f} ± {v[1]:.4f}")
        lines.append(f"{r.bits:>4}  " + "  ".join(cells)
                     + f"  {PAPER_PROD.get(r.bits, float('nan')):>10.3f}  {4.0**-r.bits:>7.4f}"
                     + f"  {math.sqrt(3) * math.pi**2 * 4.0**-r.bits:>7.3f}")
    lines += ["", "mse = TurboQuant_mse estimate (biased by its shrinkage ~ 1 - D); mse_debiased divides",
              "by it; prod_* = TurboQuant_prod with (b-1)-bit mse + 1-bit QJL (Gaussian or orthogonal S)."]
    return "\n".join(lines)


def plot(rows, path: str, dim: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # optional dependency
        raise SystemExit(f"--plot needs matplotlib (pip install 'tqref[plot]'): {exc}")
    bits = np.array([r.bits for r in rows])
    fine = np.linspace(bits.min(), bits.max(), 50)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.semilogy(bits, [r.mse for r in rows], "o-", label="measured D_mse")
    a.semilogy(bits, [r.optimum for r in rows], "x--", label="Lloyd-Max optimum")
    a.semilogy(fine, 4.0**-fine, "k:", label="lower bound 4^-b")
    a.semilogy(fine, math.sqrt(3) * math.pi / 2 * 4.0**-fine, "k-.", label="upper bound (√3π/2)·4^-b")
    a.set(xlabel="bits per coordinate", ylabel="D_mse", title=f"MSE distortion, d={dim}")
    a.legend(fontsize=8)
    for e in ESTIMATORS:
        pts = [(r.bits, r.ip[e][0]) for r in rows if r.ip[e] is not None]
        b.semilogy(*zip(*pts), "o-", label=e)
    b.semilogy(fine, 4.0**-fine, "k:", label="lower bound 4^-b")
    b.semilogy(fine, math.sqrt(3) * math.pi**2 * 4.0**-fine, "k-.", label="upper bound √3π²·4^-b")
    b.set(xlabel="bits per coordinate", ylabel="d · D_prod", title="Inner-product distortion")
    b.legend(fontsize=8)
    for axis in (a, b):
        axis.set_xticks(bits)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args) -> int:
    if args.vectors < 100:
        raise SystemExit(f"--vectors: expected at least 100, got {args.vectors}")
    bits = tuple(sorted(set(args.bits)))
    rows = measure(args.dim, args.vectors, bits, args.seed, args.rotation, args.backend, not args.quiet)
    print(format_table(rows, args.dim, args.vectors))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([dataclasses.asdict(r) for r in rows], fh, indent=1)
    if args.plot:
        plot(rows, args.plot, args.dim)
        print(f"plot written to {args.plot}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="recompute the paper's distortion table on this machine",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=128, help="vector dimension (default 128)")
    p.add_argument("--vectors", type=int, default=20000, help="number of unit vectors (default 20000)")
    p.add_argument("--bits", type=int, nargs="+", default=[1, 2, 3, 4], choices=range(MSE_BITS[0], MSE_BITS[1] + 1),
                   metavar="B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rotation", choices=("hadamard", "haar"), default="hadamard")
    p.add_argument("--backend", default="reference", help="reference | numba | cuda | auto")
    p.add_argument("--plot", metavar="FILE.png", help="draw distortion against bits (needs matplotlib)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
