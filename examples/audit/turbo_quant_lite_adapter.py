"""Audit adapter for turbo-quant-lite 0.1.1 (``pip install turbo-quant-lite``; numpy only).

    PYTHONPATH=examples/audit tqref audit --impl turbo_quant_lite_adapter:factory --dim 128 --bits 3

turbo-quant-lite implements TurboQuant_mse only (QR rotation, a fixed codebook); its
``similarity_batch`` is the plain (shrunk) mse inner-product estimator.
"""

import numpy as np


class Adapter:
    kind = "mse"
    unbiased = False

    def __init__(self, dim, bits, seed):
        from turbo_quant_lite import TurboQuant

        self.tq = TurboQuant(dim, bits=bits, seed=seed)

    def quantize(self, x):
        return self.tq.encode_batch(np.asarray(x, np.float64))

    def dequantize(self, codes):
        indices, norms = codes
        return self.tq.decode_batch(indices, norms)

    def inner_product(self, queries, codes):
        indices, norms = codes
        return np.stack([self.tq.similarity_batch(q, indices, norms) for q in np.asarray(queries, np.float64)])


def factory(dim, bits, seed):
    return Adapter(dim, bits, seed)
