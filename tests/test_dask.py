"""tqref.dask on a dask.distributed LocalCluster (skipped when dask is not installed)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import tqref  # noqa: E402
import tqref.dask as tqd  # noqa: E402
import reference64  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("quantizer", [
    tqref.TurboQuantMSE(80, 3, seed=2),
    tqref.TurboQuantProd(40, 4, seed=2, rotation="haar", norm_dtype="float16"),
])
def test_chunked_equals_whole(client, quantizer):
    x = np.random.default_rng(0).standard_normal((3, 500, quantizer.dim)).astype(np.float32)
    dx = da.from_array(x, chunks=(2, 170, 16))  # the last axis is rechunked whole
    lazy = tqd.quantize(dx, quantizer)
    got, want = tqd.compute(lazy), quantizer.quantize(x)
    if isinstance(want, tqref.ProdCodes):
        pairs = [(got.mse.indices, want.mse.indices), (got.mse.norms, want.mse.norms),
                 (got.signs, want.signs), (got.residual_norms, want.residual_norms)]
    else:
        pairs = [(got.indices, want.indices), (got.norms, want.norms)]
    for a, b in pairs:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    decoded = tqd.dequantize(lazy).compute()
    reference64.assert_dequantized(decoded, quantizer, want, "dask dequantize")


def test_only_the_config_travels():
    """The task graph holds the Config, not the d×d Haar matrix (256 KiB at d = 256)."""
    q = tqref.TurboQuantMSE(256, 2, rotation="haar")
    lazy = tqd.quantize(da.zeros((64, 256), chunks=(32, 256), dtype=np.float32), q)
    graph = dict(lazy.indices.__dask_graph__())
    assert len(pickle.dumps(graph)) < 20_000


def test_bad_dimension():
    with pytest.raises(ValueError, match="dim=16"):
        tqd.quantize(da.zeros((4, 8), dtype=np.float32), tqref.TurboQuantMSE(16, 2))
