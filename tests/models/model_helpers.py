"""The tiny random llama used by tests/models: hyperparameters, tokenizer alphabet, weights."""

from __future__ import annotations

import numpy as np

TINY = dict(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=32, ffn=96, base=10000.0, eps=1e-5)


def byte_alphabet() -> list:
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 on."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def tiny_weights(seed: int = 0) -> dict:
    """Random weights in llama.cpp's layout: attn_q/attn_k rows permuted for interleaved RoPE."""
    rng = np.random.default_rng(seed)
    c = TINY
    tokens = byte_alphabet() + ["Ġt", "he", "<|endoftext|>"]
    vocab = len(tokens)
    d, hq, hk, hd, f = c["hidden"], c["heads"], c["kv_heads"], c["head_dim"], c["ffn"]

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    w = {"token_embd.weight": rng.standard_normal((vocab, d)).astype(np.float32),
         "output_norm.weight": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
         "output.weight": mat(vocab, d)}
    for i in range(c["layers"]):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
        w[p + "attn_q.weight"] = mat(hq * hd, d)
        w[p + "attn_k.weight"] = mat(hk * hd, d)
        w[p + "attn_v.weight"] = mat(hk * hd, d)
        w[p + "attn_output.weight"] = mat(d, hq * hd)
        w[p + "ffn_norm.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
        w[p + "ffn_gate.weight"] = mat(f, d)
        w[p + "ffn_up.weight"] = mat(f, d)
        w[p + "ffn_down.weight"] = mat(d, f)
    return {"weights": w, "tokens": tokens}
