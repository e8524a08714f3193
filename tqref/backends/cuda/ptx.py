"""PTX inspection of the normative kernels (no GPU needed: ``numba.cuda.compile_ptx``).

:func:`normative_signatures` lists, for a representative configuration, every kernel whose
float results must match the reference bit for bit, with a Numba signature to compile it
for compute capability 9.0. :func:`fma_lines` returns the PTX lines that fuse a multiply
and an add (``fma.*``, ``mad.*`` on floats); :func:`contractible_lines` the float ``add``,
``sub`` and ``mul`` without an explicit rounding modifier, which ptxas may still fuse into
an FMA. Both must be empty for a normative kernel (tests/backends/test_cuda_ptx.py).

Run ``python -m tqref.backends.cuda.ptx`` for a report (kernel, PTX lines, fma count,
contractible count, local-memory bytes).
"""

from __future__ import annotations

import re

from numba import types as nt

_FMA = re.compile(r"^\s*(fma|mad)(\.[a-z0-9]+)*\.f(16|32|64)\b")
_CONTRACTIBLE = re.compile(r"^\s*(add|sub|mul)(\.(ftz|sat))*\.f(32|64)\b")
_LOCAL = re.compile(r"\.local\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\]")

f32_2d = nt.float32[:, :]
f32_1d = nt.float32[:]
u8_2d = nt.uint8[:, :]
u8_4d = nt.uint8[:, :, :, :]
f32_3d = nt.float32[:, :, :]
f32_4d = nt.float32[:, :, :, :]
i32_1d = nt.int32[:]
i64 = nt.int64
f32 = nt.float32


def normative_signatures(d: int = 128, bits: int = 3, d_odd: int = 96):
    """[(name, python function, signature)] of the normative kernels at one configuration."""
    from . import estimators, mse, prod

    out = []
    _, fn = mse.lane_quantize_kernel(d, bits, 128)
    out.append(("mse.lane_quantize", fn, (f32_2d, i64, f32_2d, f32, f32_1d, u8_2d, f32_1d)))
    _, fn = mse.lane_dequantize_kernel(d, bits, 128)
    out.append(("mse.lane_dequantize", fn, (u8_2d, f32_1d, i64, f32_2d, f32, f32_1d, f32_2d)))
    for rot in ("hadamard", "haar"):
        _, fn = mse.warp_quantize_kernel(d_odd, bits, rot, 4)
        out.append((f"mse.warp_quantize[{rot}]", fn,
                    (f32_2d, i64, f32_2d, i32_1d, f32, f32_2d, f32_1d, u8_2d, f32_1d)))
        _, fn = mse.warp_dequantize_kernel(d_odd, bits, rot, 4)
        out.append((f"mse.warp_dequantize[{rot}]", fn,
                    (u8_2d, f32_1d, i64, f32_2d, i32_1d, f32, f32_2d, f32_1d, f32_2d)))
        _, fn = prod.warp_quantize_kernel(d_odd, bits - 1, rot, 4)
        out.append((f"prod.warp_quantize[{rot}]", fn,
                    (f32_2d, i64, f32_2d, i32_1d, f32, f32_2d, f32_1d, f32_1d, f32_2d, u8_2d, f32_1d, u8_2d, f32_1d)))
        _, fn = estimators.rotate_kernel(d_odd, rot, 4, False)
        out.append((f"estimators.rotate[{rot}]", fn, (f32_2d, i64, f32_2d, i32_1d, f32, f32_2d, f32_2d)))
    _, fn = estimators.matvec_kernel(d_odd, 4)
    out.append(("estimators.matvec", fn, (f32_2d, i64, f32_2d, i32_1d, f32, f32_2d, f32_2d)))
    return out


def compile_ptx(fn, sig, cc=(9, 0)) -> str:
    from numba import cuda

    ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
    return ptx


def fma_lines(ptx: str) -> list:
    return [ln.strip() for ln in ptx.splitlines() if _FMA.match(ln)]


def contractible_lines(ptx: str) -> list:
    return [ln.strip() for ln in ptx.splitlines() if _CONTRACTIBLE.match(ln)]


def local_bytes(ptx: str) -> int:
    return sum(int(m.group(1)) for m in _LOCAL.finditer(ptx))


def report() -> list:
    """[{name, lines, fma, contractible, local_bytes}] for every normative kernel."""
    rows = []
    for name, fn, sig in normative_signatures():
        ptx = compile_ptx(fn, sig)
        rows.append({"name": name, "lines": len(ptx.splitlines()), "fma": fma_lines(ptx),
                     "contractible": contractible_lines(ptx), "local_bytes": local_bytes(ptx)})
    return rows


def main(argv=None) -> None:  # pragma: no cover - a report for people (or --json for tests)
    import json
    import sys

    rows = report()
    if "--json" in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps(rows))
        return
    for r in rows:
        print(f"{r['name']:32s} lines={r['lines']:6d} fma={len(r['fma'])} "
              f"contractible={len(r['contractible'])} local_bytes={r['local_bytes']}")


if __name__ == "__main__":  # pragma: no cover
    main()
