"""The vectors are reproducible from the reference: regenerate and compare each value by its tier."""

import json

import numpy as np

from tqref.conformance import drift, encoding, generate
from tqref.reference import prng


def test_regenerating_reproduces_every_file_within_its_tier(vectors, tmp_path):
    """Exact-tier values bit for bit, tolerance-tier values within their stated tolerance
    (drift.py): the same verdict on every CPU, whatever its libm and BLAS."""
    files = generate.write(tmp_path / "v1")
    problems = drift.differences(vectors, files)
    assert not problems, ("the generator drifted from the shipped vectors; regenerate with "
                          "`python -m tqref.conformance.generate --out conformance/v1` if intended:\n"
                          + "\n".join(problems[:40]))


def test_drift_catches_exact_and_tolerance_violations(vectors):
    files = generate.render()
    assert drift.differences(vectors, files) == []
    doc = json.loads(files["mse_hadamard_test.json"])
    test = doc["testGroups"][0]["tests"][0]
    packed = bytearray.fromhex(test["packed"]["hex"])
    packed[0] ^= 1  # one code bit: exact tier
    test["packed"]["hex"] = packed.hex()
    name = next(iter(test["tolerance"]))  # a tolerance-tier output, moved by 3x its tolerance
    values = encoding.decode(test[name]).astype(np.float64) + 3 * test["tolerance"][name]
    test[name] = encoding.tensor(values.astype(encoding.decode(test[name]).dtype), test[name]["dtype"])
    problems = drift.differences(vectors, {**files, "mse_hadamard_test.json": json.dumps(doc)})
    assert any("packed: exact-tier value changed" in p for p in problems), problems
    assert any(f"{name}: differs by" in p for p in problems), problems
    csv = dict(files)
    csv["prng_streams.csv"] = files["prng_streams.csv"].replace("1", "2", 1)
    assert drift.differences(vectors, csv) == ["prng_streams.csv: changed (exact tier: every byte)"]


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
