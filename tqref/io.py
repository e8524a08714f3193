"""The batch file format: quantized codes on disk (docs/formats.md "Batch file format").

Layout (all integers little-endian)::

    offset 0   magic            8 bytes  b"TQREFBAT"
    offset 8   format version   uint32   1
    offset 12  header length H  uint32   bytes of the JSON header
    offset 16  header SHA-256   32 bytes digest of the H header bytes
    offset 48  header           H bytes  UTF-8 JSON (below)
    ...        zero padding to a multiple of 64
    arrays     raw C-order bytes, each starting at a multiple of 64, in header order

Header JSON::

    {"format": "tqref-batch", "version": 1, "tqref_version": "0.1.0",
     "config": {Config fields: kind, dim, bits, seed, rotation, codebook, projection, norm_dtype},
     "lead_shape": [...],            # the input's leading axes (rows = their product)
     "rows": n,
     "arrays": [{"name": "indices", "dtype": "|u1", "shape": [n, nbytes],
                 "offset": o, "nbytes": s, "sha256": "..."}, ...]}

mse files hold ``indices`` and ``norms``; prod files ``indices``, ``norms``, ``signs`` and
``residual_norms`` (see :func:`array_layout`). No pickle anywhere: readers parse JSON and
map raw bytes. Readers check the magic, the version, the header checksum, that every array
is exactly where and what the configuration implies, the file size (truncation), and each
array's SHA-256, and raise :class:`BatchFormatError` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from .reference.plan import Config

MAGIC = b"TQREFBAT"
FORMAT_VERSION = 1
FORMAT_NAME = "tqref-batch"
ALIGN = 64
_PREAMBLE = struct.Struct("<8sII32s")  # magic, version, header length, header sha256
_PLACEHOLDER = "0" * 64
MAX_HEADER_BYTES = 1 << 20
_HASH_BLOCK = 1 << 24


class BatchFormatError(ValueError):
    """A batch file that is not one, is truncated, or was modified after it was written."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def array_layout(config: Config, rows: int) -> list:
    """[(name, numpy dtype, shape)] of the arrays a file of ``rows`` vectors holds."""
    from .quantizers import record_fields

    return [(name, dtype.newbyteorder("<"), (rows,) + row) for name, dtype, row in record_fields(config)]


def _config_from_dict(raw) -> Config:
    """Rebuild and validate a Config (through the public quantizers' checks)."""
    from .quantizers import from_config

    if not isinstance(raw, dict):
        raise BatchFormatError(f"header: expected 'config' to be an object, got {type(raw).__name__}")
    fields = {"kind", "dim", "bits", "seed", "rotation", "codebook", "projection", "norm_dtype"}
    if set(raw) != fields:
        raise BatchFormatError(f"header: expected config fields {sorted(fields)}, got {sorted(raw)}")
    try:
        return from_config(Config(**raw)).config
    except (ValueError, TypeError) as exc:
        raise BatchFormatError(f"header: invalid config: {exc}") from None


def _header_entries(config: Config, lead_shape: tuple) -> tuple:
    rows = int(np.prod(lead_shape, dtype=np.int64)) if lead_shape else 1
    return rows, array_layout(config, rows)


