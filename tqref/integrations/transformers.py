"""A TurboQuant key/value cache for Hugging Face transformers 5.x (docs/huggingface.md).

:class:`TurboQuantCache` is a ``transformers.Cache`` whose layers keep the keys and values as
TurboQuant codes in a :class:`tqref.KVCache` (one per model layer, all with the same seed, so
every layer shares one rotation Π exactly as a single multi-layer ``KVCache`` would). Pass it
to ``model.generate(..., cache=cache)`` (``past_key_values=`` on releases before the rename)
or to a plain forward call.

How a layer answers ``update(key_states, value_states)``. The model's attention asks the cache
for the whole layer's K and V, float tensors (batch, kv heads, seq, head_dim), and computes
softmax attention itself; so the layer returns them *dequantized*:

* mode "mse": K̃ = ‖k‖·Πᵀ c[idx] (divided by α_k when ``debiased``) and Ṽ likewise, exactly
  ``KVCache.dequantize``. softmax(s·q K̃ᵀ) Ṽ is the attention ``KVCache.attend`` computes from
  the codes, up to float32 summation order.
* mode "prod": K̃ is Algorithm 2's DeQuant, ‖k‖·Πᵀ(c[idx] + κ·γ·Sᵀz), not the mse stage alone.
  ⟨q, K̃⟩ = ⟨q, K̃_mse⟩ + ‖k‖·κ·γ·⟨S Π q, z⟩ — the mse score plus the QJL logit bias of
  ``KVCache.logit_bias``, because the bias is linear in q. So the model's own attention gets
  the unbiased prod scores, again up to summation order; nothing is approximated. (K̃ is a
  worse *vector* reconstruction than the mse stage; only its inner products matter here.)

Tokens kept in full precision (the model's dtype, exactly what ``DynamicCache`` would hold):

* ``sink_tokens`` S: the first S positions, never quantized;
* ``residual_length`` R: a sliding window of the R most recent positions; a position is
  quantized when it leaves the window. (transformers' ``QuantizedLayer`` with
  ``residual_length`` instead quantizes in bursts whenever its float buffer fills.)

The returned K is [sinks | dequantized middle | window] along the sequence, in position order.
With R > 0, a multi-token update (a prefill) returns the window of the *whole* sequence in
full precision, so an early query of that chunk sees some keys unquantized that token-by-token
decoding would have shown it quantized: a one-pass perplexity with a window is slightly
optimistic. With R = S = 0 every query sees every key quantized, in prefill and in decode.

Devices. CPU tensors go through NumPy without copies (float16/32/64; bfloat16 is widened to
float32, exactly). CUDA tensors with ``backend="cuda"`` stay on the GPU: the codes are torch
tensors on the device, quantized and dequantized by the ``tqref.backends.cuda`` device
functions, which read torch tensors through ``__cuda_array_interface__`` and whose outputs
come back through it too (no host copy), on torch's current stream. CUDA tensors with any
other backend are copied to the host and back on every update. The device path keeps float32
norms (``norm_dtype="float16"`` is rejected there).

Not supported (a clear error): beam-search reordering, batch selection/repetition and cropping
of a filled layer (``tqref.KVCache`` cannot permute or truncate its codes), sliding-window or
chunked attention layers, and the ``tqref.KVCache`` options whose codes cannot be dequantized
(``outliers``, ``layer_bits``: use ``layer_options`` here).

transformers versions: ``SUPPORTED_TRANSFORMERS`` (the layered cache API with
``get_mask_sizes(query_length)``); tested with 5.25.0. Other versions are refused at import.
"""

from __future__ import annotations

import re

import numpy as np

from ..cache import KVCache

#: how to install what this module needs
INSTALL_HINT = 'pip install "tqref[hf]"'
#: transformers releases with the cache API used here: CacheLayerMixin with lazy_initialization,
#: update, get_mask_sizes(query_length), get_seq_length, get_max_length (get_max_cache_shape
#: before 5.20; both are provided)
SUPPORTED_TRANSFORMERS = ">=5.12,<6"
_MIN_VERSION, _NEXT_MAJOR = (5, 12), 6

#: tqref.KVCache options a TurboQuantCache passes through (per layer overridable)
KV_OPTIONS = ("key_bits", "value_bits", "mode", "seed", "debiased", "debiased_values", "projection",
              "rotation", "codebook", "norm_dtype", "backend")
#: options handled by the transformers layer itself (per layer overridable)
LAYER_OPTIONS = ("residual_length", "sink_tokens")


