"""Configuration names of the tqref/kv options (configs.py) build the caches they say."""

from __future__ import annotations

import pytest

from tqref.kv import PRESETS, OutlierSpec
from tqref.models import configs


def test_option_tokens():
    assert dict(configs.parse("mse-k3v3-r128-s4").kwargs) == {
        "key_bits": 3, "value_bits": 3, "residual_length": 128, "sink_tokens": 4}
    assert dict(configs.parse("mse-k3v3-o").kwargs)["outliers"] == OutlierSpec()
    assert dict(configs.parse("mse-k3v3-o32").kwargs)["outliers"] == OutlierSpec(calibration_tokens=32)
    assert dict(configs.parse("mse-k3v3-opt").kwargs)["outliers"] == OutlierSpec(selection="per-token")
    assert dict(configs.parse("mse-k3v3-e1f16").kwargs)["layer_bits"] == {0: "float16", -1: "float16"}
    assert dict(configs.parse("mse-k3v3-e2k4v4").kwargs)["layer_bits"] == {0: (4, 4), -1: (4, 4), 1: (4, 4),
                                                                             -2: (4, 4)}
    for name in ("paper-2.5", "paper-3.5"):
        assert dict(configs.parse(name).kwargs) == PRESETS[name]
    assert dict(configs.parse("paper-3.5-r64").kwargs)["residual_length"] == 64


def test_names_build_caches():
    cache = configs.parse("paper-2.5-r16-s2").build(4, 2, 64, backend="reference")
    assert (cache.key_bits, cache.value_bits, cache._tiers.window, cache._tiers.sinks) == (2, 2, 16, 2)
    assert cache._tiers.spec.count == 16
    cache = configs.parse("mse-k3v2-e1k4v4-f16norms").build(4, 2, 8, backend="reference")
    assert cache._tiers.layer_plan == [(4, 4), (3, 2), (3, 2), (4, 4)]


@pytest.mark.parametrize("bad", ["mse-k3v3-rx", "prod-k3v3-o", "paper-2.6", "paper"])
def test_bad_names(bad):
    with pytest.raises(ValueError, match="configs:"):
        configs.parse(bad).build(2, 1, 8, backend="reference")