def _header_bytes(config, lead_shape, rows, layout, digests) -> tuple:
    """(header bytes, [array offsets], file size) for the given digests (fixed-length hex)."""
    from . import __version__

    def build(offsets):
        arrays = [
            {"name": name, "dtype": dtype.str, "shape": list(shape), "offset": off,
             "nbytes": int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, "sha256": digests[i]}
            for i, ((name, dtype, shape), off) in enumerate(zip(layout, offsets))
        ]
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tqref_version": __version__,
                  "config": config.to_dict(), "lead_shape": list(lead_shape), "rows": rows, "arrays": arrays}
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")

    # offsets depend on the header length, which depends on the offsets' digits: iterate
    offsets = [0] * len(layout)
    for _ in range(8):
        text = build(offsets)
        pos = _align(_PREAMBLE.size + len(text))
        new = []
        for name, dtype, shape in layout:
            new.append(pos)
            pos = _align(pos + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        if new == offsets:
            break
        offsets = new
    end = offsets[-1] + int(np.prod(layout[-1][2], dtype=np.int64)) * layout[-1][1].itemsize
    return build(offsets), offsets, end


class BatchWriter:
    """Write a batch file chunk by chunk (rows in increasing order for every array).

    >>> # with BatchWriter(path, config, (n,)) as w: w.write("indices", start, chunk) ...
    """

    def __init__(self, path, config: Config, lead_shape):
        self.path = os.fspath(path)
        self.config = config
        self.lead_shape = tuple(int(s) for s in lead_shape)
        self.rows, self.layout = _header_entries(config, self.lead_shape)
        text, self.offsets, self.size = _header_bytes(config, self.lead_shape, self.rows, self.layout,
                                                      [_PLACEHOLDER] * len(self.layout))
        self._hashes = [hashlib.sha256() for _ in self.layout]
        self._next = [0] * len(self.layout)
        self._tmp = self.path + ".partial"
        self._file = open(self._tmp, "wb")
        self._file.truncate(self.size)
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, name: str, start: int, chunk) -> None:
        """Store rows [start, start + len(chunk)) of array ``name`` (written in row order)."""
        i = [n for n, _, _ in self.layout].index(name)
        _, dtype, shape = self.layout[i]
        chunk = np.ascontiguousarray(chunk, dtype=dtype)
        if chunk.shape[1:] != shape[1:] or start != self._next[i] or start + len(chunk) > shape[0]:
            raise ValueError(f"{name}: expected rows from {self._next[i]} with shape (*, {shape[1:]}), "
                             f"got start {start} shape {chunk.shape}")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        data = chunk.tobytes()
        self._file.seek(self.offsets[i] + start * row_bytes)
        self._file.write(data)
        self._hashes[i].update(data)
        self._next[i] = start + len(chunk)

    def close(self) -> None:
        if self._closed:
            return
        missing = [n for (n, _, s), k in zip(self.layout, self._next) if k != s[0]]
        if missing:
            self.abort()
            raise ValueError(f"batch file incomplete: arrays {missing} not fully written")
        digests = [h.hexdigest() for h in self._hashes]
        text, offsets, size = _header_bytes(self.config, self.lead_shape, self.rows, self.layout, digests)
        assert offsets == self.offsets and size == self.size
        self._file.seek(0)
        self._file.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(text), hashlib.sha256(text).digest()))
        self._file.write(text)
        self._file.close()
        os.replace(self._tmp, self.path)
        self._closed = True

    def abort(self) -> None:
        if not self._closed:
            self._file.close()
            if os.path.exists(self._tmp):
                os.remove(self._tmp)
            self._closed = True


