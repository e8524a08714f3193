"""The reference backend: the NumPy modules of tqref.reference, unchanged.

Batch operations run in chunks of ``CHUNK_ROWS`` vectors so the temporaries stay in cache;
vectors are independent, so chunking changes no bit of the result.
"""

from __future__ import annotations

import numpy as np

from ..reference import estimators, mse, prod

CHUNK_ROWS = 2048


def _chunked(fn, *arrays):
    """Apply ``fn`` to row chunks of ``arrays`` and concatenate each output along axis 0."""
    n = arrays[0].shape[0]
    if n <= CHUNK_ROWS:
        return fn(*arrays)
    parts = [fn(*(a[i : i + CHUNK_ROWS] for a in arrays)) for i in range(0, n, CHUNK_ROWS)]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(p) for p in zip(*parts))
    return np.concatenate(parts)


class ReferenceBackend:
    name = "reference"

    def mse_quantize(self, x, plan):
        return _chunked(lambda a: mse.quantize(a, plan), x)

    def mse_dequantize(self, packed, norms, plan):
        return _chunked(lambda p, n: mse.dequantize(p, n, plan), packed, norms)

    def prod_quantize(self, x, plan):
        return _chunked(lambda a: prod.quantize(a, plan), x)

    def prod_dequantize(self, packed, norms, signs, gammas, plan):
        return _chunked(lambda p, n, s, g: prod.dequantize(p, n, s, g, plan), packed, norms, signs, gammas)

    def mse_inner_product(self, queries, packed, norms, plan, unbiased=False):
        return estimators.mse_inner_product(queries, packed, norms, plan, unbiased=unbiased)

    def prod_inner_product(self, queries, packed, norms, signs, gammas, plan):
        return estimators.prod_inner_product(queries, packed, norms, signs, gammas, plan)
