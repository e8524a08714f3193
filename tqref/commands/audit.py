"""``tqref audit --impl MODULE:FACTORY``: statistical audit of any TurboQuant implementation.

    tqref audit --impl tqref.conformance.audit_adapters:prod --dim 128 --bits 3
    PYTHONPATH=examples/audit tqref audit --impl wrong_qjl_scale:factory

FACTORY(dim, bits, seed) returns an adapter (kind, quantize, dequantize, inner_product); see
tqref.conformance.audit for the checks, their decision rule and the false-failure rate.
Exit codes: 0 no check failed (warnings allowed), 1 a check failed, 2 the implementation
could not be audited (import error, wrong shapes, exceptions — the message says which).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="statistical audit of an implementation (bias, MSE, variance)",
                                   description=__doc__.split("\n\n")[0].replace("``", ""))
    add_arguments(parser)
    parser.set_defaults(func=cmd_audit)


def add_arguments(parser) -> None:
    parser.add_argument("--impl", required=True, metavar="MODULE:FACTORY",
                        help="factory(dim, bits, seed) returning the adapter (module importable from PYTHONPATH "
                             "or the current directory)")
    parser.add_argument("--dim", type=int, default=128, help="dimension d (default 128)")
    parser.add_argument("--bits", type=int, default=3, help="bits per coordinate b (default 3)")
    parser.add_argument("--samples", type=int, default=4096, help="vectors in total (default 4096)")
    parser.add_argument("--instances", type=int, default=4,
                        help="implementation seeds the samples are split among (default 4)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the test data (default 0)")
    parser.add_argument("--z", type=float, default=4.0,
                        help="z threshold of the statistical checks (default 4: false-failure rate ≤ 2.2e-4)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")


def cmd_audit(args) -> int:
    import os

    from ..conformance import audit

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.dim < 2 or args.bits < 1 or args.samples < 256 or args.instances < 1:
        print("tqref audit: expected --dim >= 2, --bits >= 1, --samples >= 256, --instances >= 1", file=sys.stderr)
        return 2
    try:
        factory = audit.load_factory(args.impl)
        result = audit.audit(factory, args.dim, args.bits, samples=args.samples, instances=args.instances,
                             data_seed=args.data_seed, z=args.z, name=args.impl)
    except audit.AuditError as exc:
        print(f"tqref audit: {exc}", file=sys.stderr)
        return 2
    print(audit.format_result(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=1, ensure_ascii=False)
            fh.write("\n")
    return 1 if result.verdict == audit.FAIL else 0


def run_cli(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tqref.conformance.audit",
                                     description=__doc__.split("\n\n")[0].replace("``", ""))
    add_arguments(parser)
    return cmd_audit(parser.parse_args(argv))
