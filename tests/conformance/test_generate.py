"""The vectors are reproducible from the reference: regenerate and compare every byte."""

import difflib

import numpy as np

from tqref.conformance import generate
from tqref.reference import prng


def test_regenerating_reproduces_every_file_byte_for_byte(vectors, tmp_path):
    files = generate.write(tmp_path / "v1")
    shipped = {str(p.relative_to(vectors)) for p in vectors.rglob("*") if p.is_file()}
    assert shipped == set(files), f"file sets differ: only shipped {sorted(shipped - set(files))}, " \
                                  f"only generated {sorted(set(files) - shipped)}"
    for rel, text in files.items():
        old = (vectors / rel).read_text(encoding="utf-8")
        if old != text:
            lines = difflib.unified_diff(old.splitlines(True), text.splitlines(True), rel, "regenerated")
            diff = "".join(list(lines)[:40])
            raise AssertionError(f"{rel} drifted from the reference; regenerate with "
                                 f"`python -m tqref.conformance.generate --out conformance/v1` if intended:\n{diff}")


def test_generation_is_deterministic_in_process():
    first = generate.render()
    assert generate.render() == first


def test_data_set_stays_small(vectors):
    total = sum(p.stat().st_size for p in vectors.rglob("*") if p.is_file())
    assert total < 6_000_000, f"conformance/v1 is {total / 1e6:.1f} MB; keep it vendorable (a few MB)"


M64 = (1 << 64) - 1


def _mix(z: int) -> int:
    """SplitMix64's output function on Python ints (an independent re-derivation)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def test_stream_csv_rows_match_the_prng_definition(vectors):
    lines = (vectors / "prng_streams.csv").read_text().splitlines()
    assert lines[0] == "seed,stream,index,value"
    for line in lines[1::97]:  # a sample, re-derived independently of prng.raw_stream
        seed, stream, index, value = line.split(",")
        seed, stream, index = int(seed, 16), int(stream), int(index, 16)
        key = _mix((seed + 0x9E3779B97F4A7C15 * (stream + 1)) & M64)
        assert _mix((key + 0x9E3779B97F4A7C15 * (index + 1)) & M64) == int(value, 16)
        if index < 2**32:
            assert int(prng.raw_stream(seed, stream, 1, start=index)[0]) == int(value, 16)


def test_test_inputs_are_portable():
    x = generate.test_normal(7, 5)
    u = prng.uniform(7, prng.STREAM_TEST_DATA, 60).reshape(5, 12)
    total = u[:, 0].copy()
    for k in range(1, 12):
        total = total + u[:, k]
    assert np.array_equal(x, (total - 6.0).astype(np.float32))
