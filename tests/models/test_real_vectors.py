"""conformance/real-v1: golden vectors on real K/V, regenerated from the frozen inputs.

Needs no model: the captured inputs are frozen in tqref/conformance/real_kv_inputs.json.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance.family_vectors import REPO, assert_backend_passes, assert_regenerates, family_dir, lint_clean
from tqref.commands.conformance import _roots
from tqref.conformance import lint, loader, norm16, real_data

REAL = family_dir(real_data.DIR_NAME)


def test_regenerating_reproduces_the_shipped_real_vectors():
    assert_regenerates(REAL, real_data.render(), "tqref.conformance.real_data")


def test_real_vectors_lint_clean_and_v1_is_unchanged():
    assert lint_clean(REAL, 3) > 100
    # v1 still needs its PRNG stream file: the exemption is for added families only
    assert lint.lint_dir(REPO / "conformance" / "v1")[0] == []


def test_inputs_are_real_and_include_outlier_layers():
    doc = real_data.load_inputs()
    layers = doc["layers"]
    assert {0, 29} <= {e["layer"] for e in layers}
    outliers = [e for e in layers if e["outlier"]]
    assert len(outliers) == real_data.OUTLIER_LAYERS
    assert min(e["outlierRatio"] for e in outliers) > 5  # a channel's RMS ≥ 5× the median channel's
    for e in layers:
        assert e["keys"].shape == (real_data.POSITIONS, 64) and np.isfinite(e["keys"]).all()
        assert e["spanQueries"].shape == (9, 2, 64)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_backends_pass_the_real_vectors(backend):
    assert_backend_passes(REAL, backend, 3)


def test_verify_and_lint_find_the_added_family_beside_v1():
    class Args:
        dir = None

    roots = _roots(Args, loader.find_dir(REPO / "conformance" / "v1"))
    assert [p.name for p in roots] == ["v1", real_data.DIR_NAME, norm16.DIR_NAME]
