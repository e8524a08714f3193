"""The GGUF's byte-level BPE tokenizer, built with the ``tokenizers`` library.

A ``tokenizer.ggml.model = "gpt2"`` file carries the vocabulary (``tokenizer.ggml.tokens``,
byte-level strings: byte b is the printable character of GPT-2's byte-to-unicode table), the
merge rules in priority order (``tokenizer.ggml.merges``, "left right") and the token types
(3 = control: special tokens that are never produced by merges).

Pre-tokenization (``tokenizer.ggml.pre``) splits the text before BPE; merges never cross a
split. llama.cpp's rule for ``"smollm"`` (the same as for "starcoder"), applied in order,
each regex splitting every piece left by the previous one, matched and unmatched runs both
kept as pieces:

1. ``\\p{N}`` — every digit is a piece of its own;
2. ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)`` — GPT-2's
   rule: English contractions, an optional space followed by letters, by digits, or by other
   symbols, and runs of whitespace that leave the last space to the next word.

then every piece is mapped byte by byte to the byte-level alphabet (no prefix space: the
file says ``add_space_prefix = False``) and BPE-merged. The "gpt2" rule is step 2 alone.
No BOS token is added (``add_bos_token = False`` in SmolLM2's file); :meth:`Tokenizer.encode`
adds it when the file asks for it.
"""

from __future__ import annotations

#: llama.cpp's pre-tokenizer regexes by ``tokenizer.ggml.pre`` name, applied in order
GPT2_RULE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
PRE_TOKENIZERS = {
    "gpt2": (GPT2_RULE,),
    "smollm": (r"\p{N}", GPT2_RULE),
    "starcoder": (r"\p{N}", GPT2_RULE),
}
CONTROL = 3  # tokenizer.ggml.token_type of special tokens


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError as exc:
        raise ImportError("tqref.models needs the 'tokenizers' package (pip install 'tqref[model]')") from exc
    return tokenizers


class Tokenizer:
    """encode(text) -> list of ids; decode(ids) -> text. Built from a ``gguf.GGUFReader``."""

    def __init__(self, tokens, merges, token_types=None, *, pre="gpt2", bos_id=None, add_bos=False, eos_id=None):
        tk = _require_tokenizers()
        if pre not in PRE_TOKENIZERS:
            raise ValueError(f"tokenizer.ggml.pre: expected one of {tuple(PRE_TOKENIZERS)}, got {pre!r}")
        vocab = {tok: i for i, tok in enumerate(tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        model = tk.models.BPE(vocab=vocab, merges=pairs, fuse_unk=False)
        tok = tk.Tokenizer(model)
        splits = [tk.pre_tokenizers.Split(tk.Regex(rule), behavior="isolated") for rule in PRE_TOKENIZERS[pre]]
        tok.pre_tokenizer = tk.pre_tokenizers.Sequence(
            splits + [tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = tk.decoders.ByteLevel()
        if token_types is not None:
            special = [tk.AddedToken(tokens[i], special=True, normalized=False)
                       for i, t in enumerate(token_types) if int(t) == CONTROL]
            tok.add_special_tokens(special)
        self._tok = tok
        self.pre = pre
        self.vocab_size = len(tokens)
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, bool(add_bos)

    @classmethod
    def from_reader(cls, reader) -> "Tokenizer":
        f = reader.fields

        def get(key, default=None):
            return f[key].contents() if key in f else default

        model = get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"tokenizer.ggml.model: expected 'gpt2' (byte-level BPE), got {model!r}")
        return cls(get("tokenizer.ggml.tokens"), get("tokenizer.ggml.merges"), get("tokenizer.ggml.token_type"),
                   pre=get("tokenizer.ggml.pre", "gpt2"), bos_id=get("tokenizer.ggml.bos_token_id"),
                   add_bos=get("tokenizer.ggml.add_bos_token", False), eos_id=get("tokenizer.ggml.eos_token_id"))

    def encode(self, text: str) -> list:
        """Token ids of ``text`` (special-token strings in the text are matched as such)."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if self.add_bos and self.bos_id is not None else []) + list(ids)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def pieces(self, text: str) -> list:
        """The pre-tokenizer's pieces of ``text`` (byte-level strings), for inspection."""
        return [p for p, _ in self._tok.pre_tokenizer.pre_tokenize_str(text)]
