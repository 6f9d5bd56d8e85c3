"""The shared vocabulary (differland_dist/vocabulary/): one parameter table every list derives
from, aggregation rules whose numpy and JAX paths agree, one grid geometry, and no JAX at
import."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist.errors import DifferlandError
from differland_dist.model.structures import ProcessParams
from differland_dist.vocabulary import aggregation as A
from differland_dist.vocabulary import parameters as P
from differland_dist.vocabulary import streams as S
from differland_dist.vocabulary.grid import fit_grid, to_grid


def test_every_parameter_list_derives_from_the_one_table():
    assert len(P.PARAMETERS) == 40 and {b.group for b in P.PARAMETERS} == set(P.PARAMETER_GROUPS)
    assert [len(t) for t in (P.PROCESS_PARAMETERS, P.PHENOLOGY_PARAMETERS, P.POOLS)] == [31, 2, 7]
    # network-head order: process, phenology, pools
    assert P.PARAMETERS == P.PROCESS_PARAMETERS + P.PHENOLOGY_PARAMETERS + P.POOLS
    assert P.PARAM_NAMES[:33] == P.PROCESS_NAMES + P.PHENO_NAMES
    assert P.PARAM_NAMES[33:] == tuple(f"init_{n}" for n in P.POOL_NAMES)
    assert len(set(P.PARAM_NAMES)) == 40 and P.PROCESS_NAMES == ProcessParams._fields
    lo, hi = P.all_bounds()
    assert lo.shape == hi.shape == (40,) and (lo < hi).all()
    assert lo[P.PARAM_NAMES.index("init_wood")] == np.float32(P.BY_OUTPUT_NAME["init_wood"].lo)
    assert P.BY_OUTPUT_NAME["init_som"].long_name == "initial soil organic carbon"


@pytest.mark.parametrize("spy", [3, 4])
def test_annual_and_patch_rules_agree_on_numpy_and_jax(spy):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 14)).astype(np.float32)  # 14 steps: the last partial year dropped
    w = (rng.random((6, 14)) > 0.2).astype(np.float32)
    patch = np.array([0, 0, 2, 1, 2, 2])
    for fn in (A.annual_means, A.annual_weights):
        got_np, got_jax = fn(x if fn is A.annual_means else w, spy), \
            fn(jnp.asarray(x if fn is A.annual_means else w), spy)
        assert got_np.shape == (6, 14 // spy)
        np.testing.assert_allclose(np.asarray(got_jax), got_np, rtol=1e-6)
    # a year counts only when every step of it is observed
    years = A.whole_years(w, spy)
    np.testing.assert_array_equal(A.annual_weights(w, spy) > 0, years.min(axis=2) > 0)
    sums_np = A.patch_sum(x, patch, 3)
    np.testing.assert_allclose(np.asarray(A.patch_sum(jnp.asarray(x), jnp.asarray(patch), 3)),
                               sums_np, rtol=1e-6)
    np.testing.assert_allclose(sums_np[2], x[[2, 4, 5]].sum(0), rtol=1e-6)
    acc = np.ones((3, 14))  # an accumulator across blocks keeps what it held
    A.patch_sum(x.astype(np.float64), patch, 3, out=acc)
    np.testing.assert_allclose(acc, 1 + sums_np, rtol=1e-6, atol=1e-5)
    series = {"a": x, "b": 2 * x}
    np.testing.assert_allclose(A.sum_series(series, ("a", "b")), 3 * x, rtol=1e-6)


def test_the_edc_gate_is_one_row_of_the_stream_table():
    assert S.edc_gate().name == "lai"
    gate = next(s for s in S.STREAMS if s.edc_gate)
    with pytest.raises(ValueError, match="edc_gate"):
        S.check(tuple(s._replace(edc_gate=False) if s is gate else s for s in S.STREAMS))
    with pytest.raises(ValueError, match="edc_gate"):
        S.check(tuple(s._replace(edc_gate=True) for s in S.STREAMS))


def test_fit_grid_places_pixels_in_their_cells():
    row, col = np.array([0, 2, 1]), np.array([3, 0, 1])
    lat, lon = 10.0 - row * 2.0, -20.0 + col * 2.0
    g = fit_grid(lat, lon, row, col, 2.0, (4, 5))
    assert g.shape == (4, 5)
    np.testing.assert_allclose(g.lat[:3], [10, 8, 6])
    m = to_grid(np.array([1.0, 2.0, 3.0]), g)
    assert m[0, 3] == 1 and m[2, 0] == 2 and m[1, 1] == 3 and np.isnan(m).sum() == 17
    with pytest.raises(DifferlandError, match="somewhere: pixel rows/cols fall outside"):
        fit_grid(lat, lon, row, col, 2.0, (2, 5), source="somewhere")


def test_the_vocabulary_imports_no_jax():
    code = ("import sys; import differland_dist.vocabulary.parameters, differland_dist.vocabulary."
            "series, differland_dist.vocabulary.cf, differland_dist.vocabulary.grid, "
            "differland_dist.vocabulary.aggregation, differland_dist.vocabulary.labels; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
