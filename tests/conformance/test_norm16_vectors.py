"""conformance/norm16-v1: vectors on both sides of the float16 norm rule's boundaries."""

import numpy as np
import pytest

import tqref
from tqref.conformance import norm16

from .family_vectors import assert_backend_passes, assert_regenerates, family_dir, lint_clean

NORM16 = family_dir(norm16.DIR_NAME)


def test_regenerating_reproduces_the_shipped_norm16_vectors():
    assert_regenerates(NORM16, norm16.render(), "tqref.conformance.norm16")


def test_norm16_vectors_lint_clean_with_both_results():
    assert lint_clean(NORM16, 2) == 28
    results = [result for *_, result in norm16.cases(16)]
    assert results.count("valid") == 5 and results.count("invalid") == 2


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_backends_pass_the_norm16_vectors(backend):
    assert_backend_passes(NORM16, backend, 2)


@pytest.mark.parametrize("mode", ["mse", "prod"])
def test_quantizers_and_kv_cache_apply_the_same_rule_at_each_boundary(mode):
    d = 16
    quantizer = (tqref.TurboQuantProd(d, 3, norm_dtype="float16") if mode == "prod"
                 else tqref.TurboQuantMSE(d, 3, norm_dtype="float16"))
    for comment, _, x, result in norm16.cases(d):
        cache = tqref.KVCache(1, 1, d, key_bits=3, value_bits=3, mode=mode, norm_dtype="float16")
        kv = np.broadcast_to(x, (1, 1, 1, d))
        if result == "valid":
            codes = quantizer.quantize(x[None])
            norms = codes.norms if mode == "mse" else codes.mse.norms
            cache.append(0, kv, kv)
            stored = cache.stored(0)
            assert stored["key_norms"].reshape(-1).tobytes() == norms.tobytes(), comment
            assert stored["value_norms"].reshape(-1)[0] == np.float16(np.linalg.norm(x)), comment
        else:
            with pytest.raises(ValueError, match="float16's normal range"):
                quantizer.quantize(x[None])
            with pytest.raises(ValueError, match="float16's normal range"):
                cache.append(0, kv, kv)
            assert cache.seq_len(0) == 0, comment
