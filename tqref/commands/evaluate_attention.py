"""``tqref evaluate-attention``: fidelity of attention over a compressed KV cache.

For each cache variant (mse, mse debiased, prod with Gaussian or orthogonal QJL projection),
key bit width and context length, synthetic LLM-like keys, values and queries (outlier
channels, RoPE, heavy-tailed values, peaked and diffuse heads) go through ``tqref.KVCache``
and through exact attention; the table gives the output's relative error, the KL divergence
of the attention weights, top-1 and top-8 agreement, and the keys' and values' shares of the
error beside what the value codebook's distortion predicts. docs/kv-cache.md explains the
columns and the findings. The engine is tqref/evaluation/attention_fidelity.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from ..evaluation import attention_fidelity as af
from ..reference.plan import MSE_BITS

QUICK = dict(contexts=(256, 1024), bits=(2, 3), head_dim=64, num_queries=16)


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate-attention", help="fidelity of attention over a compressed KV cache",
                              description=__doc__.split("\n\n")[1])
    d = af.Settings()
    p.add_argument("--contexts", type=int, nargs="+", metavar="T", default=list(d.contexts),
                   help=f"context lengths (default {' '.join(map(str, d.contexts))})")
    p.add_argument("--bits", type=int, nargs="+", metavar="B", choices=range(2, 9), default=list(d.bits),
                   help="key bits per coordinate, 2..8 (default 2 3 4)")
    p.add_argument("--value-bits", type=int, choices=range(MSE_BITS[0], MSE_BITS[1] + 1), metavar="B", default=None,
                   help="value bits (default: the key bits of each row)")
    p.add_argument("--variants", nargs="+", choices=tuple(af.VARIANTS), default=list(d.variants),
                   help="cache variants (default: all)")
    p.add_argument("--debiased-values", action="store_true", help="divide value reconstructions by α_v")
    p.add_argument("--head-dim", type=int, default=d.head_dim)
    p.add_argument("--kv-heads", type=int, default=d.num_kv_heads)
    p.add_argument("--group-size", type=int, default=d.group_size, help="attention heads per kv head")
    p.add_argument("--queries", type=int, default=d.num_queries, help="query positions at the end of the context")
    p.add_argument("--outliers", type=int, default=d.outliers, help="outlier key channels")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data and of the cache")
    p.add_argument("--rotation", choices=("hadamard", "haar"), default=d.rotation)
    p.add_argument("--backend", default=d.backend, help="reference | numba | cuda | auto")
    p.add_argument("--quick", action="store_true",
                   help="small run for tests: contexts 256 1024, bits 2 3, head_dim 64, 16 queries")
    p.add_argument("--plot", metavar="FILE.png", help="plot the metrics against bits (needs matplotlib)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--by-regime", action="store_true",
                   help="also print KL and top-1 by retrieval strength (diffuse to peaked heads)")
    p.add_argument("--no-alignment", action="store_true",
                   help="skip the random-vs-aligned query estimator study")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings_from(args) -> af.Settings:
    s = af.Settings(contexts=tuple(args.contexts), bits=tuple(args.bits), variants=tuple(args.variants),
                    value_bits=args.value_bits, debiased_values=args.debiased_values, head_dim=args.head_dim,
                    num_kv_heads=args.kv_heads, group_size=args.group_size, num_queries=args.queries,
                    outliers=args.outliers, seed=args.seed, rotation=args.rotation, backend=args.backend)
    if args.quick:
        s = dataclasses.replace(s, **QUICK)
    return s


def run(args) -> int:
    from .._progress import progress

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("tqref evaluate-attention: --plot needs matplotlib, which is not installed "
                  "(pip install 'tqref[plot]')", file=sys.stderr)
            return 2
    try:
        s = settings_from(args)
        af.check_settings(s)
    except ValueError as exc:
        print(f"tqref evaluate-attention: {exc}", file=sys.stderr)
        return 2
    rows = af.run(s, progress=lambda items: progress(items, "evaluate-attention", enabled=not args.quiet))
    print(af.format_table(rows))
    if "mse" in s.variants and len(s.variants) > 1:
        print("\nPaired differences (same rows; ± one standard error):\n")
        print(af.format_paired(rows))
    if args.by_regime:
        print("\nBy retrieval strength β of the query (β = 0: diffuse heads; β = 1: peaked heads):\n")
        print(af.format_regimes(rows, s))
    alignment = []
    if not args.no_alignment:
        alignment = af.alignment_study(bits=s.bits, dim=s.head_dim, vectors=1000 if args.quick else 4000,
                                       seed=s.seed, rotation=s.rotation)
        print("\nInner-product error for random vs aligned (query = key) unit vectors:\n")
        print(af.format_alignment(alignment))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": dataclasses.asdict(s), "rows": af.public(rows), "alignment": alignment},
                      f, indent=1)
    if args.plot:
        af.plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0
