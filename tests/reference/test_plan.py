"""Plan: the complete, immutable data contract of one configuration (reference/plan.py)."""

import numpy as np
import pytest

from tqref import TurboQuantMSE
from tqref.backends import available
from tqref.reference import codebook as cb
from tqref.reference import mse, rotation
from tqref.reference.plan import Config, Plan

CONFIGS = [Config("mse", 16, 3, 5, "hadamard"), Config("mse", 20, 2, 5, "haar"),
           Config("prod", 24, 3, 7, "hadamard", projection="gaussian")]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_from_config_holds_every_array_read_only(config):
    plan = Plan.from_config(config)
    arrays = {"centroids": plan.codebook.centroids, "thresholds": plan.thresholds}
    if config.rotation == "haar":
        assert plan.signs is None
        arrays["matrix"] = plan.matrix
        assert np.array_equal(plan.matrix, rotation.haar_matrix(config.dim, config.seed))
    else:
        assert plan.matrix is None
        arrays["signs"] = plan.signs
        assert plan.signs.shape == (len(rotation.hadamard_steps(config.dim)), config.dim)
    if config.kind == "prod":
        arrays["projection"] = plan.projection
        assert plan.qjl_scale > 0
    for name, array in arrays.items():
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    assert plan.alpha == cb.shrinkage(plan.codebook)
    assert np.array_equal(plan.centroids, plan.codebook.centroids_f32)
    assert not plan.given


@pytest.mark.parametrize("config", CONFIGS[:2], ids=str)
def test_plan_rotations_are_the_seeded_rotations(config):
    plan = Plan.from_config(config)
    x = np.random.default_rng(1).standard_normal((5, config.dim)).astype(np.float32)
    assert np.array_equal(plan.rotate(x), rotation.rotate(x, config.rotation, config.seed))
    assert np.array_equal(plan.rotate_inverse(x), rotation.rotate_inverse(x, config.rotation, config.seed))


def test_with_data_gives_a_new_plan_and_keeps_the_derived_one():
    config = Config("mse", 8, 2, 1, "haar")
    plan = Plan.from_config(config)
    given = plan.with_data(matrix=np.eye(8))
    assert given.given and given is not plan
    assert given.matrix.dtype == np.float32 and not given.matrix.flags.writeable
    x = np.arange(1, 9, dtype=np.float32)[None]
    assert np.array_equal(given.rotate(x), x)
    assert Plan.from_config(config) is plan and not np.array_equal(plan.matrix, np.eye(8))
    book = cb.lloyd_max(2, 8)
    wide = given.with_data(codebook=type(book)(2, 8, "beta", book.centroids * 2, book.boundaries * 2, 0.0))
    assert wide.alpha == cb.shrinkage(wide.codebook) and wide.alpha != plan.alpha
    assert plan.with_data() is plan


def test_with_data_checks_what_it_is_given():
    plan = Plan.from_config(Config("mse", 8, 2, 1, "hadamard"))
    with pytest.raises(ValueError, match=r"matrix: expected None for rotation='hadamard'"):
        plan.with_data(matrix=np.eye(8))
    with pytest.raises(ValueError, match=r"projection: expected None for an mse plan"):
        plan.with_data(projection=np.eye(8))
    haar = Plan.from_config(Config("mse", 8, 2, 1, "haar"))
    with pytest.raises(ValueError, match=r"matrix: expected shape \(8, 8\), got \(7, 8\)"):
        haar.with_data(matrix=np.zeros((7, 8)))


def test_a_quantizer_runs_a_given_plan_on_the_reference_only():
    plan = Plan.from_config(Config("mse", 8, 2, 1, "haar")).with_data(matrix=np.eye(8))
    q = TurboQuantMSE.from_plan(plan)
    assert q.plan is plan
    x = np.linspace(-1, 1, 8, dtype=np.float32)[None]
    codes = q.quantize(x)
    unit, _ = mse.split_norm(x)
    expected = cb.nearest_index(unit, plan.thresholds)  # Π = I
    assert np.array_equal(q.dequantize(codes), plan.centroids[expected] * codes.norms[:, None])
    for backend in [b for b in available() if b != "reference"]:  # every backend runs the given plan
        other = TurboQuantMSE.from_plan(plan, backend=backend).quantize(x)
        assert np.array_equal(other.indices, codes.indices) and np.array_equal(other.norms, codes.norms)
    with pytest.raises(ValueError, match="plan: expected a mse Plan"):
        TurboQuantMSE.from_plan(Plan.from_config(Config("prod", 8, 2, 1, projection="gaussian")))
