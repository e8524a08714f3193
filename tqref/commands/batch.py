"""``tqref quantize`` / ``tqref dequantize``: stream .npy files through a quantizer.

Inputs larger than memory work: the input is memory-mapped (``np.load(mmap_mode="r")``)
and processed in chunks of rows; outputs are written chunk by chunk (a batch file,
tqref/io.py, or a .npy opened with ``open_memmap``). A progress bar goes to stderr.
"""

from __future__ import annotations

import os
import sys

import numpy as np

DEFAULT_CHUNK_BYTES = 64 << 20  # float32 input bytes per chunk


def _chunk_rows(requested, dim: int) -> int:
    if requested:
        return max(1, int(requested))
    return max(1024, DEFAULT_CHUNK_BYTES // (4 * dim))


def _release(arr, row_start: int, row_stop: int, flush: bool = False) -> None:
    """Drop the pages of rows [row_start, row_stop) of a memory-mapped .npy from this process
    (flushing them first for an output), so resident memory stays about one chunk whatever
    the file size. Best effort: silently does nothing where mmap.madvise is unavailable."""
    import mmap

    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.itemsize
    base = int(getattr(arr, "offset", 0))
    page = mmap.PAGESIZE
    start = (base + row_start * row_bytes) // page * page
    stop = (base + row_stop * row_bytes) // page * page
    if stop <= start:
        return
    try:
        if flush:
            mm.flush(start, stop - start)
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
    except (OSError, ValueError):
        pass


def _fail(msg: str) -> int:
    print(f"tqref: error: {msg}", file=sys.stderr)
    return 2


def quantize_file(src, dst, *, bits: int, prod: bool = False, seed: int = 0, rotation: str = "hadamard",
                  codebook: str = "beta", projection: str = "gaussian", norm_dtype: str = "float32",
                  backend: str = "reference", chunk_rows=None, show_progress: bool = True) -> dict:
    """Quantize the float .npy ``src`` (..., d) into the batch file ``dst``; returns a summary."""
    import tqref
    from tqref.io import BatchWriter

    from .._progress import progress

    x = np.load(src, mmap_mode="r", allow_pickle=False)
    if x.ndim < 1 or x.shape[-1] < 2:
        raise ValueError(f"{src}: expected an array (..., dim) with dim >= 2, got shape {x.shape}")
    dim = int(x.shape[-1])
    lead = tuple(int(s) for s in x.shape[:-1])
    rows = x.reshape(-1, dim) if x.ndim != 2 else x
    common = dict(seed=seed, rotation=rotation, codebook=codebook, norm_dtype=norm_dtype, backend=backend)
    q = (tqref.TurboQuantProd(dim, bits, projection=projection, **common) if prod
         else tqref.TurboQuantMSE(dim, bits, **common))
    step = _chunk_rows(chunk_rows, dim)
    n = rows.shape[0]
    with BatchWriter(dst, q.config, lead) as w:
        for start in progress(range(0, n, step), "quantize", enabled=show_progress):
            stop = min(n, start + step)
            try:
                codes = q.quantize(np.asarray(rows[start:stop]))
            except ValueError as exc:
                raise ValueError(f"{src}: rows {start}..{stop - 1}: {exc}") from None
            _release(x.reshape(-1, dim) if x.ndim != 2 else x, start, stop)
            if prod:
                w.write("indices", start, codes.mse.indices)
                w.write("norms", start, codes.mse.norms)
                w.write("signs", start, codes.signs)
                w.write("residual_norms", start, codes.residual_norms)
            else:
                w.write("indices", start, codes.indices)
                w.write("norms", start, codes.norms)
    return {"rows": n, "dim": dim, "config": q.config.to_dict(), "bytes": os.path.getsize(dst)}


def dequantize_file(src, dst, *, backend: str = "reference", chunk_rows=None, show_progress: bool = True,
                    verify: bool = True) -> dict:
    """Decode the batch file ``src`` into a float32 .npy ``dst`` of the original shape."""
    from tqref.io import BatchFile
    from tqref.quantizers import from_config

    from .._progress import progress

    f = BatchFile(src, verify=verify)
    c = f.config
    q = from_config(c, backend=backend)
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=np.float32, shape=f.lead_shape + (c.dim,))
    flat = out.reshape(-1, c.dim)
    step = _chunk_rows(chunk_rows, c.dim)
    for start in progress(range(0, f.rows, step), "dequantize", enabled=show_progress):
        stop = min(f.rows, start + step)
        flat[start:stop] = q.dequantize(f.codes(start, stop))
        _release(out.reshape(-1, c.dim) if out.ndim != 2 else out, start, stop, flush=True)
    out.flush()
    del out, flat
    return {"rows": f.rows, "dim": c.dim, "config": c.to_dict()}


def run_quantize(args) -> int:
    from tqref.io import BatchFormatError

    try:
        info = quantize_file(args.input, args.output, bits=args.bits, prod=args.prod, seed=args.seed,
                             rotation=args.rotation, codebook=args.codebook, projection=args.projection,
                             norm_dtype=args.norm_dtype, backend=args.backend, chunk_rows=args.chunk_rows,
                             show_progress=not args.quiet)
    except (OSError, ValueError, RuntimeError, BatchFormatError) as exc:
        return _fail(str(exc))
    if not args.quiet:
        print(f"{info['rows']} vectors of dim {info['dim']} -> {args.output} ({info['bytes']} bytes)",
              file=sys.stderr)
    return 0


def run_dequantize(args) -> int:
    from tqref.io import BatchFormatError

    try:
        info = dequantize_file(args.input, args.output, backend=args.backend, chunk_rows=args.chunk_rows,
                               show_progress=not args.quiet)
    except (OSError, ValueError, RuntimeError, BatchFormatError) as exc:
        return _fail(str(exc))
    if not args.quiet:
        print(f"{info['rows']} vectors of dim {info['dim']} -> {args.output}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="quantize a .npy file of vectors into a batch file",
                              description="Quantize IN.npy (float16/32/64, shape (..., dim)) into the batch "
                                          "file OUT (docs/formats.md). Streams: works on inputs larger "
                                          "than memory.")
    p.add_argument("input", metavar="IN.npy")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--bits", type=int, required=True, help="bits per coordinate (mse 1-8, --prod 2-9)")
    p.add_argument("--prod", action="store_true", help="TurboQuant_prod (bits-1 mse bits + 1 QJL bit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rotation", choices=("hadamard", "haar"), default="hadamard")
    p.add_argument("--codebook", choices=("beta", "gaussian"), default="beta")
    p.add_argument("--projection", choices=("gaussian", "orthogonal", "rademacher"), default="gaussian",
                   help="QJL projection (--prod only)")
    p.add_argument("--norm-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--backend", default="reference", help="reference | numba | cuda | auto")
    p.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (default: 64 MiB of float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_quantize)

    p = subparsers.add_parser("dequantize", help="decode a batch file into a float32 .npy",
                              description="Decode the batch file IN (checksums verified first) into "
                                          "OUT.npy, float32, the original shape. Streams.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT.npy")
    p.add_argument("--backend", default="reference", help="reference | numba | cuda | auto")
    p.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (default: 64 MiB of float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_dequantize)
