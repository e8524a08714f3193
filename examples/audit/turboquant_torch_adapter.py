"""Audit adapter for turboquant-torch 0.4.0 (``pip install turboquant-torch``; needs torch, CPU is fine).

It installs a top-level package named ``turboquant``, as turboquant-py does, so install it on
its own path (and the CPU torch wheel, never a CUDA one):

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu   # or a local CPU wheel
    pip install --no-deps --target /tmp/tq-torch turboquant-torch==0.4.0
    PYTHONPATH=/tmp/tq-torch:examples/audit tqref audit --impl turboquant_torch_adapter:prod --dim 128 --bits 3
"""

import numpy as np


class Adapter:
    def __init__(self, dim, bits, seed, unbiased):
        import torch
        from turboquant import TurboQuant

        self.torch = torch
        self.tq = TurboQuant(dim, bit_width=bits, unbiased=unbiased, seed=seed)
        self.kind = "prod" if unbiased else "mse"
        self.unbiased = None if unbiased else False

    def quantize(self, x):
        return self.tq.quantize(self.torch.from_numpy(np.asarray(x, np.float32)))

    def dequantize(self, codes):
        return self.tq.dequantize(codes).numpy().astype(np.float64)

    def inner_product(self, queries, codes):
        q = self.torch.from_numpy(np.asarray(queries, np.float32))
        return self.tq.compute_inner_product(q, codes).numpy().astype(np.float64)


def prod(dim, bits, seed):
    return Adapter(dim, bits, seed, True)


def mse(dim, bits, seed):
    return Adapter(dim, bits, seed, False)