def check_transformers_version(version: str) -> None:
    """Raise ImportError unless ``version`` (a transformers ``__version__``) is supported."""
    m = re.match(r"(\d+)\.(\d+)", str(version))
    ok = m is not None and _MIN_VERSION <= (int(m[1]), int(m[2])) and int(m[1]) < _NEXT_MAJOR
    if not ok:
        raise ImportError(f"tqref.integrations.transformers: expected transformers {SUPPORTED_TRANSFORMERS} "
                          f"(the layered cache API), got {version}; install a supported one with {INSTALL_HINT}")


try:
    import torch
    import transformers
    from transformers import cache_utils
except ImportError as exc:  # pragma: no cover - exercised where the extra is missing
    raise ImportError(f"tqref.integrations.transformers needs torch and transformers ({exc}); install them "
                      f"with {INSTALL_HINT}") from exc

check_transformers_version(transformers.__version__)

_HOST_DTYPES = (torch.float16, torch.float32, torch.float64)


def _to_numpy(t: "torch.Tensor") -> np.ndarray:
    """A host NumPy view of a float tensor (copied only off the CPU or from bfloat16)."""
    t = t.detach()
    if t.device.type != "cpu" or t.dtype not in _HOST_DTYPES:
        t = t.to(device="cpu", dtype=torch.float32)
    return t.numpy()


class _HostCodes:
    """One layer's codes in a ``tqref.KVCache`` (layer 0 of a one-layer cache), NumPy on the host."""

    def __init__(self, codes: KVCache):
        self.codes = codes

    @property
    def seq(self) -> int:
        return self.codes.seq_len(0)

    def append(self, k, v) -> None:
        self.codes.append(0, _to_numpy(k), _to_numpy(v))

    def dequantize(self):
        """(K̃, Ṽ) float32 torch (B, H, T, d) on the CPU; prod mode: K̃ is Algorithm 2's DeQuant."""
        keys, values = self.codes.dequantize(0)
        if self.codes.mode == "prod":
            a = self.codes.stored(0)
            lead = a["key_norms"].shape

            def rows(name):
                x = a[name]
                return np.ascontiguousarray(x.reshape((-1,) + x.shape[3:]))

            keys = self.codes.backend.prod_dequantize(
                rows("key_indices"), rows("key_norms").astype(np.float32), rows("key_signs"),
                rows("key_gammas").astype(np.float32), self.codes.key_plan)
            keys = np.asarray(keys, np.float32).reshape(lead + (self.codes.head_dim,))
        return torch.from_numpy(keys), torch.from_numpy(values)

    def memory_usage(self) -> int:
        return self.codes.memory_usage()

    def reset(self) -> None:
        self.codes.reset()


