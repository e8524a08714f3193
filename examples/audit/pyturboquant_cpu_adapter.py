"""Audit adapters for pyturboquant-cpu 0.1.0 (``pip install pyturboquant-cpu``; numpy + scipy).

    PYTHONPATH=examples/audit tqref audit --impl pyturboquant_cpu_adapter:prod --dim 128 --bits 3
    PYTHONPATH=examples/audit tqref audit --impl pyturboquant_cpu_adapter:mse --dim 128 --bits 3

The package has no inner-product function: its prod dequantize includes the QJL term, so
⟨q, dequantize(x)⟩ is the paper's estimator (linear in q).
"""

import numpy as np


class Adapter:
    def __init__(self, dim, bits, seed, kind):
        import pyturboquant_cpu as ptq

        self.ptq, self.bits, self.seed, self.kind = ptq, bits, seed, kind
        self.unbiased = False if kind == "mse" else None

    def quantize(self, x):
        fn = self.ptq.quantize_mse if self.kind == "mse" else self.ptq.quantize_prod
        return fn(np.asarray(x, np.float64), self.bits, seed=self.seed)

    def dequantize(self, codes):
        fn = self.ptq.dequantize_mse if self.kind == "mse" else self.ptq.dequantize_prod
        return np.asarray(fn(codes), np.float64)

    def inner_product(self, queries, codes):
        return np.asarray(queries, np.float64) @ self.dequantize(codes).T


def prod(dim, bits, seed):
    return Adapter(dim, bits, seed, "prod")


def mse(dim, bits, seed):
    return Adapter(dim, bits, seed, "mse")
