"""A deliberately biased TurboQuant_prod: tqref's quantizer with the QJL term shrunk by 1/√d.

This is the defect three Python packages ship (docs/audits.md): an orthogonal-row or
N(0, 1/m) projection paired with the Gaussian constant √(π/2)/d, so the QJL correction comes
out √d too small and the estimator is essentially the (b − 1)-bit mse estimator.

    PYTHONPATH=examples/audit tqref audit --impl wrong_qjl_scale:factory --dim 128 --bits 3
"""

import math

import numpy as np

import tqref


class WrongScale:
    kind = "prod"

    def __init__(self, dim, bits, seed):
        self.prod = tqref.TurboQuantProd(dim, bits, seed=seed)
        self.mse = tqref.TurboQuantMSE(dim, bits - 1, seed=seed)
        self.shrink = 1.0 / math.sqrt(dim)

    def quantize(self, x):
        return self.prod.quantize(np.asarray(x, np.float32))

    def dequantize(self, codes):
        base = self.mse.dequantize(codes.mse)
        return base + (self.prod.dequantize(codes) - base) * self.shrink

    def inner_product(self, queries, codes):
        base = self.mse.inner_product(queries, codes.mse)
        return base + (self.prod.inner_product(queries, codes) - base) * self.shrink


def factory(dim, bits, seed):
    return WrongScale(dim, bits, seed)
