"""Per-layer bit widths, float16 layers included (docs/kv-cache.md §7.3).

``layer_bits`` maps a layer (an int; negative counts from the end, -1 the last layer) to

* ``(key_bits, value_bits)`` — that layer's TurboQuant bit widths (same ranges as the
  cache's ``key_bits``/``value_bits`` in its mode), or a single int for both;
* ``"float16"`` (:data:`FLOAT16`) — the layer is never quantized: every token is kept in
  float16 (window.py with a compressed tier that is never ready).

Layers not named use the cache's ``key_bits``/``value_bits``. An outlier split (outliers.py)
adds its extra bits on top of each quantized layer's widths.
"""

from __future__ import annotations

from .. import _validate as v
from ..reference.plan import MSE_BITS

FLOAT16 = "float16"


def resolve(layer_bits, num_layers: int, key_bits: int, value_bits: int, key_range: tuple) -> list:
    """Per layer: (key_bits, value_bits) or FLOAT16, validated (``key_range`` = (low, high))."""
    plan = [(key_bits, value_bits)] * num_layers
    if layer_bits is None:
        return plan
    if not isinstance(layer_bits, dict):
        raise ValueError(f"layer_bits: expected None or a dict {{layer: (key_bits, value_bits) | int | "
                         f"{FLOAT16!r}}}, got {layer_bits!r}")
    seen = {}
    for layer, bits in layer_bits.items():
        index = v.check_int("layer_bits key", layer, -num_layers, num_layers - 1) % num_layers
        if index in seen:
            raise ValueError(f"layer_bits: expected each layer once, got layer {index} as {seen[index]!r} and "
                             f"{layer!r}")
        seen[index] = layer
        name = f"layer_bits[{layer!r}]"
        if isinstance(bits, str):
            plan[index] = FLOAT16 if v.check_choice(name, bits, (FLOAT16,)) else None
            continue
        pair = (bits, bits) if not isinstance(bits, (tuple, list)) else tuple(bits)
        if len(pair) != 2:
            raise ValueError(f"{name}: expected (key_bits, value_bits), an int or {FLOAT16!r}, got {bits!r}")
        plan[index] = (v.check_int(f"{name} key bits", pair[0], *key_range),
                       v.check_int(f"{name} value bits", pair[1], *MSE_BITS))
    return plan
