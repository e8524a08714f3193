"""KV-cache options beyond plain TurboQuant codes (docs/kv-cache.md §7).

``tqref.KVCache`` takes them as keyword arguments; the logic lives here, one concept per
module:

    window.py    the float16 tier: sink tokens kept forever and a sliding window of the most
                 recent tokens, quantized when they leave it; the visibility rule that makes a
                 one-pass (prefill) attention see exactly what token-by-token decode sees
    outliers.py  the paper's outlier-channel split: per head, d/4 channels get one more bit,
                 each part rotated and quantized on its own; static (calibrated) or per-token
                 selection; the paper's 2.5- and 3.5-bit presets
    layers.py    per-layer bit widths, float16 layers included
    tiered.py    the per-layer orchestration behind ``KVCache`` when any option is used
"""

from .layers import FLOAT16
from .outliers import PRESETS, SELECTIONS, OutlierSpec

__all__ = ["OutlierSpec", "PRESETS", "SELECTIONS", "FLOAT16"]
