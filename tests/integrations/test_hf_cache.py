"""TurboQuantCache (tqref.integrations.transformers) on a tiny random llama, no real model needed.

Exactness claims checked here:
* a layer returns exactly tqref.KVCache's dequantization (bitwise, float32), in any chunking;
* mse mode: the model's attention over the returned K/V equals KVCache.attend from the
  codes (float32 summation order only: 1e-5);
* prod mode: q·K̃ᵀ equals the mse score plus KVCache.logit_bias (same tolerance);
* sinks/window hold the exact input; the middle is the codes of exactly those positions;
* generate() (prefill + token-by-token decode) gives the logits of one causal pass over the
  same tokens with a fresh cache (every key quantized in both: 1e-4 on logits of size ~1).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the hf extra is not installed (pip install \"tqref[hf]\")")
pytest.importorskip("transformers", reason="the hf extra is not installed (pip install \"tqref[hf]\")")

import tqref  # noqa: E402
from tqref.integrations import transformers as tq_hf  # noqa: E402
from tqref.reference import attention  # noqa: E402
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402

import reference64  # noqa: E402

H, D = 2, 16
TINY = dict(vocab_size=61, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=H, max_position_embeddings=64)


def states(b=2, t=7, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    k = (scale * rng.standard_normal((b, H, t, D))).astype(np.float32)
    v = rng.standard_normal((b, H, t, D)).astype(np.float32)
    return k, v


def feed(layer, k, v, chunks):
    """Update ``layer`` with consecutive chunks of the given sizes; the last (K, V) as NumPy."""
    pos = 0
    for n in chunks:
        out = layer.update(torch.from_numpy(k[:, :, pos:pos + n]), torch.from_numpy(v[:, :, pos:pos + n]))
        pos += n
    return out[0].numpy(), out[1].numpy()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY)).eval()


# ----------------------------------------------------------------------------- one layer


@pytest.mark.parametrize("options", [dict(key_bits=3, value_bits=2), dict(key_bits=4, value_bits=3, debiased=True,
                                                                          debiased_values=True, norm_dtype="float16")])
def test_layer_returns_kvcache_dequantization_in_any_chunking(options):
    k, v = states()
    ref = tqref.KVCache(1, H, D, **options)
    ref.append(0, k, v)
    want_k, want_v = ref.dequantize(0)
    for chunks in ([7], [4, 1, 2], [1] * 7):
        layer = tq_hf.TurboQuantLayer(H, D, **options)
        got_k, got_v = feed(layer, k, v, chunks)
        np.testing.assert_array_equal(got_k, want_k)
        np.testing.assert_array_equal(got_v, want_v)
        assert layer.get_seq_length() == 7 and layer.memory_usage() == ref.memory_usage()


def _attention(q, k, v):
    """softmax(q kᵀ/√d) v with GQA and the causal rule of KVCache.attend, float64."""
    visible = attention.visible_mask(q.shape[2], k.shape[2], causal=True)
    return reference64.dense_attention(q, k, v, scale=1.0 / np.sqrt(q.shape[-1]), visible=visible)[0]


def test_mse_attention_over_returned_kv_equals_attend_from_codes():
    k, v = states()
    q = np.random.default_rng(5).standard_normal((2, 2 * H, 3, D)).astype(np.float32)
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=3, value_bits=3)
    got_k, got_v = feed(layer, k, v, [5, 2])
    ref = tqref.KVCache(1, H, D, key_bits=3, value_bits=3)
    ref.append(0, k, v)
    # attention over the returned K, V is the reference's attend from codes, within the rule
    reference64.within(_attention(q, got_k, got_v), ref.attend(0, q), reference64.cache_attention(ref, 0, q)[0],
                       "attention over the returned K, V")


def test_prod_keys_carry_the_qjl_logit_bias():
    k, v = states(scale=3.0)
    q = np.random.default_rng(6).standard_normal((2, 2 * H, 3, D)).astype(np.float32)
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=3, value_bits=2, mode="prod", projection="orthogonal")
    got_k, got_v = feed(layer, k, v, [3, 4])
    ref = tqref.KVCache(1, H, D, key_bits=3, value_bits=2, mode="prod", projection="orthogonal")
    ref.append(0, k, v)
    mse_k, want_v = ref.dequantize(0)
    np.testing.assert_array_equal(got_v, want_v)
    group = q.shape[1] // H
    scores = q @ np.repeat(got_k, group, axis=1).swapaxes(-1, -2)
    want = q @ np.repeat(mse_k, group, axis=1).swapaxes(-1, -2) + ref.logit_bias(0, q)
    # the rule at the scale ‖q‖·‖k‖; the float64 recomputation takes the logit bias as given
    want64 = q.astype(np.float64) @ np.repeat(mse_k, group, axis=1).swapaxes(-1, -2).astype(np.float64)
    want64 += ref.logit_bias(0, q)
    key_norms = np.repeat(ref.stored(0)["key_norms"].astype(np.float64), group, axis=1)  # (B, A, T)
    scale = np.linalg.norm(q.astype(np.float64), axis=-1)[..., None] * key_norms[:, :, None, :]
    reference64.within(scores, want, want64, "q · returned prod keys", scale=scale)
    reference64.within(_attention(q, got_k, got_v), ref.attend(0, q), reference64.cache_attention(ref, 0, q)[0],
                       "attention over the returned K, V")


@pytest.mark.parametrize("sinks, window", [(2, 3), (0, 4), (3, 0), (0, 20)])
def test_sinks_and_window_stay_exact_and_the_middle_is_quantized(sinks, window):
    k, v = states(t=11)
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=2, value_bits=2, sink_tokens=sinks, residual_length=window)
    got_k, got_v = feed(layer, k, v, [6, 1, 1, 3])
    middle = slice(sinks, max(11 - window, sinks))
    for got, x in ((got_k, k), (got_v, v)):
        np.testing.assert_array_equal(got[:, :, :sinks], x[:, :, :sinks])
        np.testing.assert_array_equal(got[:, :, middle.stop:], x[:, :, middle.stop:])
    n_mid = middle.stop - middle.start
    kept = 2 * 2 * H * (11 - n_mid) * D * 4  # float32 sinks + window, keys and values
    if n_mid:
        ref = tqref.KVCache(1, H, D, key_bits=2, value_bits=2)
        ref.append(0, k[:, :, middle], v[:, :, middle])
        want_k, want_v = ref.dequantize(0)
        np.testing.assert_array_equal(got_k[:, :, middle], want_k)
        np.testing.assert_array_equal(got_v[:, :, middle], want_v)
        assert layer.memory_usage() == ref.memory_usage() + kept
    else:
        assert layer.memory_usage() == kept


def test_bfloat16_states_come_back_in_bfloat16():
    k, v = states()
    kb, vb = torch.from_numpy(k).bfloat16(), torch.from_numpy(v).bfloat16()
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=4, value_bits=4)
    got_k, got_v = layer.update(kb, vb)
    assert got_k.dtype == torch.bfloat16 and got_v.dtype == torch.bfloat16
    ref = tqref.KVCache(1, H, D, key_bits=4, value_bits=4)
    ref.append(0, kb.float().numpy(), vb.float().numpy())  # bfloat16 -> float32 is exact
    np.testing.assert_array_equal(got_k.float().numpy(), torch.from_numpy(ref.dequantize(0)[0]).bfloat16().float())


def test_layer_validates_states_at_the_edge():
    k, v = states()
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=4, value_bits=4)
    with pytest.raises(ValueError, match=r"key_states: expected shape \(batch, 2, seq, 16\), got \(2, 3, 7, 16\)"):
        layer.update(torch.zeros(2, 3, 7, D), torch.zeros(2, 3, 7, D))
    with pytest.raises(ValueError, match="value_states: expected the shape of key_states"):
        layer.update(torch.from_numpy(k), torch.from_numpy(v[:, :, :3]))
    layer.update(torch.from_numpy(k), torch.from_numpy(v))
    with pytest.raises(ValueError, match="key_states: expected batch 2 .* got 1"):
        layer.update(torch.from_numpy(k[:1]), torch.from_numpy(v[:1]))
    with pytest.raises(ValueError, match="residual_length: expected an integer >= 0, got -1"):
        tq_hf.TurboQuantLayer(H, D, key_bits=4, value_bits=4, residual_length=-1)


def test_filled_layer_refuses_reordering_and_reset_empties_it():
    k, v = states()
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=4, value_bits=4)
    layer.reorder_cache(torch.tensor([1, 0]))  # empty: nothing to reorder
    layer.update(torch.from_numpy(k), torch.from_numpy(v))
    with pytest.raises(NotImplementedError, match="reorder_cache: a TurboQuantLayer cannot reorder"):
        layer.reorder_cache(torch.tensor([1, 0]))
    with pytest.raises(NotImplementedError, match="crop"):
        layer.crop(-2)
    layer.reset()
    assert layer.get_seq_length() == 0 and layer.memory_usage() == 0
    got_k, _ = layer.update(torch.from_numpy(k[:1]), torch.from_numpy(v[:1]))  # a new batch size is fine now
    assert got_k.shape == (1, H, 7, D)


def test_device_path_codes_match_the_host_codes_in_the_cuda_simulator():
    """backend="cuda": the device store (torch tensors of codes from the cuda device functions).

    Without a GPU this runs in Numba's CUDA simulator (tests/conftest.py), where the device
    store holds CPU tensors; on a GPU machine the CUDA-tensor test below covers it.
    """
    cuda_backend = pytest.importorskip("tqref.backends.cuda", reason="numba-cuda is not installed")
    if not cuda_backend.SIMULATOR:
        pytest.skip("a real GPU is present: test_cuda_tensors_stay_on_the_gpu covers the device path")
    k, v = states(b=1, t=2)  # the simulator runs every GPU thread in Python: keep it tiny
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=3, value_bits=2, mode="prod", backend="cuda")
    got_k, got_v = feed(layer, k, v, [1, 1])
    assert type(layer._store).__name__ == "_DeviceCodes"
    ref = tqref.KVCache(1, H, D, key_bits=3, value_bits=2, mode="prod")
    ref.append(0, k, v)
    for name, arr in ref.stored(0).items():
        np.testing.assert_array_equal(layer._store.arrays[name].numpy(), arr, err_msg=name)
    host = tq_hf.TurboQuantLayer(H, D, key_bits=3, value_bits=2, mode="prod")
    want_k, want_v = feed(host, k, v, [2])
    np.testing.assert_array_equal(got_v, want_v)
    norms = ref.stored(0)["key_norms"].astype(np.float64)[..., None]
    reference64.within(got_k, want_k, reference64.cache_prod_keys(ref, 0), "cuda prod keys", scale=norms, axis=-1)
    assert layer.memory_usage() == ref.memory_usage()


@pytest.mark.gpu
def test_cuda_tensors_stay_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    pytest.importorskip("tqref.backends.cuda", reason="numba-cuda is not installed")
    k, v = states(b=1, t=9)
    layer = tq_hf.TurboQuantLayer(H, D, key_bits=4, value_bits=3, backend="cuda")
    kc, vc = torch.from_numpy(k).cuda(), torch.from_numpy(v).cuda()
    got_k, got_v = layer.update(kc[:, :, :8], vc[:, :, :8])
    got_k, got_v = layer.update(kc[:, :, 8:], vc[:, :, 8:])
    assert got_k.is_cuda and got_v.is_cuda and all(t.is_cuda for t in layer._store.arrays.values())
    ref = tqref.KVCache(1, H, D, key_bits=4, value_bits=3)
    ref.append(0, k, v)
    for name, arr in ref.stored(0).items():
        np.testing.assert_array_equal(layer._store.arrays[name].cpu().numpy(), arr, err_msg=name)
    want_k, want_v = ref.dequantize(0)
    np.testing.assert_array_equal(got_k.cpu().numpy(), want_k)  # mse dequantization is bit-exact on the GPU
    np.testing.assert_array_equal(got_v.cpu().numpy(), want_v)


# ----------------------------------------------------------------------------- the Cache on a model


def test_generate_equals_one_pass_over_the_same_tokens(tiny):
    ids = torch.randint(0, TINY["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    make = lambda: tq_hf.TurboQuantCache(tiny.config, key_bits=3, value_bits=3, seed=4)  # noqa: E731
    out = tiny.generate(ids, attention_mask=torch.ones_like(ids), cache=make(), max_new_tokens=5,
                        do_sample=False, output_logits=True, return_dict_in_generate=True)
    steps = torch.stack(out.logits, dim=1)  # (B, 5, V): logits at positions 8 .. 12
    with torch.no_grad():
        one_pass = tiny(out.sequences[:, :-1], cache=make(), use_cache=True).logits[:, 8:]
    np.testing.assert_allclose(steps.numpy(), one_pass.numpy(), rtol=0, atol=1e-4)


def test_high_bits_are_close_to_the_exact_cache_and_memory_is_accounted(tiny):
    ids = torch.randint(0, TINY["vocab_size"], (1, 12), generator=torch.Generator().manual_seed(2))
    cache = tq_hf.TurboQuantCache(tiny.config, key_bits=8, value_bits=8)
    with torch.no_grad():
        exact = tiny(ids, cache=DynamicCache(config=tiny.config), use_cache=True).logits
        low = tiny(ids, cache=tq_hf.TurboQuantCache(tiny.config, key_bits=2, value_bits=2), use_cache=True).logits
        high = tiny(ids, cache=cache, use_cache=True).logits
    # 8-bit codes: relative reconstruction error ~1e-4; a 2-bit cache is far coarser
    err_high, err_low = (exact - high).abs().max().item(), (exact - low).abs().max().item()
    assert err_high < 0.02 * exact.abs().max().item() and err_high < err_low / 10
    layers, heads, d = tq_hf.model_geometry(tiny.config)
    assert cache.get_seq_length() == 12
    assert cache.baseline_bytes() == 2 * layers * heads * 12 * d * 4
    per_token = tqref.KVCache(1, heads, d, key_bits=8, value_bits=8).bytes_per_token()
    assert cache.memory_usage() == layers * heads * 12 * per_token


def test_layer_options_full_precision_and_overrides(tiny):
    cache = tq_hf.TurboQuantCache(tiny.config, key_bits=3, value_bits=3,
                                  layer_options={0: None, 2: {"key_bits": 5, "residual_length": 4}})
    assert type(cache.layers[0]).__name__ == "DynamicLayer"
    assert cache.layers[1].codes.key_bits == 3 and cache.layers[2].codes.key_bits == 5
    assert cache.layers[2].residual_length == 4
    ids = torch.randint(0, TINY["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tiny(ids, cache=cache, use_cache=True)
    exact_layer = 2 * H * 6 * D * 4
    assert cache.memory_usage() == (exact_layer + cache.layers[1].memory_usage() + cache.layers[2].memory_usage())


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer_options={3: None}), r"layer_options: expected layer indices in 0..2, got 3"),
    (dict(layer_options={1: {"bits": 3}}), r"layer_options\[1\]: expected option names among"),
    (dict(layer_options={1: {"key_bits": 0}}), r"layer 1: key_bits"),
    (dict(key_bits=9), r"key_bits"),
    (dict(outliers="paper-2.5"), r"options: expected names among"),
])
def test_cache_options_are_validated(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tq_hf.TurboQuantCache(tiny.config, **{"key_bits": 4, "value_bits": 4, **kwargs})


def test_sliding_window_models_are_refused():
    config = LlamaConfig(**TINY)
    config.layer_types = ["full_attention", "sliding_attention", "full_attention"]
    with pytest.raises(ValueError, match=r"config: expected a model whose layers all use full attention"):
        tq_hf.TurboQuantCache(config, key_bits=4, value_bits=4)


def test_beam_search_is_refused_clearly(tiny):
    ids = torch.randint(0, TINY["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(4))
    with pytest.raises(NotImplementedError, match="cannot reorder"):
        tiny.generate(ids, attention_mask=torch.ones_like(ids), cache=tq_hf.TurboQuantCache(tiny.config),
                      num_beams=2, max_new_tokens=3, do_sample=False)


@pytest.mark.parametrize("version, ok", [("5.25.0", True), ("5.12.1", True), ("5.11.0", False), ("4.57.6", False),
                                         ("6.0.0", False)])
def test_transformers_version_gate(version, ok):
    if ok:
        tq_hf.check_transformers_version(version)
    else:
        with pytest.raises(ImportError, match=r"expected transformers >=5\.12,<6 .* got " + version.replace(".", r"\.")):
            tq_hf.check_transformers_version(version)
