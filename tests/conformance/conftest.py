"""Fixtures for the conformance tests: the shipped vector directory and a scratch copy."""

import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
VECTORS = REPO / "conformance" / "v1"


@pytest.fixture(scope="session")
def vectors() -> pathlib.Path:
    if not (VECTORS / "index.json").is_file():
        pytest.fail(f"conformance vectors missing at {VECTORS}: run python -m tqref.conformance.generate "
                    "--out conformance/v1")
    return VECTORS


@pytest.fixture
def vectors_copy(tmp_path, vectors) -> pathlib.Path:
    """A writable copy of the vector directory (for corruption tests)."""
    dst = tmp_path / "v1"
    shutil.copytree(vectors, dst)
    return dst