class BatchFile:
    """A batch file opened for reading: ``config``, ``lead_shape``, ``rows`` and read-only
    memory-mapped ``arrays`` (name -> ndarray). ``verify=True`` checks every array's SHA-256
    before returning (one pass over the file)."""

    def __init__(self, path, verify: bool = True):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            pre = f.read(_PREAMBLE.size)
            if len(pre) < _PREAMBLE.size:
                if not MAGIC.startswith(pre[:8]) or len(pre) < 8:
                    raise BatchFormatError(f"{self.path}: not a tqref batch file (missing magic {MAGIC!r})")
                raise BatchFormatError(f"{self.path}: truncated: file ends inside the {_PREAMBLE.size}-byte preamble")
            magic, version, hlen, hsum = _PREAMBLE.unpack(pre)
            if magic != MAGIC:
                raise BatchFormatError(f"{self.path}: not a tqref batch file (magic {magic!r}, expected {MAGIC!r})")
            if version != FORMAT_VERSION:
                raise BatchFormatError(f"{self.path}: format version {version} is not supported "
                                       f"(this tqref reads version {FORMAT_VERSION})")
            if hlen > MAX_HEADER_BYTES:
                raise BatchFormatError(f"{self.path}: header length {hlen} exceeds {MAX_HEADER_BYTES} bytes")
            text = f.read(hlen)
        if len(text) < hlen:
            raise BatchFormatError(f"{self.path}: truncated: file ends inside the {hlen}-byte header")
        if hashlib.sha256(text).digest() != hsum:
            raise BatchFormatError(f"{self.path}: header checksum mismatch (file corrupted or modified)")
        try:
            header = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BatchFormatError(f"{self.path}: header is not valid JSON: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
            raise BatchFormatError(f"{self.path}: header does not describe a {FORMAT_NAME} v{FORMAT_VERSION} file")
        self.config = _config_from_dict(header.get("config"))
        lead = header.get("lead_shape")
        if not isinstance(lead, list) or not all(isinstance(s, int) and s >= 0 for s in lead):
            raise BatchFormatError(f"{self.path}: header: expected lead_shape to be a list of integers >= 0, got {lead!r}")
        self.lead_shape = tuple(lead)
        rows, layout = _header_entries(self.config, self.lead_shape)
        if header.get("rows") != rows:
            raise BatchFormatError(f"{self.path}: header: rows {header.get('rows')!r} disagree with lead_shape {lead}")
        expect_text, offsets, end = _header_bytes(self.config, self.lead_shape, rows, layout,
                                                  [_PLACEHOLDER] * len(layout))
        arrays = header.get("arrays")
        if not isinstance(arrays, list) or len(arrays) != len(layout):
            raise BatchFormatError(f"{self.path}: header: expected {len(layout)} arrays for a {self.config.kind} file")
        self.rows = rows
        self.arrays = {}
        self._digests = {}
        for entry, (name, dtype, shape), off in zip(arrays, layout, offsets):
            want = {"name": name, "dtype": dtype.str, "shape": list(shape), "offset": off,
                    "nbytes": int(np.prod(shape, dtype=np.int64)) * dtype.itemsize}
            got = {k: entry.get(k) for k in want} if isinstance(entry, dict) else entry
            if got != want:
                raise BatchFormatError(f"{self.path}: header: array entry {got!r} does not match the layout "
                                       f"implied by the configuration ({want!r})")
            digest = entry.get("sha256")
            if not (isinstance(digest, str) and len(digest) == 64):
                raise BatchFormatError(f"{self.path}: header: array {name!r} has no valid sha256")
            self._digests[name] = digest
        if size < end:
            raise BatchFormatError(f"{self.path}: truncated: expected {end} bytes, found {size}")
        if size > end:
            raise BatchFormatError(f"{self.path}: {size - end} unexpected bytes after the last array")
        for (name, dtype, shape), off in zip(layout, offsets):
            if int(np.prod(shape, dtype=np.int64)) == 0:
                self.arrays[name] = np.zeros(shape, dtype)
            else:
                self.arrays[name] = np.memmap(self.path, dtype=dtype, mode="r", offset=off, shape=shape)
        if verify:
            self.verify()

    def verify(self) -> None:
        """Recompute every array's SHA-256; raise BatchFormatError on a mismatch."""
        for name, arr in self.arrays.items():
            h = hashlib.sha256()
            flat = np.asarray(arr).reshape(-1).view(np.uint8) if arr.size else np.zeros(0, np.uint8)
            for start in range(0, flat.size, _HASH_BLOCK):
                h.update(flat[start : start + _HASH_BLOCK].tobytes())
            if h.hexdigest() != self._digests[name]:
                raise BatchFormatError(f"{self.path}: array {name!r} checksum mismatch (file corrupted or modified)")

    def codes(self, start: int = 0, stop: int | None = None):
        """Rows [start, stop) as MSECodes / ProdCodes (flat, shape (rows,))."""
        from .quantizers import MSECodes, ProdCodes

        stop = self.rows if stop is None else stop
        a = {k: np.asarray(v[start:stop]) for k, v in self.arrays.items()}
        if self.config.kind == "mse":
            return MSECodes(a["indices"], a["norms"].astype(self.config.norm_dtype), self.config)
        mse = MSECodes(a["indices"], a["norms"].astype(self.config.norm_dtype), self.config.mse_config)
        return ProdCodes(mse, a["signs"], a["residual_norms"].astype(self.config.norm_dtype), self.config)


def save_codes(path, codes) -> None:
    """Write in-memory MSECodes / ProdCodes (any leading shape) to a batch file."""
    lead = tuple(codes.shape)
    with BatchWriter(path, codes.config, lead) as w:
        if codes.config.kind == "prod":
            w.write("indices", 0, codes.mse.indices.reshape(-1, codes.mse.indices.shape[-1]))
            w.write("norms", 0, np.asarray(codes.mse.norms).reshape(-1))
            w.write("signs", 0, codes.signs.reshape(-1, codes.signs.shape[-1]))
            w.write("residual_norms", 0, np.asarray(codes.residual_norms).reshape(-1))
        else:
            w.write("indices", 0, codes.indices.reshape(-1, codes.indices.shape[-1]))
            w.write("norms", 0, np.asarray(codes.norms).reshape(-1))


def load_codes(path, verify: bool = True):
    """Read a batch file into memory as MSECodes / ProdCodes with the stored leading shape."""
    import dataclasses

    f = BatchFile(path, verify=verify)
    flat = f.codes()
    lead = f.lead_shape

    def shaped(a):
        a = np.array(a)
        return a.reshape(lead + a.shape[1:])

    if f.config.kind == "mse":
        return dataclasses.replace(flat, indices=shaped(flat.indices), norms=shaped(flat.norms))
    mse = dataclasses.replace(flat.mse, indices=shaped(flat.mse.indices), norms=shaped(flat.mse.norms))
    return dataclasses.replace(flat, mse=mse, signs=shaped(flat.signs), residual_norms=shaped(flat.residual_norms))
