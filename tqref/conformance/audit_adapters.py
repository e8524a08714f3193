"""Audit adapters for tqref's own quantizers (``tqref audit --impl tqref.conformance.audit_adapters:prod``).

Each factory takes (dim, bits, seed) and returns an object with the interface of
:mod:`tqref.conformance.audit`: ``kind``, ``quantize``, ``dequantize``, ``inner_product``.
They are also the template for an adapter around another library (examples/audit/).
"""

from __future__ import annotations

import numpy as np


class TqrefAdapter:
    def __init__(self, quantizer, kind: str, unbiased: bool = False):
        self.q, self.kind, self.unbiased = quantizer, kind, unbiased

    def quantize(self, x):
        return self.q.quantize(np.asarray(x, np.float32))

    def dequantize(self, codes):
        return self.q.dequantize(codes)

    def inner_product(self, queries, codes):
        if self.kind == "mse":
            return self.q.inner_product(queries, codes, unbiased=self.unbiased)
        return self.q.inner_product(queries, codes)


def mse(dim, bits, seed, backend="reference"):
    """TurboQuant_mse, plain estimator (slope α)."""
    import tqref

    return TqrefAdapter(tqref.TurboQuantMSE(dim, bits, seed=seed, backend=backend), "mse", unbiased=False)


def mse_debiased(dim, bits, seed, backend="reference"):
    """TurboQuant_mse with the estimate divided by α (unbiased)."""
    import tqref

    return TqrefAdapter(tqref.TurboQuantMSE(dim, bits, seed=seed, backend=backend), "mse", unbiased=True)


def prod(dim, bits, seed, backend="reference"):
    """TurboQuant_prod with the paper's Gaussian projection."""
    import tqref

    return TqrefAdapter(tqref.TurboQuantProd(dim, bits, seed=seed, backend=backend), "prod")


def prod_orthogonal(dim, bits, seed, backend="reference"):
    """TurboQuant_prod with an orthogonal (Haar-row) projection and its exact constant."""
    import tqref

    return TqrefAdapter(tqref.TurboQuantProd(dim, bits, seed=seed, projection="orthogonal", backend=backend), "prod")


def prod_rademacher(dim, bits, seed, backend="reference"):
    """TurboQuant_prod with a portable Rademacher projection."""
    import tqref

    return TqrefAdapter(tqref.TurboQuantProd(dim, bits, seed=seed, projection="rademacher", backend=backend), "prod")
