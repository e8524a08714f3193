"""CUDA kernels read the Plan they are given: a plan with given arrays (Plan.with_data)
gets its own device tables, never those cached for the derived plan of its Config."""

from __future__ import annotations

from _cuda_support import load_backend

C = load_backend()

from _given_plans import check_given_codebook, check_given_haar_matrix, check_given_projection  # noqa: E402


def test_a_given_haar_matrix_is_used():
    check_given_haar_matrix(C.CudaBackend(), 24)


def test_a_given_codebook_is_used():
    check_given_codebook(C.CudaBackend(), 32)


def test_a_given_projection_is_used():
    check_given_projection(C.CudaBackend(), 32)
