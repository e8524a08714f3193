"""tqref — the reference implementation of TurboQuant vector quantization.

Public API (everything else may change):

    TurboQuantMSE, TurboQuantProd      quantizers (paper Algorithms 1 and 2)
    MSECodes, ProdCodes                their outputs
    KVCache                            compressed KV cache (TqCache semantics) with attend()
    lloyd_max                          Lloyd–Max codebooks (exact marginal or Gaussian)
    pack_bits, unpack_bits             the LSB-first bit-stream layout
    backends()                         names of the backends available here
"""

from . import backends  # callable: tqref.backends() lists the available backends
from .cache import KVCache
from .quantizers import MSECodes, ProdCodes, TurboQuantMSE, TurboQuantProd, lloyd_max, pack_bits, unpack_bits

__version__ = "0.1.0"


__all__ = [
    "TurboQuantMSE", "TurboQuantProd", "MSECodes", "ProdCodes", "lloyd_max", "pack_bits",
    "unpack_bits", "backends", "KVCache", "__version__",
]
