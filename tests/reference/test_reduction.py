"""reduction: the 32-lane written order, checked against a scalar model of the order."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tqref.reference import reduction

f32 = np.float32


def lane_model(products):
    """Scalar float32 model: lane sums in index order (missing terms past the end count as
    +0.0), then offsets 16, 8, 4, 2, 1."""
    products = list(products) + [f32(0.0)] * (-len(products) % 32)
    lanes = [f32(0.0)] * 32
    started = [False] * 32
    for j, p in enumerate(products):
        lane = j % 32
        lanes[lane] = f32(p) if not started[lane] else f32(lanes[lane] + f32(p))
        started[lane] = True
    offset = 16
    while offset:
        for lane in range(offset):
            lanes[lane] = f32(lanes[lane] + lanes[lane + offset])
        offset //= 2
    return lanes[0]


finite = st.floats(-1e6, 1e6, width=32, allow_nan=False)


@given(hnp.arrays(np.float32, st.integers(1, 200), elements=finite))
def test_ordered_sum_matches_scalar_model(values):
    assert reduction.ordered_sum(values).tobytes() == np.float32(lane_model(values)).tobytes()


@given(hnp.arrays(np.float32, st.integers(1, 100), elements=finite), st.integers(0, 2**32 - 1))
def test_ordered_dot_rounds_products_first(a, seed):
    b = np.random.default_rng(seed).standard_normal(a.size).astype(np.float32)
    products = [f32(x * y) for x, y in zip(a, b)]
    assert reduction.ordered_dot(a, b).tobytes() == np.float32(lane_model(products)).tobytes()


def test_order_differs_from_pairwise_sum_somewhere():
    # The order matters: find inputs where numpy's pairwise np.sum gives other bits.
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2000, 300)) * 10 ** rng.uniform(-3, 3, (2000, 300))).astype(np.float32)
    assert np.any(reduction.ordered_sum(x) != x.sum(axis=1))


def test_ordered_matvec_equals_rowwise_dot():
    rng = np.random.default_rng(2)
    m = rng.standard_normal((37, 45)).astype(np.float32)
    x = rng.standard_normal((5, 45)).astype(np.float32)
    expected = np.stack([reduction.ordered_dot(m[i], x) for i in range(37)], axis=-1)
    assert np.array_equal(reduction.ordered_matvec(m, x, block_elements=100), expected)
