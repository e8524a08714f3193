"""Frozen Lloyd–Max tables (package data), written only by scripts/freeze_codebooks.py.

``tqref/data/codebooks.json`` stores, for each (law, bits, dim), the positive half of the
centroids and the distortion as exact float64 hex strings (``float.hex``). The "gaussian"
law is stored once per bit width for N(0, 1) (``dim`` 1 in the file) and scaled by
``1 / sqrt(dim)`` (one correctly rounded float64 division) on lookup.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources

import numpy as np

TABLE_FILE = "codebooks.json"
FORMAT_VERSION = 1
#: The solver (codebook.solve) reproduces every frozen entry within this relative difference,
#: on any CPU (measured: 3.6e-13 for centroids, at b = 8, d = 3072; the tables were solved with
#: NumPy's Gauss–Legendre weights, accurate to 7e-13, the portable solver derives its own to
#: 1e-14). The frozen values themselves are normative, bit for bit.
SOLVER_RTOL = 1e-12
#: The same for the distortion D = 1 − d Σ p c², whose cancellation at high bit widths
#: amplifies the centroids' differences (measured: 5.9e-11 at b = 8, d = 4096).
DISTORTION_RTOL = 1e-9


@functools.lru_cache(maxsize=1)
def _load() -> dict:
    try:
        text = resources.files("tqref.data").joinpath(TABLE_FILE).read_text()
    except FileNotFoundError:
        return {}
    data = json.loads(text)
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"{TABLE_FILE}: expected format {FORMAT_VERSION}, got {data.get('format')!r}")
    table = {}
    for entry in data["entries"]:
        half = np.array([float.fromhex(h) for h in entry["half"]], dtype=np.float64)
        table[(entry["law"], entry["bits"], entry["dim"])] = (half, float.fromhex(entry["distortion"]))
    return table


def lookup(bits: int, dim: int, law: str):
    """(positive-half centroids float64, distortion) for a frozen entry, or None."""
    table = _load()
    if law == "gaussian":
        hit = table.get(("gaussian", bits, 1))
        if hit is None:
            return None
        return hit[0] / math.sqrt(dim), hit[1]
    return table.get((law, bits, dim))
