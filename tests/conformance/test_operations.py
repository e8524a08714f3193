"""Given data: requests that carry their own matrix or codebook run with it, on every backend."""

import numpy as np
import pytest

from tqref.backends import available
from tqref.conformance import operations
from tqref.reference import codebook as cb
from tqref.reference import mse


def _request(d=16, bits=2, matrix=None):
    book = cb.lloyd_max(bits, d)
    x = np.linspace(-1, 1, d, dtype=np.float32)
    return {"dim": d, "bits": bits, "seed": 3, "rotation": "haar", "codebookLaw": "beta", "normDtype": "float32",
            "boundaries": np.array(book.boundaries), "centroids": book.centroids_f32, "x": x,
            "matrix": np.eye(d, dtype=np.float32) if matrix is None else matrix}


def test_a_given_haar_matrix_is_used_by_the_reference():
    req = _request()
    out = operations.run("mse_quantize", req)
    unit, _ = mse.split_norm(req["x"][None])
    assert np.array_equal(out["rotated"], unit[0])  # Π = I: the rotated vector is the unit vector
    back = operations.run("mse_dequantize", {**req, "packed": out["packed"], "norm": out["norm"]})
    expected = req["centroids"][out["indices"]] * out["norm"]
    assert np.array_equal(back["xhat"], expected)


def test_given_codebooks_are_used_by_the_reference():
    req = _request()
    req["boundaries"] = np.array([-10.0, 10.0, 20.0])  # everything lands in cell 1
    out = operations.run("mse_quantize", req)
    assert set(out["indices"].tolist()) == {1}


@pytest.mark.parametrize("backend", [b for b in available() if b != "reference"])
def test_other_backends_run_given_data_as_the_reference(backend):
    """A given Π and codebook reach every backend through Plan.with_data: same codes, same
    rotated vector and reconstruction bits as the reference (all in written order)."""
    req = _request()
    req["boundaries"] = np.array([-0.5, 0.0, 0.5])
    want = operations.run("mse_quantize", req)
    got = operations.run("mse_quantize", req, backend)
    for name in ("packed", "indices", "norm"):
        assert np.array_equal(got[name], want[name]), name
    back = {**req, "packed": want["packed"], "norm": want["norm"]}
    assert np.array_equal(operations.run("mse_dequantize", back, backend)["xhat"],
                          operations.run("mse_dequantize", back)["xhat"])


def test_given_data_leaves_the_derived_plan_alone():
    """The given Π goes into a new Plan (Plan.with_data); the cached plan of the Config and
    rotation.haar_matrix keep the derived Π (nothing is patched)."""
    from tqref.reference import rotation
    from tqref.reference.plan import Config, Plan

    derived = Plan.from_config(Config("mse", 16, 2, 3, "haar"))
    operations.run("mse_quantize", _request())
    assert Plan.from_config(Config("mse", 16, 2, 3, "haar")) is derived
    assert not derived.given
    assert np.array_equal(derived.matrix, rotation.haar_matrix(16, 3))
    assert not np.array_equal(derived.matrix, np.eye(16, dtype=np.float32))
