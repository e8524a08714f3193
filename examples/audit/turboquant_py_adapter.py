"""Audit adapter for turboquant-py 0.1.0 (``pip install turboquant-py``; numpy + scipy).

It installs a top-level package named ``turboquant``, as turboquant-torch does, so install it
on its own path:

    pip install --no-deps --target /tmp/tq-py turboquant-py==0.1.0
    PYTHONPATH=/tmp/tq-py:examples/audit tqref audit --impl turboquant_py_adapter:prod --dim 128 --bits 3
"""

import numpy as np


class Adapter:
    def __init__(self, dim, bits, seed, mode):
        from turboquant import TurboQuant

        self.tq = TurboQuant(dim, bits, mode=mode, seed=seed)
        self.kind = "prod" if mode == "inner_product" else "mse"
        self.unbiased = None if self.kind == "prod" else False

    def quantize(self, x):
        return self.tq.quantize(np.asarray(x, np.float64))

    def dequantize(self, codes):
        return np.asarray(self.tq.dequantize(codes), np.float64)

    def inner_product(self, queries, codes):
        return np.stack([np.asarray(self.tq.inner_product(q, codes), np.float64)
                         for q in np.asarray(queries, np.float64)])


def prod(dim, bits, seed):
    return Adapter(dim, bits, seed, "inner_product")


def mse(dim, bits, seed):
    return Adapter(dim, bits, seed, "mse")
