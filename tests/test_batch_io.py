"""Batch files (tqref/io.py) and the streaming ``tqref quantize`` / ``tqref dequantize``."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

import tqref
from tqref import io as tio
from tqref.cli import main

import reference64


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("quantizer", [
    tqref.TurboQuantMSE(80, 3, seed=4),
    tqref.TurboQuantMSE(33, 1, seed=4, norm_dtype="float16", rotation="haar"),
    tqref.TurboQuantProd(64, 4, seed=1, projection="rademacher"),
])
def test_round_trip_in_memory(tmp_path, quantizer):
    x = _x((4, 5, quantizer.dim))
    codes = quantizer.quantize(x)
    path = tmp_path / "codes.tqb"
    tio.save_codes(path, codes)
    back = tio.load_codes(path)
    assert back.config == codes.config and back.shape == codes.shape
    np.testing.assert_array_equal(quantizer.dequantize(back), quantizer.dequantize(codes))


def test_empty_batch(tmp_path):
    q = tqref.TurboQuantMSE(16, 2)
    codes = q.quantize(np.zeros((0, 16), np.float32))
    tio.save_codes(tmp_path / "e.tqb", codes)
    assert tio.load_codes(tmp_path / "e.tqb").indices.shape == (0, 4)


@pytest.fixture
def saved(tmp_path):
    q = tqref.TurboQuantProd(48, 3, seed=2)
    path = tmp_path / "c.tqb"
    tio.save_codes(path, q.quantize(_x((50, 48))))
    return path


def _rewrite_header(path, edit):
    """Apply ``edit`` to the JSON header and store it with a *valid* header checksum."""
    data = bytearray(path.read_bytes())
    magic, version, hlen, _ = struct.unpack_from("<8sII32s", data)
    header = json.loads(bytes(data[48:48 + hlen]))
    edit(header)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert len(text) <= hlen
    text = text + b" " * (hlen - len(text))
    data[:48] = struct.pack("<8sII32s", magic, version, hlen, hashlib.sha256(text).digest())
    data[48:48 + hlen] = text
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated: expected"),
    (lambda p: p.write_bytes(p.read_bytes()[:30]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "unexpected bytes"),
    (lambda p: p.write_bytes(b"NOTTQREF" + p.read_bytes()[8:]), "not a tqref batch file"),
    (lambda p: p.write_bytes(p.read_bytes()[:8] + struct.pack("<I", 7) + p.read_bytes()[12:]), "format version 7"),
    (lambda p: p.write_bytes(p.read_bytes()[:60] + b"X" + p.read_bytes()[61:]), "header checksum mismatch"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])), "'residual_norms' checksum"),
    (lambda p: _rewrite_header(p, lambda h: h["config"].update(bits=4)), "does not match the layout"),
    (lambda p: _rewrite_header(p, lambda h: h["config"].update(rotation="wavelet")), "invalid config"),
    (lambda p: _rewrite_header(p, lambda h: h.update(rows=49)), "rows 49"),
    (lambda p: _rewrite_header(p, lambda h: h["arrays"][0].update(offset=64)), "does not match the layout"),
])
def test_damaged_files_are_rejected(saved, damage, message):
    damage(saved)
    with pytest.raises(tio.BatchFormatError, match=message):
        tio.load_codes(saved)


def test_cli_streams_and_matches_in_memory(tmp_path, capsys):
    x = _x((3, 37, 96), seed=5)
    np.save(tmp_path / "in.npy", x)
    src, dst, out = tmp_path / "in.npy", tmp_path / "out.tqb", tmp_path / "back.npy"
    assert main(["quantize", str(src), str(dst), "--bits", "4", "--prod", "--seed", "3",
                 "--backend", "numba", "--chunk-rows", "10"]) == 0
    assert "quantize [" in capsys.readouterr().err  # progress bar on stderr
    q = tqref.TurboQuantProd(96, 4, seed=3)
    want = q.quantize(x)
    got = tio.load_codes(dst)
    np.testing.assert_array_equal(got.mse.indices, want.mse.indices)
    np.testing.assert_array_equal(got.signs, want.signs)
    assert main(["dequantize", str(dst), str(out), "--chunk-rows", "16", "--quiet"]) == 0
    back = np.load(out)
    assert back.shape == x.shape and back.dtype == np.float32
    # prod decoding contains a BLAS matmul whose rounding depends on the chunk shape
    reference64.assert_dequantized(back, q, want, "tqref dequantize --chunk-rows 16")


def test_cli_reports_bad_input_with_rows(tmp_path, capsys):
    x = _x((30, 16))
    x[23, 4] = np.nan
    np.save(tmp_path / "in.npy", x)
    assert main(["quantize", str(tmp_path / "in.npy"), str(tmp_path / "o.tqb"), "--bits", "2",
                 "--chunk-rows", "10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "rows 20..29" in err and "NaN" in err
    assert not (tmp_path / "o.tqb").exists()


def test_cli_rejects_tampered_file(saved, tmp_path, capsys):
    data = bytearray(saved.read_bytes())
    data[-100] ^= 0xFF
    saved.write_bytes(bytes(data))
    assert main(["dequantize", str(saved), str(tmp_path / "x.npy"), "--quiet"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
