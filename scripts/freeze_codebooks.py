"""Write tqref/data/codebooks.json: frozen Lloyd–Max tables for common (bits, dim).

The tables are the solver's output (tqref.reference.codebook.solve), stored as exact float64
hex strings so every port reads identical values. Run from the repository root:

    python scripts/freeze_codebooks.py            # rewrite the package data
    python scripts/freeze_codebooks.py --check    # exit 1 if the file would change
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from tqref.reference import codebook as cb
from tqref.reference.codebook_tables import FORMAT_VERSION

#: head dims and embedding dims in common use
FROZEN_DIMS = (16, 32, 64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
FROZEN_BITS = tuple(range(cb.MIN_BITS, cb.MAX_BITS + 1))
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "tqref" / "data" / "codebooks.json"


def entry(law: str, bits: int, dim: int, book: cb.Codebook) -> dict:
    half = book.centroids[len(book.centroids) // 2 :]
    if law == "gaussian":  # stored for N(0, 1): undo the 1/sqrt(dim) scaling exactly
        half = cb._gaussian_half(bits)
    return {
        "law": law,
        "bits": bits,
        "dim": dim,
        "half": [float(c).hex() for c in half],
        "half_decimal": [repr(float(c)) for c in half],
        "distortion": float(book.distortion).hex(),
    }


def build() -> str:
    entries = [entry("gaussian", b, 1, cb.solve(b, 2, "gaussian")) for b in FROZEN_BITS]
    for dim in FROZEN_DIMS:
        for bits in FROZEN_BITS:
            entries.append(entry("beta", bits, dim, cb.solve(bits, dim, "beta")))
    doc = {
        "format": FORMAT_VERSION,
        "comment": "Lloyd-Max codebooks, positive half on the unit-vector scale (gaussian: N(0,1) scale, "
        "divide by sqrt(dim)); written by scripts/freeze_codebooks.py",
        "entries": entries,
    }
    return json.dumps(doc, indent=1) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        same = args.output.exists() and args.output.read_text() == text
        print("codebooks.json is up to date" if same else "codebooks.json differs from the solver output")
        return 0 if same else 1
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
