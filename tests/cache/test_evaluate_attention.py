"""The attention-fidelity engine (tqref/evaluation/attention_fidelity.py) and the
``tqref evaluate-attention`` command."""

from __future__ import annotations

import argparse
import builtins
import json
import math

import numpy as np
import pytest

from tqref.commands import evaluate_attention as command
from tqref.evaluation import attention_fidelity as af
from tqref.cache import KVCache

TINY = af.Settings(contexts=(96,), bits=(2,), head_dim=32, num_queries=8, num_kv_heads=1)


def _parser():
    parser = argparse.ArgumentParser(prog="tqref")
    command.register(parser.add_subparsers(dest="command"))
    return parser


def test_rope_is_orthogonal_and_relative():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 1, 16))
    pos = np.array([5.0])
    np.testing.assert_allclose(np.linalg.norm(af.rope(x, pos)), np.linalg.norm(x))
    # ⟨R_p x, R_t y⟩ depends only on t − p
    a = af.rope(x, np.array([3.0])) @ af.rope(y, np.array([10.0])).T
    b = af.rope(x, np.array([13.0])) @ af.rope(y, np.array([20.0])).T
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_scenario_shapes_and_structure():
    s = af.Settings(head_dim=32, num_queries=5, num_kv_heads=2, group_size=4)
    sc = af.make_scenario(50, s)
    assert sc.k.shape == (1, 2, 50, 32) and sc.v.shape == (1, 2, 50, 32) and sc.q.shape == (1, 8, 5, 32)
    assert sc.k.dtype == sc.v.dtype == sc.q.dtype == np.float32
    # values are heavy-tailed: excess kurtosis well above a Gaussian's 0
    centred = sc.v - sc.v.mean(axis=2, keepdims=True)
    kurt = np.mean(centred**4) / np.mean(centred**2) ** 2 - 3
    assert kurt > 1.0
    assert np.array_equal(af.make_scenario(50, s).k, sc.k)  # deterministic


def test_exact_attention_is_causal_softmax():
    s = af.Settings(head_dim=16, num_queries=3, num_kv_heads=1, group_size=2)
    sc = af.make_scenario(10, s)
    ex = af.exact_attention(sc, 0.25)
    np.testing.assert_allclose(ex.w.sum(axis=-1), 1.0)
    assert np.all(ex.w[0, :, 0, 8:] == 0) and np.all(ex.w[0, :, 1, 9:] == 0) and np.all(ex.w[0, :, 2] > 0)


def test_metrics_vanish_for_a_near_exact_cache():
    s = af.Settings(head_dim=32, num_queries=8, num_kv_heads=1, group_size=4)
    sc = af.make_scenario(64, s)
    scale = 1 / math.sqrt(32)
    ex = af.exact_attention(sc, scale)
    cache = KVCache(1, 1, 32, key_bits=8, value_bits=8)
    cache.append(0, sc.k, sc.v)
    m = af.evaluate_cache(cache, sc, ex, scale)
    assert m["rel_err"].mean() < 0.02 and m["kl"].mean() < 1e-3 and m["top1"].mean() > 0.9
    assert np.all(m["kl"] > -1e-9) and np.all((0 <= m["top8"]) & (m["top8"] <= 1))


def test_run_rows_and_tables():
    rows = af.run(TINY)
    assert [(r["variant"], r["key_bits"]) for r in rows] == [(v, 2) for v in af.VARIANTS]
    for r in rows:
        assert set(af.METRICS) <= set(r) and 0 <= r["top1"] <= 1 and r["kl"] >= 0
        # d = 32: a float32 norm (or γ) costs 1 bit per coordinate; prod stores two of them
        assert r["key_bpc"] == (3.0 if r["variant"].startswith("mse") else 4.0) and r["value_bpc"] == 3.0
    # debiasing is a uniform rescale: same ranking, so top-1/top-8 are identical
    assert rows[0]["top1"] == rows[1]["top1"] and rows[0]["top8"] == rows[1]["top8"]
    table = af.format_table(rows)
    assert table.count("\n| 96 |") == 4 and "Exact attention (32 rows per context)" in table
    assert "| 96 | 2 | prod-gaussian |" in af.format_paired(rows)
    assert "KL β=0 " in af.format_regimes(rows, TINY)
    assert "_rows" not in json.dumps(af.public(rows))


def test_alignment_study_shows_the_mse_shrinkage():
    rows = af.alignment_study(bits=(3,), dim=32, vectors=300)
    by = {r["variant"]: r for r in rows}
    assert by["mse"]["aligned_bias"] < -0.02  # −(1 − α) ≈ −0.035 at 3 bits
    assert abs(by["mse-debiased"]["aligned_bias"]) < 0.01
    assert by["prod-gaussian"]["random_sd"] > by["mse"]["random_sd"]


@pytest.mark.parametrize("bad, pattern", [
    (dict(contexts=(0,)), "contexts"), (dict(bits=(1,)), "bits"), (dict(bits=()), "bits"),
    (dict(value_bits=9), "value_bits"), (dict(variants=("fast",)), "variants"), (dict(outliers=99), "outliers"),
    (dict(num_queries=0), "num_queries"),
])
def test_settings_are_checked_before_work(bad, pattern):
    import dataclasses

    with pytest.raises(ValueError, match=pattern):
        af.run(dataclasses.replace(TINY, **bad))


def test_command_small_run_with_json(tmp_path, capsys):
    out_json = tmp_path / "rows.json"
    args = _parser().parse_args([
        "evaluate-attention", "--contexts", "64", "--bits", "2", "3", "--head-dim", "32", "--queries", "4",
        "--kv-heads", "1", "--variants", "mse", "prod-orthogonal", "--by-regime", "--json", str(out_json)])
    assert args.func(args) == 0
    text = capsys.readouterr()
    assert "| 64 | mse | 2/2 |" in text.out and "Paired differences" in text.out and "aligned" in text.out
    assert "evaluate-attention [" in text.err  # the progress bar
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == 4 and data["settings"]["head_dim"] == 32 and data["alignment"]


def test_command_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")  # optional dependency (tqref[plot])
    out_png = tmp_path / "fig.png"
    args = _parser().parse_args([
        "evaluate-attention", "--contexts", "48", "--bits", "2", "--head-dim", "16", "--queries", "2",
        "--kv-heads", "1", "--no-alignment", "--quiet", "--plot", str(out_png)])
    assert args.func(args) == 0
    assert f"plot written to {out_png}" in capsys.readouterr().out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_quick_settings():
    args = _parser().parse_args(["evaluate-attention", "--quick", "--quiet"])
    s = command.settings_from(args)
    assert s.contexts == (256, 1024) and s.bits == (2, 3) and s.head_dim == 64


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    args = _parser().parse_args(["evaluate-attention", "--quick", "--plot", str(tmp_path / "x.png")])
    assert args.func(args) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="needs matplotlib"):
        af.plot([{"context": 1, "variant": "mse", "key_bits": 2}], str(tmp_path / "y.png"))


def test_command_rejects_bad_settings(capsys):
    args = _parser().parse_args(["evaluate-attention", "--contexts", "0", "--quiet"])
    assert args.func(args) == 2
    assert "contexts" in capsys.readouterr().err
