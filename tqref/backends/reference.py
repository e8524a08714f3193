"""The reference backend: the NumPy modules of tqref.reference, unchanged."""

from __future__ import annotations

from ..reference import estimators, mse, prod


class ReferenceBackend:
    name = "reference"

    def mse_quantize(self, x, plan):
        return mse.quantize(x, plan)

    def mse_dequantize(self, packed, norms, plan):
        return mse.dequantize(packed, norms, plan)

    def prod_quantize(self, x, plan):
        return prod.quantize(x, plan)

    def prod_dequantize(self, packed, norms, signs, gammas, plan):
        return prod.dequantize(packed, norms, signs, gammas, plan)

    def mse_inner_product(self, queries, packed, norms, plan, unbiased=False):
        return estimators.mse_inner_product(queries, packed, norms, plan, unbiased=unbiased)

    def prod_inner_product(self, queries, packed, norms, signs, gammas, plan):
        return estimators.prod_inner_product(queries, packed, norms, signs, gammas, plan)
