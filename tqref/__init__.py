"""tqref — the reference implementation of TurboQuant vector quantization.

Public API (everything else may change):

    TurboQuantMSE, TurboQuantProd      quantizers (paper Algorithms 1 and 2)
    MSECodes, ProdCodes                their outputs
    KVCache                            compressed KV cache (TqCache semantics) with attend()
    lloyd_max                          Lloyd–Max codebooks (exact marginal or Gaussian)
    pack_bits, unpack_bits             the LSB-first bit-stream layout
    backends()                         names of the backends available here
"""

from .reference.cache import KVCache
from .quantizers import MSECodes, ProdCodes, TurboQuantMSE, TurboQuantProd, lloyd_max, pack_bits, unpack_bits

__version__ = "0.1.0"


def backends() -> list:
    """Names of the backends that load on this machine ("reference" always)."""
    import importlib

    # the subpackage tqref.backends is shadowed by this function on the package object
    return importlib.import_module("tqref.backends").available()


__all__ = [
    "TurboQuantMSE", "TurboQuantProd", "MSECodes", "ProdCodes", "lloyd_max", "pack_bits",
    "unpack_bits", "backends", "KVCache", "__version__",
]