class _DeviceCodes:
    """One layer's codes as torch tensors on a CUDA device, made by the cuda backend's device functions.

    Storage: the ``KVCache.layout()`` arrays (norms float32), each a torch tensor
    (B, H, T, ...) on the device. Under Numba's CUDA simulator (tests without a GPU) the
    "device" arrays are host memory and the tensors stay on the CPU.
    """

    def __init__(self, codes: KVCache, device):
        if codes.norm_dtype != np.float32:
            raise ValueError(f"norm_dtype: expected 'float32' for tensors kept on the GPU with backend='cuda' "
                             f"(the device path stores float32 norms), got {codes.norm_dtype.name!r}")
        from numba import cuda as numba_cuda  # noqa: PLC0415  (the cuda backend's own dependency)

        from ..backends import cuda as tq_cuda  # noqa: PLC0415

        self.codes, self.device = codes, device
        self._numba, self._cuda = numba_cuda, tq_cuda
        self.names = [name for name, _, _ in codes.layout()]  # quantize_device's output order
        self.arrays: dict = {}

    @property
    def seq(self) -> int:
        return self.arrays["key_norms"].shape[2] if self.arrays else 0

    def _launch(self, fn, *args):
        """Run a device function on torch's current stream of this device, results as torch tensors."""
        if self.device.type != "cuda":  # the simulator
            return [torch.from_numpy(r.copy_to_host()) for r in _tuple(fn(*args, stream=0))]
        ptr = torch.cuda.current_stream(self.device).cuda_stream
        with self._numba.gpus[self.device.index or 0]:
            stream = 0 if ptr == 0 else self._numba.external_stream(ptr)
            results = _tuple(fn(*args, stream=stream))
        return [torch.as_tensor(r, device=self.device) for r in results]

    def append(self, k, v) -> None:
        if not bool(torch.isfinite(k).all() & torch.isfinite(v).all()):
            raise ValueError("key_states, value_states: expected finite values, got inf or nan")
        lead, d = tuple(k.shape[:3]), self.codes.head_dim
        k32 = k.detach().to(torch.float32).contiguous().view(-1, d)
        v32 = v.detach().to(torch.float32).contiguous().view(-1, d)
        new = self._launch(self._cuda.quantize_device, k32, self.codes.key_plan)
        new += self._launch(self._cuda.mse_quantize_device, v32, self.codes.value_plan)
        for name, t in zip(self.names, new):
            t = t.reshape(lead + tuple(t.shape[1:]))
            self.arrays[name] = torch.cat([self.arrays[name], t], dim=2) if name in self.arrays else t

    def dequantize(self):
        """(K̃, Ṽ) float32 torch (B, H, T, d) on the device, as :meth:`_HostCodes.dequantize`."""
        lead, d = tuple(self.arrays["key_norms"].shape), self.codes.head_dim

        def rows(name):
            t = self.arrays[name]
            return t.reshape((-1,) + tuple(t.shape[3:])).contiguous()

        key_names = [n for n in self.names if n.startswith("key_")]
        (keys,) = self._launch(self._cuda.dequantize_device, tuple(rows(n) for n in key_names),
                               self.codes.key_plan)
        (values,) = self._launch(self._cuda.mse_dequantize_device, rows("value_indices"), rows("value_norms"),
                                 self.codes.value_plan)
        keys, values = keys.reshape(lead + (d,)), values.reshape(lead + (d,))
        if self.codes.debiased:  # as KVCache.dequantize: times float32(1 / α)
            keys = keys * float(np.float32(1.0 / self.codes.key_alpha))
        if self.codes.debiased_values:
            values = values * float(np.float32(1.0 / self.codes.value_alpha))
        return keys, values

    def memory_usage(self) -> int:
        return sum(t.nbytes for t in self.arrays.values())

    def reset(self) -> None:
        self.arrays = {}


def _tuple(result):
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _nbytes(*tensors) -> int:
    return sum(t.nbytes for t in tensors if t is not None)


