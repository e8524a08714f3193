"""llama.cpp profile vs the real C reference functions (tests/data/external/llamacpp-turbo).

Rows: Gaussian, ×300, all −0.0, one-hot, constant, huge (fp16 overflow, Σx² overflow), tiny
(fp16 subnormal, Σx² underflow), NaN, +inf and exact threshold ties, at L = 128 and 256.
Every block byte, every dequantized and reconstructed float (NaN payloads included) is
compared; each (row, array) pair counts as one check.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from golden_data import LLAMA_DIR, TALLY, llama_json, llama_npz, same_bits

from tqref.profiles import llamacpp

RUNTIME = "llama.cpp"
THETOM = {"v1": "thetom_turbo_v1_69d8e4be.npz", "v3": "thetom_turbo_v3_pr197.npz"}
TQ3 = "aaryan_tq3_0_e23fd448.npz"
TURBO_KINDS = ("turbo2_0", "turbo3_0", "turbo4_0")


def _check(source, ok, what):
    TALLY.check(RUNTIME, source, bool(ok), what)


def _assert_clean(source):
    bad = TALLY.failures(RUNTIME, source)
    assert not bad, f"{len(bad)} mismatches in {source}, first: {bad[:5]}"


@pytest.mark.parametrize("name", [THETOM["v1"], THETOM["v3"], TQ3])
def test_manifest_hashes(name):
    """The copied arrays are the published ones (sha256 of raw C-order bytes)."""
    manifest = llama_json("manifest.json")[name]
    data = llama_npz(name)
    for key, entry in manifest.items():
        arr = data[key]
        ok = list(arr.shape) == entry["shape"] and str(arr.dtype) == entry["dtype"]
        if entry["sha256"] is not None:
            ok = ok and hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == entry["sha256"]
        _check("manifest.json", ok, f"{name}:{key}")
    _assert_clean("manifest.json")


def test_constants_match_profile_tables():
    c = llama_json("constants.json")
    w = c["thetom_wht"]
    _check("constants.json", np.array_equal(llamacpp.TURBO_SIGNS1, w["signs1"]), "signs1")
    _check("constants.json", np.array_equal(llamacpp.TURBO_SIGNS2, w["signs2"]), "signs2")
    _check("constants.json", w["inv_sqrt_f32"].startswith("0x3db504f3"), "inv_sqrt literal")
    for version, key in (("v1", "thetom_v1_69d8e4be"), ("v3", "thetom_v3_pr197")):
        for t in ("turbo2", "turbo3", "turbo4"):
            kind = t + "_0"
            tab = c[key][t]
            thr = tab.get("thresholds", tab.get("thresholds_cpu_metal"))
            _check("constants.json", same_bits(llamacpp.centroids(kind, version), np.array(tab["centroids"], np.float32)), f"{version} {t} C")
            _check("constants.json", same_bits(llamacpp.thresholds(kind, version), np.array(thr, np.float32)), f"{version} {t} T")
            if "thresholds_cuda" in tab:
                cuda = llamacpp.thresholds(kind, version, backend="cuda")
                _check("constants.json", same_bits(cuda, np.array(tab["thresholds_cuda"], np.float32)), f"{version} {t} T cuda")
            _check("constants.json", llamacpp.block_bytes(kind, version) == c[key]["block_bytes"][kind], f"{version} {t} bytes")
    a = c["aaryan_tq3_0_e23fd448"]
    _check("constants.json", np.array_equal(llamacpp.TQ3_SIGNS, a["signs32"]), "tq3 signs")
    _check("constants.json", same_bits(llamacpp.centroids("tq3_0"), np.array(a["centroids"], np.float32)), "tq3 C")
    _check("constants.json", same_bits(llamacpp.thresholds("tq3_0"), np.array(a["boundaries"], np.float32)), "tq3 T")
    _check("constants.json", llamacpp.block_bytes("tq3_0") == a["block_bytes"], "tq3 bytes")
    _assert_clean("constants.json")


def test_thetom_signs_are_numpy_default_rng_42():
    rng = np.random.default_rng(42)
    s1 = rng.choice([-1.0, 1.0], size=128)
    s2 = rng.choice([-1.0, 1.0], size=128)
    assert np.array_equal(s1, llamacpp.TURBO_SIGNS1) and np.array_equal(s2, llamacpp.TURBO_SIGNS2)


@pytest.mark.parametrize("version", ["v1", "v3"])
@pytest.mark.parametrize("length", [128, 256])
def test_thetom_turbo(version, length):
    name = THETOM[version]
    z = llama_npz(name)
    x, labels = z[f"x_L{length}"], z[f"labels_L{length}"]
    wht = llamacpp.rotate_forward(x)
    for i, label in enumerate(labels):
        _check(name, same_bits(wht[i], z[f"wht_forward_L{length}"][i]), f"L{length} {label} wht_forward")
    for kind in TURBO_KINDS:
        blocks = llamacpp.quantize_row(x, kind, version=version)
        want = z[f"{kind}_blocks_L{length}"]
        assert blocks.shape == want.shape
        deq = llamacpp.dequantize_row(want, kind, version=version)
        recon = llamacpp.rotate_inverse(deq)
        for i, label in enumerate(labels):
            tag = f"L{length} {label} {kind}"
            _check(name, np.array_equal(blocks[i], want[i]), tag + " blocks")
            _check(name, np.array_equal(llamacpp.quantize_row(x[i], kind, version=version), want[i]), tag + " blocks (1 row)")
            _check(name, same_bits(deq[i], z[f"{kind}_deq_L{length}"][i]), tag + " deq")
            _check(name, same_bits(recon[i], z[f"{kind}_recon_L{length}"][i]), tag + " recon")
    _assert_clean(name)


@pytest.mark.parametrize("length", [128, 256])
def test_aaryan_tq3_0(length):
    z = llama_npz(TQ3)
    x, labels = z[f"x_L{length}"], z[f"labels_L{length}"]
    blocks = llamacpp.quantize_row(x, "tq3_0")
    want = z[f"tq3_0_blocks_L{length}"]
    deq = llamacpp.dequantize_row(want, "tq3_0")
    for i, label in enumerate(labels):
        tag = f"L{length} {label} tq3_0"
        _check(TQ3, np.array_equal(blocks[i], want[i]), tag + " blocks")
        _check(TQ3, same_bits(deq[i], z[f"tq3_0_deq_L{length}"][i]), tag + " deq")
    _assert_clean(TQ3)


def test_same_input_rows_in_every_file():
    for length in (128, 256):
        ref = llama_npz(TQ3)[f"x_L{length}"]
        for name in THETOM.values():
            _check("inputs", same_bits(llama_npz(name)[f"x_L{length}"], ref), f"{name} L{length}")
            _check("inputs", list(llama_npz(name)[f"labels_L{length}"]) == list(llama_npz(TQ3)[f"labels_L{length}"]), f"{name} labels")
    _assert_clean("inputs")


def test_readme_is_present():
    assert (LLAMA_DIR / "README.md").read_text().startswith("# Developer golden vectors")
