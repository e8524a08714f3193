"""One definition of each configuration rule: bit ranges, the mse sub-config, the record layout,
"quantizer from a Config" (reference/plan.py, quantizers.py)."""

import numpy as np
import pytest

import tqref
from tqref.quantizers import from_config, record_fields
from tqref.reference.plan import BITS, Config


@pytest.mark.parametrize("kind", ["mse", "prod"])
def test_every_entry_point_enforces_the_same_bit_range(kind):
    low, high = BITS[kind]
    extra = {"projection": "gaussian"} if kind == "prod" else {}
    for bits in (low - 1, high + 1):
        msg = rf"expected an integer in \[{low}, {high}\], got {bits}"
        with pytest.raises(ValueError, match="bits: " + msg):
            from_config(Config(kind, 8, bits, **extra))
        with pytest.raises(ValueError, match="key_bits: " + msg):
            tqref.KVCache(1, 1, 8, key_bits=bits, value_bits=2, mode=kind)
    low_mse, high_mse = BITS["mse"]
    with pytest.raises(ValueError, match=rf"value_bits: expected an integer in \[{low_mse}, {high_mse}\]"):
        tqref.KVCache(1, 1, 8, key_bits=3, value_bits=high_mse + 1)
    assert from_config(Config(kind, 8, low, **extra)).bits == low


def test_from_config_builds_the_quantizer_of_the_config():
    for config in (Config("mse", 16, 3, 2, "haar", "gaussian", None, "float16"),
                   Config("prod", 16, 3, 2, projection="orthogonal")):
        q = from_config(config, backend="reference")
        expected = tqref.TurboQuantProd if config.kind == "prod" else tqref.TurboQuantMSE
        assert q.config == config and type(q) is expected
    with pytest.raises(ValueError, match="projection: expected None for an mse configuration, got 'gaussian'"):
        from_config(Config("mse", 16, 3, projection="gaussian"))
    with pytest.raises(ValueError, match="kind: expected 'mse' or 'prod', got 'other'"):
        from_config(Config("other", 16, 3))


@pytest.mark.parametrize("config", [Config("mse", 20, 3, norm_dtype="float16"),
                                    Config("prod", 20, 4, projection="gaussian")], ids=str)
def test_record_fields_and_mse_config_describe_the_codes(config):
    codes = from_config(config).quantize(np.ones((3, 20), np.float32))
    arrays = ([codes.indices, codes.norms] if config.kind == "mse"
              else [codes.mse.indices, codes.mse.norms, codes.signs, codes.residual_norms])
    fields = record_fields(config)
    assert [name for name, _, _ in fields] == (["indices", "norms"] + (["signs", "residual_norms"]
                                                                        if config.kind == "prod" else []))
    for (_, dtype, row), array in zip(fields, arrays, strict=True):
        assert array.dtype == dtype and array.shape == (3,) + row
    mse_codes = codes if config.kind == "mse" else codes.mse
    assert mse_codes.config == config.mse_config
    assert config.mse_config.kind == "mse" and config.mse_config.bits == config.mse_bits
