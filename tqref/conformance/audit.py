"""Statistical audit of any TurboQuant implementation (``tqref audit --impl MODULE:FACTORY``).

The implementation is reached through a small adapter: ``FACTORY(dim, bits, seed)`` returns
an object with

    kind: "mse" or "prod"               which estimator it claims to implement
    quantize(x)           -> codes       x float32 (n, dim); codes are opaque
    dequantize(codes)     -> (n, dim)    reconstruction
    inner_product(q, codes) -> (m, n)    estimates of <q_j, x_i> for queries q (m, dim)

and optionally ``unbiased`` (bool; mse kind: whether inner_product divides by the shrinkage).
examples/audit/ has adapters for third-party packages; tqref.conformance.audit_adapters has
tqref's own.

Data: x ~ N(0, I_dim) in float32 (numpy default_rng(data_seed)); queries q = 0.8·x + 0.6·g
with fresh g ~ N(0, I) (truth ≈ 0.8·dim, so multiplicative bias is visible — mean error over
independent pairs cannot see it, docs/audits.md). The implementation is instantiated with
``instances`` seeds and the samples are split among them, so the estimates average over the
implementation's own randomness as the paper's expectations do.

Checks (numbers are means with standard errors, SE):

* **mse** — normalised MSE E‖x − x̂‖²/‖x‖² against the exact-marginal Lloyd–Max optimum
  D*(b, d) = tqref.lloyd_max(b, d).distortion. mse kind: FAIL if significantly above
  D*·(1 + slack); WARN if significantly below D*·(1 − slack) (more than b bits of
  information?). prod kind: INFO, beside D*(b − 1)·(π/2 − 1/d), the value of a Gaussian-S
  reconstruction (and D*(b − 1) for one that returns only the mse stage).
* **slope** — β = Σ est·t / Σ t² over the pairs (t = ⟨q, x⟩), SE by the heteroscedasticity-
  robust formula. prod kind: must be 1. mse kind: 1 (debiased) or α = shrinkage of the
  optimal codebook (plain estimator, E = α⟨q, x⟩); FAIL if consistent with neither.
* **self_bias** — mean of (est⟨x, x⟩ − ‖x‖²)/‖x‖²: 0, or α − 1 for a plain mse estimator.
* **variance** — mean of d·(est − β₀ t)²/(‖q‖²‖x‖²) (β₀ the expected slope). prod kind: FAIL
  if significantly above the paper's bound √3·π²/4^b (Theorem 2); INFO beside the theory
  value (π/2)·D*(b − 1). mse kind: INFO.
* **determinism** — quantizing the same input twice, and with a second instance of the same
  seed, gives identical reconstructions and estimates (FAIL otherwise); quantizing in two
  halves gives what one batch gives up to float rounding (≤ 1e-5 of max|x̂|: matrix products
  may block differently by batch size; WARN beyond); the input array is not modified (FAIL).

Decision rule and false-failure rate. A statistical check fails when the deviation exceeds
``z·SE + slack`` (slack is a practical-equivalence margin per check, listed in the report).
With the default z = 4, a correct implementation (true deviation within the slack) fails a
two-sided check with probability ≤ 2·Φ(−4) = 6.3e-5 and the one-sided variance check with
≤ 3.2e-5 (normal approximation of means of ≥ 1000 independent terms); the four statistical
checks together fail with probability ≤ 2.2e-4 per audit (union bound). Determinism checks
are exact and cannot fail by chance.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
import time

import numpy as np

Z_DEFAULT = 4.0
SLACK = {"mse": 0.02, "slope": 0.005, "self_bias": 0.005, "variance": 0.0}
PASS, FAIL, WARN, INFO = "PASS", "FAIL", "WARN", "INFO"
BATCH_ROUNDING = 1e-5  # split-batch reconstructions within this fraction of max|x̂| count as equal


def two_sided_rate(z: float) -> float:
    return math.erfc(z / math.sqrt(2.0))


@dataclasses.dataclass
class Check:
    name: str
    verdict: str
    value: float | None
    se: float | None
    expected: str
    detail: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AuditResult:
    impl: str
    kind: str
    dim: int
    bits: int
    samples: int
    instances: int
    z: float
    checks: list
    seconds: float

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.checks}
        return FAIL if FAIL in verdicts else (WARN if WARN in verdicts else PASS)

    @property
    def false_failure_rate(self) -> float:
        """Upper bound on P(some statistical check fails) for a correct implementation."""
        n_two = sum(1 for c in self.checks if c.name in ("mse", "slope", "self_bias") and c.verdict != INFO)
        n_one = sum(1 for c in self.checks if c.name == "variance" and c.verdict != INFO)
        return n_two * two_sided_rate(self.z) + n_one * two_sided_rate(self.z) / 2

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["verdict"] = self.verdict
        out["false_failure_rate"] = self.false_failure_rate
        return out


class AuditError(Exception):
    """The implementation could not be audited (bad factory, wrong shapes, exceptions)."""


def load_factory(spec_text: str):
    """``module:attribute`` -> the factory callable (AuditError with a clear message)."""
    module_name, sep, attr = spec_text.partition(":")
    if not sep or not module_name or not attr:
        raise AuditError(f"--impl: expected MODULE:FACTORY, got {spec_text!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - report any import failure
        raise AuditError(f"--impl: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise AuditError(f"--impl: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise AuditError(f"--impl: {spec_text} is not callable")
    return target


def _mean_se(values: np.ndarray):
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _call(what: str, fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the audited code may raise anything
        raise AuditError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _array(what: str, value, shape) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        raise AuditError(f"{what}: not an array of numbers ({type(exc).__name__}: {exc})") from exc
    if arr.shape != tuple(shape):
        try:
            arr = arr.reshape(shape)
        except ValueError:
            raise AuditError(f"{what}: expected shape {tuple(shape)}, got {arr.shape}") from None
    if not np.all(np.isfinite(arr)):
        raise AuditError(f"{what}: contains NaN or inf")
    return arr


def _paired_estimates(impl, queries, codes) -> np.ndarray:
    """est⟨q_i, x_i⟩ for the rows of one chunk: the diagonal of inner_product(queries, codes)."""
    n = len(queries)
    block = _array("inner_product", _call("inner_product", impl.inner_product, queries, codes), (n, n))
    return np.diag(block).copy()


def audit(factory, dim: int = 128, bits: int = 3, *, samples: int = 4096, instances: int = 4, data_seed: int = 0,
          z: float = Z_DEFAULT, chunk: int = 256, name: str = "", log=None) -> AuditResult:
    """Run every check; returns an :class:`AuditResult` (AuditError if the adapter misbehaves)."""
    from ..reference import codebook as cb

    t0 = time.monotonic()
    rng = np.random.default_rng(data_seed)
    per = max(chunk, (samples // instances) // chunk * chunk)
    impls = [_call("factory", factory, dim, bits, 1000 + k) for k in range(instances)]
    kind = getattr(impls[0], "kind", None)
    if kind not in ("mse", "prod"):
        raise AuditError(f"the adapter must have kind 'mse' or 'prod', got {kind!r}")
    declared_unbiased = getattr(impls[0], "unbiased", None)
    mse_bits = bits if kind == "mse" else bits - 1
    if mse_bits < 1:
        raise AuditError(f"bits: a prod implementation needs at least 2 bits, got {bits}")
    opt = cb.lloyd_max(mse_bits, dim).distortion
    alpha = cb.shrinkage(cb.lloyd_max(bits, dim)) if kind == "mse" else 1.0

    nmse, self_rel, var_terms, truths, ests = [], [], [], [], []
    for k, impl in enumerate(impls):
        x = rng.standard_normal((per, dim)).astype(np.float32)
        g = rng.standard_normal((per, dim)).astype(np.float32)
        q = (0.8 * x + 0.6 * g).astype(np.float32)
        # quantize in chunks so that inner products can be taken block by block (diagonals)
        bounds = [(s, min(s + chunk, per)) for s in range(0, per, chunk)]
        x_copy = x.copy()
        chunks = [_call("quantize", impl.quantize, x[lo:hi]) for lo, hi in bounds]
        if k == 0 and not np.array_equal(x, x_copy):
            raise AuditError("quantize modified its input array")
        xhat = np.concatenate([_array("dequantize", _call("dequantize", impl.dequantize, c), (hi - lo, dim))
                               for c, (lo, hi) in zip(chunks, bounds)])
        x64 = x.astype(np.float64)
        sq = np.sum(x64 * x64, axis=1)
        nmse.append(np.sum((x64 - xhat) ** 2, axis=1) / sq)
        est = np.concatenate([_paired_estimates(impl, q[lo:hi], c) for c, (lo, hi) in zip(chunks, bounds)])
        truth = np.sum(q.astype(np.float64) * x64, axis=1)
        self_est = np.concatenate([_paired_estimates(impl, x[lo:hi], c) for c, (lo, hi) in zip(chunks, bounds)])
        self_rel.append((self_est - sq) / sq)
        truths.append(truth)
        ests.append(est)
        qn = np.sum(q.astype(np.float64) ** 2, axis=1)
        var_terms.append((dim, qn, sq))
        if log:
            log(f"instance {k + 1}/{instances} done")
    nmse = np.concatenate(nmse)
    t = np.concatenate(truths)
    e = np.concatenate(ests)
    self_rel = np.concatenate(self_rel)
    qn = np.concatenate([v[1] for v in var_terms])
    sq = np.concatenate([v[2] for v in var_terms])
    n = len(t)
    checks = []

    # ---- mse
    m, se = _mean_se(nmse)
    if kind == "mse":
        hi = opt * (1 + SLACK["mse"])
        lo = opt * (1 - SLACK["mse"])
        if m - z * se > hi:
            verdict = FAIL
            detail = f"{m / opt:.3f}× the optimum: above D*·(1 + {SLACK['mse']}) by {(m - hi) / se:.1f} SE"
        elif m + z * se < lo:
            verdict, detail = WARN, f"{m / opt:.3f}× the optimum: below what b = {bits} bits allow"
        else:
            verdict, detail = PASS, f"{m / opt:.4f}× the optimum"
        expected = f"D*({bits}, {dim}) = {opt:.5f} (±{SLACK['mse']:.0%})"
    else:
        gauss = opt * (math.pi / 2 - 1.0 / dim)
        verdict, detail = INFO, (f"{m / opt:.3f}× D*(b−1); Gaussian-S reconstruction ≈ {gauss:.5f}, mse stage "
                                 f"alone = {opt:.5f}")
        expected = f"≈ {gauss:.5f}"
    checks.append(Check("mse", verdict, m, se, expected, detail))

    # ---- slope
    beta = float(np.sum(e * t) / np.sum(t * t))
    resid = e - beta * t
    beta_se = float(math.sqrt(np.sum(t * t * resid * resid)) / np.sum(t * t))

    def consistent(value, se_, target, slack):
        return abs(value - target) <= z * se_ + slack

    if kind == "prod" or declared_unbiased:
        targets = [1.0]
    elif declared_unbiased is False:
        targets = [alpha]
    else:  # an mse adapter that does not say: either estimator is fine
        targets = [1.0, alpha]
    hit = [tg for tg in targets if consistent(beta, beta_se, tg, SLACK["slope"])]
    beta0 = hit[0] if hit else targets[0]
    if hit:
        verdict = PASS
        detail = "unbiased" if hit[0] == 1.0 else f"plain mse estimator: slope = α (shrinkage {alpha:.4f})"
    else:
        verdict = FAIL
        detail = (f"off by {beta - targets[0]:+.4f} = {(beta - targets[0]) / beta_se:+.1f} SE"
                  + (f" (and {(beta - alpha) / beta_se:+.1f} SE from α = {alpha:.4f})" if len(targets) > 1 else ""))
    expected = " or ".join("1" if tg == 1.0 else f"α = {tg:.4f}" for tg in targets)
    checks.append(Check("slope", verdict, beta, beta_se, expected, detail))

    # ---- self-pair bias
    mb, mb_se = _mean_se(self_rel)
    want = beta0 - 1.0
    if consistent(mb, mb_se, want, SLACK["self_bias"]):
        verdict, detail = PASS, ""
    else:
        verdict, detail = FAIL, f"{(mb - want) / mb_se:+.1f} SE from {want:+.4f}"
    checks.append(Check("self_bias", verdict, mb, mb_se, f"{want:+.4f}", detail))

    # ---- variance
    nvar = dim * (e - beta0 * t) ** 2 / (qn * sq)
    v, v_se = _mean_se(nvar)
    if kind == "prod":
        bound = math.sqrt(3) * math.pi**2 / 4**bits
        theory = math.pi / 2 * opt
        if v - z * v_se > bound:
            verdict, detail = FAIL, f"above the bound by {(v - bound) / v_se:.1f} SE"
        else:
            verdict, detail = PASS, f"{v / theory:.3f}× the theory value (π/2)·D*(b−1) = {theory:.4f}"
        expected = f"≤ √3π²/4^b = {bound:.4f}"
    else:
        verdict, detail, expected = INFO, "error variance of the (scaled) estimator, × d / (‖q‖²‖x‖²)", "-"
    checks.append(Check("variance", verdict, v, v_se, expected, detail))

    # ---- determinism
    xd = rng.standard_normal((64, dim)).astype(np.float32)
    qd = rng.standard_normal((8, dim)).astype(np.float32)
    a = impls[0]
    c1, c2 = _call("quantize", a.quantize, xd), _call("quantize", a.quantize, xd)
    r1 = _array("dequantize", _call("dequantize", a.dequantize, c1), (64, dim))
    r2 = _array("dequantize", _call("dequantize", a.dequantize, c2), (64, dim))
    i1 = _array("inner_product", _call("inner_product", a.inner_product, qd, c1), (8, 64))
    i2 = _array("inner_product", _call("inner_product", a.inner_product, qd, c2), (8, 64))
    twin = _call("factory", factory, dim, bits, 1000)
    r3 = _array("dequantize", _call("dequantize", twin.dequantize, _call("quantize", twin.quantize, xd)), (64, dim))
    halves = np.concatenate([
        _array("dequantize", _call("dequantize", a.dequantize, _call("quantize", a.quantize, xd[:32])), (32, dim)),
        _array("dequantize", _call("dequantize", a.dequantize, _call("quantize", a.quantize, xd[32:])), (32, dim))])
    problems = []
    if not (np.array_equal(r1, r2) and np.array_equal(i1, i2)):
        problems.append("two calls on the same input differ")
    if not np.array_equal(r1, r3):
        problems.append("two instances with the same seed differ")
    if problems:
        checks.append(Check("determinism", FAIL, None, None, "identical", "; ".join(problems)))
    elif not np.array_equal(r1, halves):
        diff = float(np.max(np.abs(r1 - halves)))
        scale = float(np.max(np.abs(r1))) or 1.0
        if diff <= BATCH_ROUNDING * scale:  # BLAS blocking changes with the batch size: rounding only
            checks.append(Check("determinism", PASS, None, None, "identical",
                                f"repeat and same seed identical; split batches differ by rounding only "
                                f"({diff / scale:.1e} of max|x̂|)"))
        else:
            checks.append(Check("determinism", WARN, None, None, "identical",
                                f"batch-dependent: two halves differ from one batch by up to {diff:.3g}"))
    else:
        checks.append(Check("determinism", PASS, None, None, "identical", "repeat, same seed, and split batches"))
    return AuditResult(name or getattr(factory, "__name__", "impl"), kind, dim, bits, n, instances, z, checks,
                       time.monotonic() - t0)


def format_result(res: AuditResult) -> str:
    lines = [f"audit of {res.impl} ({res.kind}, d = {res.dim}, b = {res.bits}): {res.samples} vectors over "
             f"{res.instances} seeds, z = {res.z:g}, {res.seconds:.1f} s"]
    rows = [("check", "verdict", "value", "± SE", "expected", "detail")]
    for c in res.checks:
        rows.append((c.name, c.verdict, "" if c.value is None else f"{c.value:.5f}",
                     "" if c.se is None else f"{c.se:.5f}", c.expected, c.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for k, r in enumerate(rows):
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    lines.append(f"verdict: {res.verdict}   (a correct implementation fails some statistical check with "
                 f"probability ≤ {res.false_failure_rate:.1e}; slack: " +
                 ", ".join(f"{k} {v:g}" for k, v in SLACK.items() if v) + ")")
    return "\n".join(lines)


def main(argv=None) -> int:  # pragma: no cover - thin wrapper, see tqref.commands.audit
    from ..commands.audit import run_cli

    return run_cli(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
