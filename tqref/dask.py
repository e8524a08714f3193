"""Quantize dask arrays chunk by chunk (optional extra: ``pip install "tqref[dask]"``).

Only the small :class:`~tqref.reference.plan.Config` travels with each task — never a
rotation or projection matrix: every worker process rebuilds the plan from the Config once
(cached) and reuses it for all its chunks, so a Haar or QJL matrix of d² floats is made on
the worker instead of being shipped with every task.

    >>> import dask.array as da, tqref, tqref.dask
    >>> x = da.random.standard_normal((1_000_000, 128), chunks=(100_000, 128)).astype("float32")
    >>> codes = tqref.dask.quantize(x, tqref.TurboQuantMSE(128, 3))   # lazy MSECodes
    >>> codes = tqref.dask.compute(codes)                              # NumPy-backed MSECodes

Each task quantizes one block of rows with the chosen backend; with ``backend="numba"``
the kernels run single-threaded inside a task (dask already runs one task per core).
The results are the same bytes as quantizing the whole array at once.
"""

from __future__ import annotations

import functools

import numpy as np

from .quantizers import MSECodes, ProdCodes, TurboQuantMSE, TurboQuantProd, from_config, record_fields
from .reference.plan import Config


def _config_of(spec) -> Config:
    if isinstance(spec, (TurboQuantMSE, TurboQuantProd)):
        return spec.config
    if isinstance(spec, Config):
        return spec
    if isinstance(spec, dict):
        return Config(**spec)
    raise ValueError(f"quantizer: expected a TurboQuantMSE, TurboQuantProd, Config or dict, got {type(spec).__name__}")


@functools.lru_cache(maxsize=16)
def _worker_quantizer(config: Config, backend: str):
    """The quantizer for ``config`` in this process, built once (plan and matrices cached)."""
    q = from_config(config)
    if backend == "numba":
        from .backends.numba_cpu import NumbaBackend

        q.backend = NumbaBackend(parallel=False)  # one core per task: dask parallelises
    elif backend != "reference":
        from . import backends

        q.backend = backends.get(backend)
    return q


def _widths(config: Config):
    """Byte widths of the fields packed side by side into one uint8 row per vector."""
    return [dtype.itemsize * (row[0] if row else 1) for _, dtype, row in record_fields(config)]


def _quantize_block(block, config_items, backend):
    config = Config(**dict(config_items))
    q = _worker_quantizer(config, backend)
    codes = q.quantize(block)
    lead = block.shape[:-1]
    nd = np.dtype(config.norm_dtype)
    if config.kind == "prod":
        parts = [codes.mse.indices, codes.mse.norms, codes.signs, codes.residual_norms]
    else:
        parts = [codes.indices, codes.norms]
    cols = []
    for part in parts:
        part = np.ascontiguousarray(part)
        if part.dtype == nd and part.shape == lead:
            part = part.reshape(lead + (1,)).view(np.uint8)
        cols.append(part)
    return np.concatenate(cols, axis=-1)


def _dequantize_block(block, config_items, backend):
    config = Config(**dict(config_items))
    q = _worker_quantizer(config, backend)
    widths = _widths(config)
    cuts = np.cumsum([0] + widths)
    fields = [np.ascontiguousarray(block[..., cuts[i]:cuts[i + 1]]) for i in range(len(widths))]
    nd = np.dtype(config.norm_dtype)
    if config.kind == "prod":
        mse = MSECodes(fields[0], fields[1].view(nd)[..., 0], config.mse_config)
        codes = ProdCodes(mse, fields[2], fields[3].view(nd)[..., 0], config)
    else:
        codes = MSECodes(fields[0], fields[1].view(nd)[..., 0], config)
    return q.dequantize(codes)


def _items(config: Config) -> tuple:
    return tuple(config.to_dict().items())


def quantize(x, quantizer, *, backend: str = "numba"):
    """Lazily quantize the dask array ``x`` (..., dim): MSECodes / ProdCodes of dask arrays.

    ``quantizer``: a TurboQuantMSE / TurboQuantProd, a Config or a Config dict (only the
    configuration is used). ``x`` is rechunked so that the last axis is one chunk.
    """
    import dask.array as da

    config = _config_of(quantizer)
    x = da.asarray(x)
    if x.ndim < 1 or x.shape[-1] != config.dim:
        raise ValueError(f"x: expected last axis of length dim={config.dim}, got shape {x.shape}")
    if x.chunks[-1] != (config.dim,):
        x = x.rechunk({x.ndim - 1: -1})
    widths = _widths(config)
    packed = x.map_blocks(_quantize_block, _items(config), backend, dtype=np.uint8,
                          chunks=x.chunks[:-1] + ((sum(widths),),), meta=np.empty((0,) * x.ndim, np.uint8))
    cuts = np.cumsum([0] + widths)
    fields = [packed[..., cuts[i]:cuts[i + 1]] for i in range(len(widths))]
    nd = np.dtype(config.norm_dtype)
    as_norm = lambda f: f.view(nd)[..., 0]  # noqa: E731
    if config.kind == "prod":
        mse = MSECodes(fields[0], as_norm(fields[1]), config.mse_config)
        return ProdCodes(mse, fields[2], as_norm(fields[3]), config)
    return MSECodes(fields[0], as_norm(fields[1]), config)


def dequantize(codes, *, backend: str = "numba"):
    """Lazily decode MSECodes / ProdCodes holding dask (or NumPy) arrays: float32 (..., dim)."""
    import dask.array as da

    config = codes.config
    nd = np.dtype(config.norm_dtype)
    as_bytes = lambda a: da.asarray(a).astype(nd)[..., None].view(np.uint8)  # noqa: E731
    if config.kind == "prod":
        parts = [da.asarray(codes.mse.indices), as_bytes(codes.mse.norms), da.asarray(codes.signs),
                 as_bytes(codes.residual_norms)]
    else:
        parts = [da.asarray(codes.indices), as_bytes(codes.norms)]
    lead_chunks = parts[0].chunks[:-1]
    parts = [p.rechunk(lead_chunks + (-1,)) for p in parts]
    packed = da.concatenate(parts, axis=-1).rechunk({parts[0].ndim - 1: -1})
    return packed.map_blocks(_dequantize_block, _items(config), backend, dtype=np.float32,
                             chunks=packed.chunks[:-1] + ((config.dim,),),
                             meta=np.empty((0,) * packed.ndim, np.float32))


def compute(codes, **kwargs):
    """Compute every array of lazily built codes at once; returns NumPy-backed codes."""
    import dask

    if isinstance(codes, ProdCodes):
        a, b, c, d = dask.compute(codes.mse.indices, codes.mse.norms, codes.signs, codes.residual_norms, **kwargs)
        return ProdCodes(MSECodes(a, b, codes.mse.config), c, d, codes.config)
    a, b = dask.compute(codes.indices, codes.norms, **kwargs)
    return MSECodes(a, b, codes.config)