class TurboQuantLayer(cache_utils.CacheLayerMixin):
    """One attention layer's cache: TurboQuant codes plus full-precision sinks and window.

    Args:
        num_kv_heads, head_dim: the layer's key/value heads and head size.
        residual_length: R ≥ 0, the most recent R positions kept in the model's dtype.
        sink_tokens: S ≥ 0, the first S positions kept in the model's dtype.
        **options: ``tqref.KVCache`` options (``KV_OPTIONS``), validated there.

    ``update`` takes and returns (batch, num_kv_heads, seq, head_dim) tensors; see the module
    docstring for what it returns. Batch, device and dtype are fixed by the first update.
    """

    is_sliding = False
    is_croppable = False
    is_compileable = False

    def __init__(self, num_kv_heads: int, head_dim: int, *, residual_length: int = 0, sink_tokens: int = 0,
                 **options):
        super().__init__()
        self.codes = KVCache(1, num_kv_heads, head_dim, **options)
        self.residual_length = _check_count("residual_length", residual_length)
        self.sink_tokens = _check_count("sink_tokens", sink_tokens)
        self.cumulative_length = 0
        self._store = None
        self.sink_keys = self.sink_values = None

    def __repr__(self) -> str:
        return (f"TurboQuantLayer({self.codes!r}, residual_length={self.residual_length}, "
                f"sink_tokens={self.sink_tokens})")

    # ------------------------------------------------------------------ the CacheLayerMixin API
    def lazy_initialization(self, key_states, value_states) -> None:
        """Fix batch, device and dtype from the first states; empty sinks and window."""
        self._check_states(key_states, value_states)
        self.device, self.dtype, self.batch_size = key_states.device, key_states.dtype, key_states.shape[0]
        empty = key_states.new_empty(tuple(key_states.shape[:2]) + (0, self.codes.head_dim))
        self.keys, self.values = empty, empty.clone()  # the residual window
        self.sink_keys, self.sink_values = empty.clone(), empty.clone()
        on_device = self.codes.backend.name == "cuda" and (
            key_states.is_cuda or getattr(self.codes.backend, "simulated", False))
        self._store = _DeviceCodes(self.codes, self.device) if on_device else _HostCodes(self.codes)
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        """Cache the new states (sinks, window, codes) and return the whole layer's K, V.

        key_states, value_states: float (batch, num_kv_heads, new, head_dim) on the layer's
        device. Returns (K, V) in the dtype of the first states, (batch, num_kv_heads, seq, head_dim).
        """
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._check_states(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        k, v = key_states.to(self.dtype), value_states.to(self.dtype)
        take = min(max(self.sink_tokens - self.sink_keys.shape[-2], 0), k.shape[-2])
        if take:
            self.sink_keys = torch.cat([self.sink_keys, k[..., :take, :]], dim=-2)
            self.sink_values = torch.cat([self.sink_values, v[..., :take, :]], dim=-2)
            k, v = k[..., take:, :], v[..., take:, :]
        window_k = torch.cat([self.keys, k], dim=-2)
        window_v = torch.cat([self.values, v], dim=-2)
        leaving = window_k.shape[-2] - self.residual_length
        if leaving > 0:
            self._store.append(window_k[..., :leaving, :], window_v[..., :leaving, :])
            window_k, window_v = window_k[..., leaving:, :], window_v[..., leaving:, :]
        self.keys, self.values = window_k, window_v
        parts_k, parts_v = [self.sink_keys], [self.sink_values]
        if self._store.seq:
            dk, dv = self._store.dequantize()
            parts_k.append(dk.to(device=self.device, dtype=self.dtype))
            parts_v.append(dv.to(device=self.device, dtype=self.dtype))
        parts_k.append(self.keys)
        parts_v.append(self.values)
        return torch.cat(parts_k, dim=-2), torch.cat(parts_v, dim=-2)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) for the mask of ``query_length`` new positions: every position is kept."""
        return self.cumulative_length + query_length, 0

    def get_seq_length(self) -> int:
        """Positions cached so far (sinks + codes + window)."""
        return self.cumulative_length

    def get_max_length(self) -> int:
        """-1: the layer grows without bound."""
        return -1

    get_max_cache_shape = get_max_length  # the name before transformers 5.20

    def reset(self) -> None:
        """Drop every cached position (codes included); the next update starts afresh."""
        self.codes.reset()
        self._store = None
        self.keys = self.values = self.sink_keys = self.sink_values = None
        self.cumulative_length = 0
        self.is_initialized = False

    def offload(self):
        """No-op: the compressed layer stays on its device."""

    def prefetch(self):
        """No-op: see :meth:`offload`."""

    def _refuse(self, what: str) -> None:
        if self.get_seq_length() > 0:
            raise NotImplementedError(f"{what}: a TurboQuantLayer cannot reorder, select, repeat or crop cached "
                                      f"positions (tqref.KVCache keeps its codes append-only); use greedy or "
                                      f"sampling decoding without beams")

    def reorder_cache(self, beam_idx) -> None:
        self._refuse("reorder_cache")

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._refuse("batch_repeat_interleave")

    def batch_select_indices(self, indices) -> None:
        self._refuse("batch_select_indices")

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            self._refuse("crop")

    # ------------------------------------------------------------------ accounting
    def memory_usage(self) -> int:
        """Bytes held: the codes (``KVCache.memory_usage``) plus the full-precision sinks and window."""
        if not self.is_initialized:
            return 0
        return self._store.memory_usage() + _nbytes(self.keys, self.values, self.sink_keys, self.sink_values)

    # ------------------------------------------------------------------ validation
    def _check_states(self, key_states, value_states) -> None:
        h, d = self.codes.num_kv_heads, self.codes.head_dim
        for name, t in (("key_states", key_states), ("value_states", value_states)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ValueError(f"{name}: expected a floating-point torch.Tensor, got "
                                 f"{getattr(t, 'dtype', type(t).__name__)}")
            if t.dim() != 4 or t.shape[1] != h or t.shape[3] != d:
                raise ValueError(f"{name}: expected shape (batch, {h}, seq, {d}), got {tuple(t.shape)}")
        if value_states.shape != key_states.shape:
            raise ValueError(f"value_states: expected the shape of key_states {tuple(key_states.shape)}, got "
                             f"{tuple(value_states.shape)}")
        if self.is_initialized:
            if key_states.shape[0] != self.batch_size:
                raise ValueError(f"key_states: expected batch {self.batch_size} (fixed by the first update), got "
                                 f"{key_states.shape[0]}")
            if key_states.device != self.device or value_states.device != self.device:
                raise ValueError(f"key_states, value_states: expected device {self.device} (fixed by the first "
                                 f"update), got {key_states.device} and {value_states.device}")


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if get is not None else config


def model_geometry(config) -> tuple[int, int, int]:
    """(num_layers, num_kv_heads, head_dim) of a transformers decoder config; full attention only."""
    text = _text_config(config)
    layers = text.num_hidden_layers
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    types = getattr(text, "layer_types", None)
    if types is None:
        types = ["sliding_attention" if getattr(text, "sliding_window", None) is not None else "full_attention"]
    other = sorted(set(types) - {"full_attention"})
    if other:
        raise ValueError(f"config: expected a model whose layers all use full attention, got layer types {other} "
                         f"(TurboQuantCache keeps every position of every layer)")
    return layers, kv_heads, head_dim


class TurboQuantCache(cache_utils.Cache):
    """A transformers ``Cache`` of :class:`TurboQuantLayer` s, one per decoder layer.

    Args:
        config: the model's config (``model.config``): layers, kv heads, head_dim.
        key_bits, value_bits, mode, seed, and ``**options``: ``tqref.KVCache`` options
            (``KV_OPTIONS``: debiased, debiased_values, projection, rotation, codebook,
            norm_dtype, backend) for every layer.
        residual_length, sink_tokens: full-precision window and sinks (module docstring).
        layer_options: {layer index: None | dict}. None keeps that layer in full precision
            (a plain ``DynamicLayer``); a dict overrides any of the options above for that
            layer (e.g. ``{0: None, 5: {"key_bits": 8}}``).

    Example: ``model.generate(**inputs, cache=TurboQuantCache(model.config, key_bits=4,
    value_bits=2), max_new_tokens=20)``.
    """

    def __init__(self, config, *, key_bits=4, value_bits=4, mode="mse", seed=0, residual_length=0,
                 sink_tokens=0, layer_options=None, **options):
        unknown = sorted(set(options) - set(KV_OPTIONS))
        if unknown:
            raise ValueError(f"options: expected names among {sorted(KV_OPTIONS)} (or key_bits, value_bits, mode, "
                             f"seed, residual_length, sink_tokens, layer_options), got {unknown}")
        num_layers, kv_heads, head_dim = model_geometry(config)
        base = dict(key_bits=key_bits, value_bits=value_bits, mode=mode, seed=seed,
                    residual_length=residual_length, sink_tokens=sink_tokens, **options)
        per_layer = _check_layer_options(layer_options, num_layers)
        layers = []
        for i in range(num_layers):
            spec = per_layer.get(i, {})
            if spec is None:
                layers.append(cache_utils.DynamicLayer())
                continue
            try:
                layers.append(TurboQuantLayer(kv_heads, head_dim, **{**base, **spec}))
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}" if i in per_layer else str(exc)) from exc
        super().__init__(layers=layers)

    def memory_usage(self) -> int:
        """Bytes held by every layer: codes, full-precision sinks/windows, and full-precision layers."""
        return sum(layer.memory_usage() if isinstance(layer, TurboQuantLayer) else
                   (_nbytes(layer.keys, layer.values) if layer.is_initialized else 0)
                   for layer in self.layers)

    def baseline_bytes(self) -> int:
        """Bytes a ``DynamicCache`` in the model's dtype would hold for the same positions."""
        total = 0
        for layer in self.layers:
            if not layer.is_initialized:
                continue
            if isinstance(layer, TurboQuantLayer):
                b, h, d = layer.batch_size, layer.codes.num_kv_heads, layer.codes.head_dim
                itemsize = torch.empty((), dtype=layer.dtype).element_size()
                total += 2 * b * h * layer.get_seq_length() * d * itemsize
            else:
                total += _nbytes(layer.keys, layer.values)
        return total


def _check_layer_options(layer_options, num_layers: int) -> dict:
    if layer_options is None:
        return {}
    if not isinstance(layer_options, dict):
        raise ValueError(f"layer_options: expected a dict {{layer index: None or dict of options}}, got "
                         f"{type(layer_options).__name__}")
    allowed = set(KV_OPTIONS) | set(LAYER_OPTIONS)
    for index, spec in layer_options.items():
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < num_layers:
            raise ValueError(f"layer_options: expected layer indices in 0..{num_layers - 1}, got {index!r}")
        if spec is not None and not isinstance(spec, dict):
            raise ValueError(f"layer_options[{index}]: expected None (full precision) or a dict of options, got "
                             f"{type(spec).__name__}")
        bad = sorted(set(spec or {}) - allowed)
        if bad:
            raise ValueError(f"layer_options[{index}]: expected option names among {sorted(allowed)}, got {bad}")
    return {int(i): s for i, s in layer_options.items()}
