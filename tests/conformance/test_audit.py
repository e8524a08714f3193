"""`tqref audit`: flags a wrong QJL scale, passes tqref's own quantizers.

Sample sizes are small (1024 vectors, d = 64) to keep the suite fast. The data seed is fixed,
so each outcome is deterministic; over data seeds, a correct implementation would fail some
check with probability ≤ 2.2e-4 (z = 4, union bound; see tqref.conformance.audit), while the
biased implementation sits ≈ 60 standard errors off (slope 0.89 vs SE ≈ 0.0015).
"""

import argparse
import importlib.util
import math
import pathlib

import numpy as np
import pytest

import tqref
from tqref.commands import audit as audit_cmd
from tqref.conformance import audit, audit_adapters

SMALL = dict(samples=1024, instances=2, chunk=128)
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "audit"


def _example(name: str):
    """A module of examples/audit/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"_examples_audit_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: TurboQuant_prod whose QJL term is √d too small (the defect of three Python packages)
WrongQjlScale = _example("wrong_qjl_scale").WrongScale


def _verdicts(result):
    return {c.name: c.verdict for c in result.checks}


def test_wrong_qjl_scale_is_flagged():
    result = audit.audit(WrongQjlScale, 64, 3, **SMALL)
    v = _verdicts(result)
    assert result.verdict == audit.FAIL
    assert v["slope"] == v["self_bias"] == audit.FAIL
    slope = next(c for c in result.checks if c.name == "slope")
    assert 0.85 < slope.value < 0.93 and abs(slope.value - 1) > 20 * slope.se


@pytest.mark.parametrize("factory", [audit_adapters.prod, audit_adapters.prod_rademacher])
def test_tqref_prod_passes(factory):
    result = audit.audit(factory, 64, 3, **SMALL)
    assert result.verdict == audit.PASS, audit.format_result(result)


@pytest.mark.parametrize("factory, slope", [(audit_adapters.mse, "alpha"), (audit_adapters.mse_debiased, 1.0)])
def test_tqref_mse_passes_with_the_right_slope(factory, slope):
    result = audit.audit(factory, 64, 3, **SMALL)
    assert result.verdict == audit.PASS, audit.format_result(result)
    alpha = tqref.TurboQuantMSE(64, 3).shrinkage
    value = next(c for c in result.checks if c.name == "slope").value
    assert abs(value - (alpha if slope == "alpha" else 1.0)) < 0.01


def test_suboptimal_codebook_fails_the_mse_check():
    class GaussianCodebookAtLowDim(audit_adapters.TqrefAdapter):
        def __init__(self, dim, bits, seed):  # 2-bit codebook solved for d = 16 used at d = 64
            q = tqref.TurboQuantMSE(dim, bits, seed=seed)
            from tqref.reference import codebook as cb
            import dataclasses

            wrong = cb.lloyd_max(bits, 4)
            scale = math.sqrt(4 / dim)
            book = dataclasses.replace(q.plan.codebook, centroids=wrong.centroids * scale * 3,
                                       boundaries=wrong.boundaries * scale * 3)
            super().__init__(tqref.TurboQuantMSE.from_plan(q.plan.with_data(codebook=book)), "mse")

    result = audit.audit(GaussianCodebookAtLowDim, 64, 2, **SMALL)
    assert _verdicts(result)["mse"] == audit.FAIL


def test_nondeterministic_implementation_fails_determinism():
    class Noisy(audit_adapters.TqrefAdapter):
        def __init__(self, dim, bits, seed):
            super().__init__(tqref.TurboQuantMSE(dim, bits, seed=seed), "mse")
            self.rng = np.random.default_rng()

        def dequantize(self, codes):
            return super().dequantize(codes) + self.rng.normal(0, 1e-9, (len(codes), self.q.dim))

    result = audit.audit(Noisy, 32, 2, **SMALL)
    assert _verdicts(result)["determinism"] == audit.FAIL


def test_adapter_errors_are_reported_not_raised():
    class Broken(audit_adapters.TqrefAdapter):
        def __init__(self, dim, bits, seed):
            super().__init__(tqref.TurboQuantMSE(dim, bits, seed=seed), "mse")

        def inner_product(self, queries, codes):
            return np.zeros(3)

    with pytest.raises(audit.AuditError, match="inner_product: expected shape"):
        audit.audit(Broken, 32, 2, **SMALL)
    with pytest.raises(audit.AuditError, match="kind 'mse' or 'prod'"):
        audit.audit(lambda d, b, s: object(), 32, 2, **SMALL)
    with pytest.raises(audit.AuditError, match="MODULE:FACTORY"):
        audit.load_factory("no-colon")


def test_false_failure_rate_statement():
    assert audit.two_sided_rate(4.0) == pytest.approx(6.334e-5, rel=1e-3)
    result = audit.audit(audit_adapters.prod, 32, 2, **SMALL)
    assert result.false_failure_rate == pytest.approx(2 * 6.334e-5 + 3.167e-5, rel=1e-2)


def _cli(*argv):
    parser = argparse.ArgumentParser()
    audit_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["audit", *argv])
    return args.func(args)


def test_cli_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as documented: PYTHONPATH=examples/audit tqref audit …
    args = ["--dim", "64", "--bits", "3", "--samples", "512", "--instances", "2"]
    assert _cli("--impl", "tqref.conformance.audit_adapters:prod", *args, "--json", str(tmp_path / "a.json")) == 0
    assert "verdict: PASS" in capsys.readouterr().out
    assert _cli("--impl", "wrong_qjl_scale:factory", *args) == 1
    assert "slope" in capsys.readouterr().out
    assert _cli("--impl", "no_such_module_xyz:f", *args) == 2
    assert "cannot import" in capsys.readouterr().err


@pytest.mark.parametrize("package, spec_text, verdict", [
    ("turbo_quant_lite", "turbo_quant_lite_adapter:factory", audit.FAIL),  # one codebook for every d
    ("pyturboquant_cpu", "pyturboquant_cpu_adapter:prod", audit.PASS),
])
def test_example_adapters_for_installed_third_party_packages(package, spec_text, verdict, monkeypatch):
    """Smoke test of examples/audit/ (skipped where the package is not installed)."""
    pytest.importorskip(package)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    result = audit.audit(audit.load_factory(spec_text), 64, 3, **SMALL)
    assert result.verdict == verdict, audit.format_result(result)
