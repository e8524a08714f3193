"""Write tqref/data/codebooks.json: frozen Lloyd–Max tables for common (bits, dim).

The tables are the solver's output (tqref.reference.codebook.solve), stored as exact float64
hex strings so every port reads identical values. Once shipped, an entry is normative data and
never changes: writing keeps every existing entry byte for byte and adds only the missing
(bits, dim) pairs. The shipped entries were solved with an earlier quadrature (NumPy's
``leggauss`` weights, accurate to 7e-13) and libm; today's portable solver reproduces them
within ``codebook_tables.SOLVER_RTOL`` (docs/compatibility.md "Codebooks"). Run from the
repository root:

    python scripts/freeze_codebooks.py            # add missing entries to the package data
    python scripts/freeze_codebooks.py --check    # exit 1 unless the file is complete and every
                                                  # entry agrees with the solver within tolerance
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from tqref.reference import codebook as cb
from tqref.reference.codebook_tables import DISTORTION_RTOL, FORMAT_VERSION, SOLVER_RTOL

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


def wanted() -> list:
    """(law, bits, dim) of every entry the file must hold, in file order."""
    return [("gaussian", b, 1) for b in FROZEN_BITS] + [("beta", b, d) for d in FROZEN_DIMS for b in FROZEN_BITS]


def solved(law: str, bits: int, dim: int) -> dict:
    return entry(law, bits, dim, cb.solve(bits, 2 if law == "gaussian" else dim, law))


def build(existing: list) -> str:
    """The file text: ``existing`` entries kept as they are, missing ones solved now."""
    have = {(e["law"], e["bits"], e["dim"]): e for e in existing}
    entries = [have.get(key) or solved(*key) for key in wanted()]
    doc = {
        "format": FORMAT_VERSION,
        "comment": "Lloyd-Max codebooks, positive half on the unit-vector scale (gaussian: N(0,1) scale, "
        "divide by sqrt(dim)); written by scripts/freeze_codebooks.py",
        "entries": entries,
    }
    return json.dumps(doc, indent=1) + "\n"


def disagreements(existing: list) -> list:
    """Entries whose half or distortion differ from a fresh solve by more than the stated
    relative tolerances (SOLVER_RTOL, DISTORTION_RTOL)."""
    bad = []
    for e in existing:
        fresh = solved(e["law"], e["bits"], e["dim"])
        for field, tol in (("half", SOLVER_RTOL), ("distortion", DISTORTION_RTOL)):
            old = [float.fromhex(h) for h in (e[field] if field == "half" else [e[field]])]
            new = [float.fromhex(h) for h in (fresh[field] if field == "half" else [fresh[field]])]
            err = max(abs(a - b) / abs(b) for a, b in zip(old, new))
            if err > tol:
                bad.append(f"{e['law']} b={e['bits']} d={e['dim']} {field}: relative difference {err:.2e}")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    args = parser.parse_args(argv)
    existing = json.loads(args.output.read_text())["entries"] if args.output.exists() else []
    text = build(existing)
    if args.check:
        problems = disagreements(existing)
        if args.output.read_text() != text:
            problems.append("entries are missing or out of order: run scripts/freeze_codebooks.py")
        print("\n".join(problems) or "codebooks.json is complete; every entry agrees with the solver within "
              f"{SOLVER_RTOL:g} (centroids) and {DISTORTION_RTOL:g} (distortion)")
        return 1 if problems else 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
