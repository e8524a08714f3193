"""Numba kernels read the Plan they are given: a plan with given arrays (Plan.with_data: a
Haar Π, a QJL S or a codebook shipped as data) runs with those arrays, not with the cached
tables of the derived plan of the same Config (_plan.kernel_plan, backends/_plan_cache.py)."""

from __future__ import annotations

import pytest

from tqref.backends.numba_cpu import NumbaBackend

from _given_plans import check_given_codebook, check_given_haar_matrix, check_given_projection

NB = NumbaBackend()


@pytest.mark.parametrize("d", [16, 24])
def test_a_given_haar_matrix_is_used(d):
    check_given_haar_matrix(NB, d)


def test_a_given_codebook_is_used():
    check_given_codebook(NB)


def test_a_given_projection_is_used():
    check_given_projection(NB)
