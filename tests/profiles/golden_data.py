"""Golden-data helpers for the runtime-profile tests (imported by conftest and the tests).

The golden vectors (tests/data/external/, copied from the shared conformance-external set)
were produced by the real turboquant-rs crate and the real llama.cpp C functions. Every
compared field (an array compared as a whole, bit for bit: bytes, f16/f32/f64 bit
patterns, NaN payloads included) counts as one check in :data:`TALLY`.
"""

from __future__ import annotations

import collections
import functools
import json
import pathlib
import platform

import numpy as np

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "external"
RS_DIR = DATA / "turboquant-rs"
LLAMA_DIR = DATA / "llamacpp-turbo"

# NaN payloads are those of x86-64 arithmetic; elsewhere compare NaN positions only.
EXACT_NAN = platform.machine().lower() in ("x86_64", "amd64")


class Tally:
    """Counts checks and mismatches per (runtime, golden file)."""

    def __init__(self):
        self.checks = collections.Counter()
        self.mismatches = collections.defaultdict(list)

    def check(self, runtime: str, source: str, ok: bool, what: str) -> bool:
        key = (runtime, source)
        self.checks[key] += 1
        if not ok:
            self.mismatches[key].append(what)
        return bool(ok)

    def failures(self, runtime: str, source: str) -> list:
        return self.mismatches.get((runtime, source), [])

    def totals(self, runtime: str) -> tuple[int, int]:
        n = sum(v for (r, _), v in self.checks.items() if r == runtime)
        m = sum(len(v) for (r, _), v in self.mismatches.items() if r == runtime)
        return n, m


TALLY = Tally()

#: Measured agreement of the candle cache layer's orders: name -> list of result dicts.
AGREEMENT = collections.defaultdict(list)


# --------------------------------------------------------------------------- decoding helpers


def f32(hexstr: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexstr), "<f4").astype(np.float32)


def f64(hexstr: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexstr), "<f8").astype(np.float64)


def same_bits(actual, expected) -> bool:
    """Bit-for-bit equality of float arrays (NaN payloads too, on x86-64)."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape or a.dtype.itemsize != e.dtype.itemsize:
        return False
    width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    if EXACT_NAN:
        return bool(np.array_equal(a.view(width), e.view(width)))
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    return bool(np.array_equal(nan_a, nan_e) and np.array_equal(a[~nan_a].view(width), e[~nan_e].view(width)))


def f16_bits(value) -> int:
    return int(np.asarray(value, dtype=np.float16).view(np.uint16))


def f32_bits(value) -> int:
    return int(np.asarray(value, dtype=np.float32).view(np.uint32))


@functools.lru_cache(maxsize=None)
def rs_json(name: str) -> dict:
    return json.loads((RS_DIR / name).read_text())


@functools.lru_cache(maxsize=1)
def rs_inputs() -> dict:
    with np.load(RS_DIR / "inputs.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@functools.lru_cache(maxsize=None)
def llama_npz(name: str) -> dict:
    with np.load(LLAMA_DIR / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@functools.lru_cache(maxsize=None)
def llama_json(name: str) -> dict:
    return json.loads((LLAMA_DIR / name).read_text())
