"""Checks shared by the added vector families beside v1 (real-v1: tests/models/test_real_vectors.py,
norm16-v1: tests/conformance/test_norm16_vectors.py): the shipped files are what the
generator writes today, lint finds nothing, and a backend passes every file."""

from __future__ import annotations

import pathlib

import pytest

import tqref
from tqref.conformance import drift, lint, verify

REPO = pathlib.Path(__file__).resolve().parents[2]


def family_dir(name: str) -> pathlib.Path:
    """The shipped directory conformance/<name>."""
    return REPO / "conformance" / name


def assert_regenerates(directory: pathlib.Path, rendered, module: str) -> None:
    """``rendered`` (the generator's render()) equals the shipped files, else the command to rerun."""
    problems = drift.differences(directory, rendered)
    assert not problems, (f"{directory.name} drifted; regenerate with `python -m {module} --out "
                          f"conformance/{directory.name}` if intended:\n" + "\n".join(problems[:40]))


def lint_clean(directory: pathlib.Path, files: int) -> int:
    """Assert lint finds no problem in ``files`` files; returns their test count."""
    problems, count, tests = lint.lint_dir(directory)
    assert problems == [] and count == files, (problems[:10], count)
    return tests


def assert_backend_passes(directory: pathlib.Path, backend: str, files: int) -> None:
    """``backend`` passes every one of the ``files`` files (skip if it is not available here)."""
    if backend not in tqref.backends():
        pytest.skip(f"{backend} is not available")
    reports = verify.verify(directory, backend)
    assert len(reports) == files and all(r.ok for r in reports), [(r.name, r.ok) for r in reports]
