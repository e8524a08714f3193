"""The backend contract (tqref/backends/protocol.py): every backend implements the Protocols it
claims, with compatible signatures, and conformance runs each step on each backend that has it."""

import numpy as np
import pytest

from tqref import backends
from tqref.backends import protocol as P
from tqref.conformance import operations

#: which Protocols each backend implements (a change here is a change of the contract)
EXPECTED = {
    "reference": {P.Backend, P.RotationSteps, P.CodeSteps},
    "numba": {P.Backend, P.RotationSteps, P.CodeSteps},
    "cuda": {P.Backend, P.RotationSteps, P.DeviceOps},
}


@pytest.mark.parametrize("name", backends.available())
def test_each_backend_implements_its_protocols(name):
    backend = backends.get(name)
    have = {proto for proto in P.PROTOCOLS if P.implements(backend, proto)}
    assert have == EXPECTED[name], {proto.__name__: P.missing(backend, proto) for proto in EXPECTED[name]}
    assert isinstance(backend, P.Backend) and backend.name == name


def test_missing_names_each_shortfall():
    class Partial:
        name = "partial"

        def rotate(self, x, plan, extra):  # a required parameter the contract does not pass
            return x

        def rotate_inverse(self, plan, y):  # parameters swapped
            return y

    assert P.missing(Partial(), P.RotationSteps) == [
        "rotate: extra parameters without a default ['extra']",
        "rotate_inverse: parameters in order ['plan', 'y'], expected ['y', 'plan']"]
    assert "nearest_index: missing" in P.missing(Partial(), P.CodeSteps)

    class KeywordScale:
        def mse_inner_product_device(self, queries, packed, norms, plan, unbiased=False, stream=0):
            return None

    problems = P.missing(KeywordScale(), P.DeviceOps)
    assert "mse_inner_product_device: parameter 'unbiased' is POSITIONAL_OR_KEYWORD, expected KEYWORD_ONLY" \
        in problems


STEP_REQUESTS = {
    "rotate_hadamard": {"dim": 24, "seed": 9, "x": np.linspace(-2, 3, 24, dtype=np.float32)},
    "nearest_index": {"values": np.array([-0.5, -0.1, 0.0, 0.1, 0.7], np.float32),
                      "boundaries": np.array([-0.2, 0.0, 0.3])},
    "pack": {"indices": np.array([5, 2, 7, 1, 0], np.uint8), "bits": 3, "count": 5},
    "unpack": {"packed": np.array([0xD5, 0x41], np.uint8), "bits": 3, "count": 5},
}
STEP_PROTOCOL = {"rotate_hadamard": P.RotationSteps, "nearest_index": P.CodeSteps, "pack": P.CodeSteps,
                 "unpack": P.CodeSteps}


@pytest.mark.parametrize("name", [b for b in backends.available() if b != "reference"])
@pytest.mark.parametrize("op", sorted(STEP_REQUESTS))
def test_conformance_runs_each_step_on_each_backend_that_has_it(name, op):
    assert op in operations.BACKEND_OPS
    expected = operations.run(op, STEP_REQUESTS[op])
    if not P.implements(backends.get(name), STEP_PROTOCOL[op]):
        with pytest.raises(operations.Unsupported, match=f"backend {name!r} has no {STEP_PROTOCOL[op].__name__}"):
            operations.run(op, STEP_REQUESTS[op], name)
        return
    got = operations.run(op, STEP_REQUESTS[op], name)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].tobytes() == expected[key].tobytes(), key
