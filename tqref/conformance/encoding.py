"""Value encodings of the conformance files and the canonical JSON text.

**Tensors.** Every array (and every float, even a scalar) is an object::

    {"dtype": "float32", "shape": [3], "hex": "0000803f000000c00000c07f", "dec": ["1.0", "-2.0", "nan"]}

* ``hex`` is normative: the array's elements in row-major (C) order, each as its
  **little-endian** bytes, written as lowercase hex (two digits per byte). A scalar has
  shape ``[]`` and one element.
* ``dec`` is informative, for people: the same elements as the shortest decimal that reads
  back to the same value of that dtype (floats as strings, so ``"nan"``, ``"inf"``, ``"-0.0"``
  fit; integers as JSON numbers, except uint64/int64 as decimal strings because JSON numbers
  lose precision above 2**53). It is omitted for arrays of more than :data:`DEC_LIMIT`
  elements (the shipped matrices).

**Canonical text.** Objects are written one member per line with two-space indentation, in
the order the generator built them; arrays of scalars on one line; a final newline. The
linter re-serialises every file and requires byte equality, so hand edits are caught.
"""

from __future__ import annotations

import json
import math

import numpy as np

#: dtype names used in the files -> numpy little-endian dtypes
DTYPES = {
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
    "int8": "<i1",
    "uint8": "<u1",
    "uint16": "<u2",
    "int32": "<i4",
    "uint32": "<u4",
    "int64": "<i8",
    "uint64": "<u8",
}
FLOAT_DTYPES = ("float16", "float32", "float64")
DEC_LIMIT = 1024


def _dec_float(value, dtype: str) -> str:
    """Shortest round-trip decimal of one float of ``dtype`` (numpy's repr rules)."""
    scalar = np.dtype(DTYPES[dtype]).type(value)
    if np.isnan(scalar):
        return "nan"
    if np.isinf(scalar):
        return "inf" if scalar > 0 else "-inf"
    if dtype == "float64":
        return repr(float(scalar))
    return str(scalar)


def decimals(array: np.ndarray, dtype: str) -> list:
    """The ``dec`` list of an array (flattened, row-major)."""
    flat = np.asarray(array).reshape(-1)
    if dtype in FLOAT_DTYPES:
        return [_dec_float(v, dtype) for v in flat]
    if dtype in ("uint64", "int64"):
        return [str(int(v)) for v in flat]
    return [int(v) for v in flat]


def tensor(array, dtype: str, *, dec: bool | None = None) -> dict:
    """Encode ``array`` (cast exactly to ``dtype``) as a tensor object."""
    np_dtype = np.dtype(DTYPES[dtype])
    arr = np.asarray(array)
    cast = arr.astype(np_dtype)
    if arr.dtype.kind == "f" and np_dtype.kind == "f" and arr.dtype.itemsize > np_dtype.itemsize:
        # a narrowing cast is allowed only where it is exact (the generator never rounds here)
        back = cast.astype(arr.dtype)
        same = (back == arr) | (np.isnan(back) & np.isnan(arr))
        if not np.all(same):
            raise ValueError(f"tensor: narrowing {arr.dtype} to {dtype} would round")
    out = {"dtype": dtype, "shape": [int(s) for s in cast.shape], "hex": np.ascontiguousarray(cast).tobytes().hex()}
    if dec is None:
        dec = cast.size <= DEC_LIMIT
    if dec:
        out["dec"] = decimals(cast, dtype)
    return out


def decode(obj: dict) -> np.ndarray:
    """Decode a tensor object to a numpy array of its dtype and shape (native byte order)."""
    dtype = obj["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"tensor: unknown dtype {dtype!r}")
    np_dtype = np.dtype(DTYPES[dtype])
    raw = bytes.fromhex(obj["hex"])
    shape = tuple(obj["shape"])
    count = math.prod(shape)
    if len(raw) != count * np_dtype.itemsize:
        raise ValueError(
            f"tensor: hex holds {len(raw)} bytes, expected {count * np_dtype.itemsize} for "
            f"shape {list(shape)} of {dtype}"
        )
    return np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("=")).reshape(shape)


def hex_of(array, dtype: str) -> str:
    """Little-endian hex of ``array`` as ``dtype`` (the protocol's tensor encoding)."""
    return np.ascontiguousarray(np.asarray(array).astype(DTYPES[dtype])).tobytes().hex()


def from_hex(text: str, dtype: str, shape=None) -> np.ndarray:
    """Inverse of :func:`hex_of`; ``shape`` None gives a flat array."""
    np_dtype = np.dtype(DTYPES[dtype])
    raw = bytes.fromhex(text)
    if len(raw) % np_dtype.itemsize:
        raise ValueError(f"hex length {len(raw)} bytes is not a multiple of {np_dtype.itemsize} ({dtype})")
    arr = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    return arr if shape is None else arr.reshape(shape)


def u64_text(value: int) -> str:
    """A uint64 scalar (seeds, stream offsets) as ``0x`` + 16 lowercase hex digits."""
    value = int(value)
    if not 0 <= value < 2**64:
        raise ValueError(f"u64_text: {value} is outside [0, 2**64)")
    return f"0x{value:016x}"


def parse_u64(text: str) -> int:
    if not isinstance(text, str) or not text.startswith("0x") or len(text) != 18:
        raise ValueError(f"expected a uint64 as '0x' + 16 hex digits, got {text!r}")
    return int(text, 16)


# --------------------------------------------------------------------------- canonical JSON


_encode_str = json.encoder.encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses


def _scalar(value) -> str:
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("canonical JSON: non-finite float (encode floats as tensors)")
        return repr(value)
    raise TypeError(f"canonical JSON: unsupported value {type(value).__name__}")


def dumps(obj, indent: int = 0) -> str:
    """Canonical text of ``obj`` (without the trailing newline)."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list):
        if not obj:
            return "[]"
        if all(not isinstance(v, (dict, list)) for v in obj):
            return "[" + ", ".join(_scalar(v) for v in obj) + "]"
        items = [pad + dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return _scalar(obj)


def canonical_text(obj) -> str:
    """The exact file content for ``obj``: canonical text plus a newline."""
    return dumps(obj) + "\n"
