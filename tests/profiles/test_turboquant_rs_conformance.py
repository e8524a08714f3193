"""turboquant-rs profile vs the real crate's output (tests/data/external/turboquant-rs).

Each test walks one golden file through the public profile API and records every compared
field in the session tally (printed at the end of the run); a test fails on any mismatch.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from golden_data import TALLY, f16_bits, f32, f32_bits, f64, rs_inputs, rs_json, same_bits

from tqref.profiles import turboquant_rs as rs

RUNTIME = "turboquant-rs"


def _check(source: str, ok, what: str) -> None:
    TALLY.check(RUNTIME, source, bool(ok), what)


def _assert_clean(source: str) -> None:
    bad = TALLY.failures(RUNTIME, source)
    assert not bad, f"{len(bad)} mismatches in {source}, first: {bad[:5]}"


def test_meta_is_the_targeted_crate():
    meta = rs_json("quantize.json")["meta"]
    assert meta["version"] == rs.CRATE_VERSION
    assert meta["commit"].startswith("17da4dfe")


def test_inputs_npz_equals_inputs_json():
    vectors = rs_json("inputs.json")["vectors"]
    npz = rs_inputs()
    for v in vectors:
        _check("inputs.json", same_bits(npz[v["name"]], f32(v["f32le"])) and len(npz[v["name"]]) == v["dim"], v["name"])
    _assert_clean("inputs.json")


def test_sign_patterns():
    for c in rs_json("sign_patterns.json")["cases"]:
        signs = rs.generate_sign_pattern(c["dim"], int(c["seed"]))
        text = "".join("+" if s > 0 else "-" for s in signs)
        _check("sign_patterns.json", text == c["signs"], f"dim={c['dim']} seed={c['seed']}")
    _assert_clean("sign_patterns.json")


def test_codebooks_static_and_generated():
    """get_codebook (static tables / call-time Lloyd–Max) and generate_codebook, f64 bit for bit."""
    for c in rs_json("codebooks.json")["cases"]:
        bits, dim = c["bits"], c["dim"]
        books = {"get_codebook": rs.get_codebook(bits, dim), "generate_codebook": rs.generate_codebook(bits, dim)}
        for key, cb in books.items():
            g = c[key]
            tag = f"{key}({bits}, {dim})"
            _check("codebooks.json", same_bits(cb.centroids, f64(g["centroids_f64le"])), tag + " centroids")
            _check("codebooks.json", same_bits(cb.boundaries, f64(g["boundaries_f64le"])), tag + " boundaries")
            _check("codebooks.json", same_bits(cb.centroids_f32, f32(g["centroids_as_f32le"])), tag + " centroids_as_f32")
            _check("codebooks.json", [repr(float(v)) for v in cb.centroids] == [repr(float(s)) for s in g["centroids_dec"]], tag + " dec")
        diff_c = np.max(np.abs(books["get_codebook"].centroids - books["generate_codebook"].centroids))
        diff_b = np.max(np.abs(books["get_codebook"].boundaries - books["generate_codebook"].boundaries))
        _check("codebooks.json", diff_c == float(c["max_abs_diff_centroids_static_vs_generated"]), f"({bits},{dim}) max diff c")
        _check("codebooks.json", diff_b == float(c["max_abs_diff_boundaries_static_vs_generated"]), f"({bits},{dim}) max diff b")
    _assert_clean("codebooks.json")


def test_nearest_centroid_probes():
    for c in rs_json("nearest_centroid.json")["cases"]:
        cb = rs.get_codebook(c["bits"], c["dim"])
        values = f64(c["values_f64le"])
        got = rs.nearest_centroid(values, cb)
        _check("nearest_centroid.json", list(map(int, got)) == c["indices"], f"({c['bits']}, {c['dim']})")
        # scalar calls agree with the vectorised call (ties, ±0, ±inf, NaN with the sign bit)
        _check("nearest_centroid.json", [int(rs.nearest_centroid(v, cb.boundaries)) for v in values] == c["indices"], "scalar")
    _assert_clean("nearest_centroid.json")


def test_beta_pdf_and_ln_gamma():
    for c in rs_json("beta_pdf.json")["cases"]:
        dim = c["dim"]
        xs = np.array([float(s) for s in c["x_dec"]])
        _check("beta_pdf.json", same_bits(rs.beta_pdf(xs, dim), f64(c["pdf_f64le"])), f"pdf d={dim}")
        _check("beta_pdf.json", [rs.beta_pdf(float(x), dim) for x in xs] == list(f64(c["pdf_f64le"])), f"scalar pdf d={dim}")
        lg = [rs.ln_gamma(dim / 2), rs.ln_gamma((dim - 1) / 2)]
        _check("beta_pdf.json", lg == [float(s) for s in c["ln_gamma_half_d_and_half_dm1_dec"]], f"lnΓ d={dim}")
    _assert_clean("beta_pdf.json")


def test_packing():
    for c in rs_json("packing.json")["cases"]:
        idx = np.array(c["indices"], dtype=np.uint8)
        packed = rs.pack_indices(idx, c["bits"])
        _check("packing.json", packed.tobytes().hex() == c["packed_hex"], f"pack id={c['id']}")
        _check("packing.json", len(packed) == c["packed_len"] == rs.packed_len(c["count"], c["bits"]), f"len id={c['id']}")
        back = rs.unpack_indices(bytes.fromhex(c["packed_hex"]), c["bits"], c["count"])
        _check("packing.json", (list(map(int, back)) == c["indices"]) == c["roundtrip_ok"], f"unpack id={c['id']}")
    _assert_clean("packing.json")


def test_rotation():
    inp = rs_inputs()
    for c in rs_json("rotation.json")["cases"]:
        x = inp[c["input"]]
        signs = rs.generate_sign_pattern(c["dim"], int(c["seed"]))
        tag = f"{c['input']} seed={c['seed']}"
        fwd = rs.rotate(x, signs)
        _check("rotation.json", same_bits(rs.wht(x), f32(c["wht_f32le"])), tag + " wht")
        _check("rotation.json", same_bits(fwd, f32(c["forward_f32le"])), tag + " forward")
        _check("rotation.json", same_bits(rs.rotate(x, signs, inverse=True), f32(c["inverse_f32le"])), tag + " inverse")
        _check("rotation.json", same_bits(rs.rotate(fwd, signs, inverse=True), f32(c["forward_then_inverse_f32le"])), tag + " f∘i")
    _assert_clean("rotation.json")


def test_quantize_and_dequantize():
    """237 cases incl. zeros, one-hot, overflowing/underflowing norms, NaN, −inf, dims 2..1024."""
    inp = rs_inputs()
    src = "quantize.json"
    for c in rs_json(src)["cases"]:
        cfg = rs.TurboQuantConfig.new(c["bits"], c["dim"]).with_seed(int(c["seed"]))
        x = inp[c["input"]]
        tr = rs.trace_quantize_vec(cfg, x)
        blk = rs.quantize_vec(cfg, x)
        tag = c["id"] + " " + c["input"]
        _check(src, blk == tr.block, tag + " trace block == quantize_vec")
        _check(src, f32_bits(tr.l2_norm) == int(c["l2_norm_f32bits"], 16), tag + " l2_norm")
        _check(src, f32_bits(rs.l2_norm(x)) == int(c["l2_norm_f32bits"], 16), tag + " l2_norm()")
        _check(src, same_bits(tr.normalized, f32(c["normalized_f32le"])), tag + " normalized")
        _check(src, same_bits(tr.rotated, f32(c["rotated_f32le"])), tag + " rotated")
        _check(src, list(map(int, tr.indices)) == c["indices"], tag + " indices")
        _check(src, blk.packed_indices.hex() == c["packed_hex"], tag + " packed")
        _check(src, f16_bits(blk.scale) == int(c["scale_f16bits"], 16), tag + " scale")
        _check(src, blk.size_bytes() == c["size_bytes"], tag + " size_bytes")
        _check(src, same_bits(rs.dequantize_vec(cfg, blk), f32(c["dequantized_f32le"])), tag + " dequantized")
        _check(src, same_bits(rs.dequantize_rotated(cfg, blk), f32(c["dequantized_rotated_f32le"])), tag + " dequantized_rotated")
    _assert_clean(src)


def test_quantize_batch_matches_single_vectors():
    inp = rs_inputs()
    cfg = rs.TurboQuantConfig(3, 64, 7)
    names = [k for k in inp if k.startswith("d64_")]
    xs = np.stack([inp[k] for k in names])
    batch = rs.quantize_batch(cfg, xs)
    for name, blk in zip(names, batch):
        _check("quantize.json", blk == rs.quantize_vec(cfg, inp[name]), "batch " + name)
    deq = rs.dequantize_batch(cfg, batch)
    for name, blk, row in zip(names, batch, deq):
        _check("quantize.json", same_bits(row, rs.dequantize_vec(cfg, blk)), "dequantize_batch " + name)
    _assert_clean("quantize.json")


def test_qjl_blocks_and_estimates():
    inp = rs_inputs()
    src = "qjl.json"
    for c in rs_json(src)["cases"]:
        cfg = rs.TurboQuantConfig(c["bits_total"], c["dim"], int(c["rotation_seed"]))
        key, seed = inp[c["key"]], int(c["qjl_seed"])
        tr = rs.trace_quantize_with_qjl(cfg, key, seed)
        blk = rs.quantize_with_qjl(cfg, key, seed)
        tag = c["id"]
        _check(src, blk == tr.block, tag + " trace == quantize_with_qjl")
        _check(src, blk.polar_block.bits == c["polar_bits"], tag + " polar_bits")
        _check(src, blk.polar_block.packed_indices.hex() == c["polar_packed_hex"], tag + " polar packed")
        _check(src, list(map(int, tr.polar.indices)) == c["polar_indices"], tag + " polar indices")
        _check(src, f16_bits(blk.polar_block.scale) == int(c["polar_scale_f16bits"], 16), tag + " polar scale")
        _check(src, same_bits(tr.polar_dequantized, f32(c["polar_dequantized_f32le"])), tag + " x̂")
        _check(src, same_bits(tr.residual, f32(c["residual_f32le"])), tag + " residual")
        _check(src, f32_bits(tr.residual_norm) == int(c["residual_norm_f32bits"], 16), tag + " γ f32")
        _check(src, f16_bits(blk.residual_norm) == int(c["residual_norm_f16bits"], 16), tag + " γ f16")
        _check(src, blk.qjl_signs.hex() == c["qjl_signs_hex"], tag + " signs")
        const = rs.qjl_scaling_constant(np.float16(blk.residual_norm).astype(np.float32), c["dim"])
        _check(src, f32_bits(const) == int(c["qjl_scaling_constant_f32bits"], 16), tag + " scaling constant")
        _check(src, c["batch_path_identical"] and rs.quantize_with_qjl_batch(cfg, key[None], seed)[0] == blk, tag + " batch")
        for e in c["estimates"]:
            q = inp[e["query"]]
            rq = rs.precompute_query_projections(q, c["dim"], seed)
            est = rs.estimate_inner_product_with_projections(q, rq, blk, cfg)
            single = rs.estimate_inner_product(q, blk, cfg, seed)
            want = int(e["estimate_f32bits"], 16)
            _check(src, f32_bits(est) == want, f"{tag} estimate {e['query']}")
            _check(src, (f32_bits(single) == want) == e["single_equals"], f"{tag} single {e['query']}")
            xhat = rs.dequantize_vec(rs.TurboQuantConfig(c["polar_bits"], c["dim"], int(c["rotation_seed"])), blk.polar_block)
            base = np.add.accumulate(np.concatenate(([np.float32(-0.0)], q * xhat)), dtype=np.float32)[-1]
            _check(src, f32_bits(base) == int(e["base_dot_f32bits"], 16), f"{tag} base {e['query']}")
            true = np.add.accumulate(np.concatenate(([np.float32(-0.0)], q * key)), dtype=np.float32)[-1]
            _check(src, f32_bits(true) == int(e["true_dot_f32bits"], 16), f"{tag} true dot {e['query']}")
    _assert_clean(src)


def test_query_projections():
    inp = rs_inputs()
    for c in rs_json("qjl_query_projections.json")["cases"]:
        q = inp[c["query"]]
        p = rs.precompute_query_projections(q, len(q), int(c["qjl_seed"]))
        _check("qjl_query_projections.json", same_bits(p, f32(c["projections_f32le"])), f"{c['query']} {c['qjl_seed']}")
    _assert_clean("qjl_query_projections.json")


def test_rademacher_rows():
    for c in rs_json("rademacher.json")["cases"]:
        dim, seed = c["dim"], int(c["qjl_seed"])
        rows = np.stack([rs.generate_rademacher_row(dim, seed, j) for j in range(dim)])
        mags = np.abs(rows).view(np.uint32)
        _check("rademacher.json", bool(np.all(mags == int(c["entry_magnitude_f32bits"], 16))), f"|R| d={dim}")
        bits = np.packbits((rows > 0).reshape(-1).astype(np.uint8), bitorder="little")
        _check("rademacher.json", bits.tobytes().hex() == c["positive_bits_rowmajor_hex"], f"signs d={dim} seed={seed}")
    _assert_clean("rademacher.json")


def _kv_inputs(prefix: str, n: int):
    inp = rs_inputs()
    ks = np.stack([inp[f"{prefix}_k{i}"] for i in range(n)])
    vs = np.stack([inp[f"{prefix}_v{i}"] for i in range(n)])
    return ks, vs


def test_quantized_kv_cache_scenarios():
    inp = rs_inputs()
    src = "kv_cache.json"
    for c in rs_json(src)["cases"]:
        cfg = rs.TurboQuantConfig(c["bits_total"], c["dim"], int(c["rotation_seed"]))
        cache = rs.QuantizedKVCache(cfg, c["num_layers"], int(c["qjl_seed"]))
        n = c["num_entries_per_layer"]
        ks, vs = _kv_inputs(c["id"], n)
        for i in range(n // 2):
            cache.push(0, ks[i], vs[i])
        cache.push_batch(0, ks[n // 2 :], vs[n // 2 :])
        cache.push_batch(1, ks, vs)
        _check(src, cache.memory_usage() == c["memory_usage_bytes"], c["id"] + " memory_usage")
        _check(src, cache.fp16_equivalent_memory() == c["fp16_equivalent_memory_bytes"], c["id"] + " fp16 memory")
        for layer in c["layers"]:
            lid = layer["layer"]
            tag = f"{c['id']} layer {lid}"
            _check(src, cache.entry_count(lid) == layer["entry_count"], tag + " entry_count")
            _check(src, same_bits(cache.dequantize_all_keys(lid).reshape(-1), f32(layer["dequantized_keys_f32le"])), tag + " keys")
            _check(src, same_bits(cache.dequantize_all_values(lid).reshape(-1), f32(layer["dequantized_values_f32le"])), tag + " values")
            pk, sk = cache.export_packed_range(lid, 0, n, True)
            pv, sv = cache.export_packed_range(lid, 0, n, False)
            _check(src, pk.hex() == layer["key_packed_hex"], tag + " key packed")
            _check(src, [f"{v:04x}" for v in sk] == layer["key_scales_f16bits"], tag + " key scales")
            _check(src, pv.hex() == layer["value_packed_hex"], tag + " value packed")
            _check(src, [f"{v:04x}" for v in sv] == layer["value_scales_f16bits"], tag + " value scales")
            for i, kq in enumerate(layer["key_qjl"]):
                blk = cache.key_block(lid, i)
                _check(src, blk.qjl_signs.hex() == kq["qjl_signs_hex"], f"{tag} key {i} signs")
                _check(src, f"{f16_bits(blk.residual_norm):04x}" == kq["residual_norm_f16bits"], f"{tag} key {i} γ")
            # export -> import into a fresh cache reproduces the same key blocks and scores
            fresh = rs.QuantizedKVCache(cfg, 1, int(c["qjl_seed"]))
            keys = [cache.key_block(lid, i) for i in range(n)]
            fresh.import_packed_range(
                0, keys[0].polar_block.bits, pk, sk, b"".join(k.qjl_signs for k in keys),
                [f16_bits(k.residual_norm) for k in keys], len(pk) // n, len(keys[0].qjl_signs), True,
            )
            _check(src, all(fresh.key_block(0, i) == keys[i] for i in range(n)), tag + " import_packed_range")
            for q in layer["queries"]:
                _check(src, same_bits(fresh.attention_scores(0, inp[q["query"]]), f32(q["attention_scores_f32le"])),
                       f"{tag} imported scores {q['query']}")
                scores = cache.attention_scores(lid, inp[q["query"]])
                _check(src, same_bits(scores, f32(q["attention_scores_f32le"])), f"{tag} scores {q['query']}")
                wv = cache.weighted_values(lid, inp[q["weights"]])
                _check(src, same_bits(wv, f32(q["weighted_values_f32le"])), f"{tag} weighted {q['weights']}")
    _assert_clean(src)


_CALL = re.compile(r"^(?P<fn>\w+(?:::\w+)?)\((?P<args>.*)\)$")


def _run_error_case(call: str) -> str:
    m = _CALL.match(call)
    fn, args = m["fn"], m["args"]
    try:
        if fn == "TurboQuantConfig::new":
            bits, dim = (int(a) for a in args.split(","))
            rs.TurboQuantConfig.new(bits, dim)
        elif fn == "quantize_vec":
            bits, dim, length = (int(v) for v in re.findall(r"\d+", args))
            rs.quantize_vec(rs.TurboQuantConfig(bits, dim), np.zeros(length, np.float32))
        elif fn == "quantize_with_qjl":
            bits, dim = (int(v) for v in re.findall(r"\d+", args))
            rs.quantize_with_qjl(rs.TurboQuantConfig(bits, dim), np.zeros(dim, np.float32), 0)
        elif fn == "get_codebook":
            bits, dim = (int(a) for a in args.split(","))
            rs.get_codebook(bits, dim)
        else:  # pragma: no cover - new call kinds must be mapped here
            raise AssertionError(f"unmapped call {call}")
    except rs.TurboQuantError as err:
        assert str(err).endswith(err.crate_message) and isinstance(err, ValueError)
        return "Err: " + err.crate_message
    return "Ok"


def test_error_messages_mirror_the_crate():
    for c in rs_json("errors.json")["cases"]:
        _check("errors.json", _run_error_case(c["call"]) == c["result"], c["call"])
    _assert_clean("errors.json")


@pytest.mark.parametrize("name", ["quantize.json", "qjl.json", "kv_cache.json", "codebooks.json"])
def test_every_golden_file_carries_the_same_meta(name):
    assert rs_json(name)["meta"] == rs_json("quantize.json")["meta"]
