"""Named labels (issue 12, point 2): the :class:`Labels` pytree, its published-layout boundary,
JAX transformations, the time split, and the loss on it equal to the loss on the packed array."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist.vocabulary import streams as S
from differland_dist.distributed.shard import pad_patch
from differland_dist.errors import DataValidationError, DifferlandError
from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import TERMS, LossConfig, loss_from_x
from differland_dist.model.config import PARITY_MODEL
from differland_dist.model.structures import Forcing
from differland_dist.network import NetworkOutputs

#: The published loss's label columns (``loss_fn_with_edc`` of JianingFang/DifferLand_Global),
#: written out independently of the stream table: stream -> (value column, weight column).
PUBLISHED_COLUMNS = {
    "sif": (0, 1), "nbe": (2, 3), "lai": (4, 5), "ewt": (6, 7), "biomass": (8, 9),
    "fire": (10, 11), "som": (12, 13), "vod": (14, 15), "gpp_flux": (16, 17),
    "reco_flux": (18, 19), "et_flux": (20, 21), "et_gleam": (22, 23),
}


@pytest.mark.parametrize("case", ["golden_monthly", "golden_daily"])
def test_published_round_trip_and_columns_by_name(case, request):
    g = request.getfixturevalue(case)
    arr = g["labels"]
    lab = Labels.from_published(arr)
    assert set(lab.streams) == set(PUBLISHED_COLUMNS) and lab.time_test is None
    for name, (cv, cw) in PUBLISHED_COLUMNS.items():
        value, weight = lab.stream(name)
        assert np.array_equal(value, arr[..., cv]) and np.array_equal(weight, arr[..., cw]), name
    back = lab.to_published()
    assert back.dtype == arr.dtype and np.array_equal(back, arr)
    # the same with JAX arrays (the published layout inside a program)
    jl = Labels.from_published(jnp.asarray(arr))
    assert isinstance(jl.to_published(), jax.Array)
    assert np.array_equal(np.asarray(jl.to_published()), arr)
    assert lab.shape == arr.shape[:-1] and lab.nbytes == arr.nbytes


def test_published_layout_of_wrong_width_is_refused():
    with pytest.raises(DataValidationError, match=r"labels: shape \(3, 4, 22\), expected \(\.\.\., 24\)"):
        Labels.from_published(np.zeros((3, 4, 22), np.float32))


def test_from_observations_masks_gaps_and_broadcasts_static():
    P, T = 3, 4
    lai = np.array([[1, np.nan, 3, 4]] * P, np.float32)
    lai_w = np.array([[1, 1, 0, 2]] * P, np.float32)
    som = np.array([5.0, np.nan, 7.0], np.float32)          # static (P,)
    lab = Labels.from_observations({"lai": lai, "som": som},
                                   {"lai": lai_w, "som": np.ones(P, np.float32)}, P, T)
    assert lab.shape == (P, T) and all(v.dtype == np.float32 for v in lab.value.values())
    np.testing.assert_array_equal(lab.value["lai"][0], [1, 0, 0, 4])   # gap, zero weight -> 0
    np.testing.assert_array_equal(lab.weight["lai"][0], [1, 0, 0, 2])
    np.testing.assert_array_equal(lab.value["som"], [[5] * T, [0] * T, [7] * T])
    np.testing.assert_array_equal(lab.weight["som"], [[1] * T, [0] * T, [1] * T])
    assert not lab.weight["sif"].any() and lab.value["sif"].shape == (P, T)  # absent: off
    with pytest.raises(DifferlandError, match=r"unknown stream\(s\) \['lia'\]"):
        Labels.from_observations({"lia": lai}, {"lia": lai_w}, P, T)
    with pytest.raises(DifferlandError, match="no stream 'lia'"):
        lab.stream("lia")


def test_labels_go_through_jit_and_vmap_and_split_time():
    rng = np.random.default_rng(0)
    M, P, T = 3, 5, 6
    arr = rng.uniform(0, 2, (M, P, T, 2 * len(S.STREAMS))).astype(np.float32)
    tt = (rng.uniform(size=(M, P, T)) > 0.5).astype(np.float32)
    lab = jax.tree.map(jnp.asarray, Labels.from_published(arr, time_test=tt))
    # as many leaves as streams x 2 + the mask; the stream names are static structure
    assert len(jax.tree.leaves(lab)) == 2 * len(S.STREAMS) + 1

    @jax.jit
    def weighted(lab, test):
        lab = lab.time_split(test)
        return {k: jnp.sum(v * lab.weight[k]) for k, v in lab.value.items()}, lab

    per_member = jax.vmap(weighted, in_axes=(0, None))
    for test, keep in ((False, 1.0 - tt), (True, tt)):
        sums, split = per_member(lab, test)
        assert split.time_test is None and split.streams == lab.streams
        for st in S.STREAMS:
            c = 2 * st.label
            ref = (arr[..., c] * arr[..., c + 1] * keep).sum(axis=(1, 2))
            np.testing.assert_allclose(np.asarray(sums[st.name]), ref, rtol=1e-5)
            np.testing.assert_array_equal(np.asarray(split.weight[st.name]),
                                          arr[..., c + 1] * keep)
    # a member of a stacked Labels is the Labels of that member
    one = jax.tree.map(lambda a: a[1], lab)
    assert np.array_equal(np.asarray(one.to_published()), arr[1])


def test_padding_zeroes_weights_and_keeps_the_mask():
    rng = np.random.default_rng(1)
    n, size, T = 3, 5, 4
    arr = rng.uniform(0.5, 1.0, (n, T, 2 * len(S.STREAMS))).astype(np.float32)
    tt = np.ones((n, T), np.float32)
    pa = pad_patch(rng.normal(size=(n, T, 17)).astype(np.float32),
                   rng.normal(size=(n, 4)).astype(np.float32), Labels.from_published(arr, tt), size)
    out = pa.labels.to_published()
    assert np.array_equal(out[:n], arr) and np.array_equal(pa.valid, [1, 1, 1, 0, 0])
    assert not out[n:, :, 1::2].any() and np.array_equal(out[n:, :, 0::2], arr[[0, 0], :, 0::2])
    assert np.array_equal(pa.labels.time_test, np.ones((size, T), np.float32))
    assert pa.labels.nbytes == out.nbytes + pa.labels.time_test.nbytes  # what the cache counts


def test_loss_refuses_a_packed_array_and_an_unchosen_time_split(golden_monthly):
    g = golden_monthly
    P, T = 2, 12
    X = NetworkOutputs(*(jnp.asarray(g[k][:P]) for k in ("x_dalec", "x_pheno", "x_pools")))
    f = Forcing.from_array(jnp.asarray(g["met"][:P, :T]))
    arr = jnp.asarray(g["labels"][:P, :T])
    args = (jnp.zeros(P, jnp.int32), jnp.ones(P), 1, LossConfig(), PARITY_MODEL)
    with pytest.raises(DifferlandError, match="Labels.from_published converts"):
        loss_from_x(X, f, arr, *args)
    with pytest.raises(DifferlandError, match=r"labels.time_split\(test\)"):
        loss_from_x(X, f, Labels.from_published(arr, jnp.zeros((P, T))), *args)


@pytest.mark.parametrize("case,P,T", [("golden_monthly", None, None)])
def test_loss_on_labels_equals_loss_on_the_published_array(case, P, T, request):
    """The old path (the packed (P, T, 24) array into the compiled loss, columns sliced in the
    program) and the new one (named (P, T) arrays) give the same bits: loss, every term and
    every gradient, on the golden case with every term on (parity conventions): the whole
    monthly case (the daily one took 40 s of the suite's budget for the same check)."""
    full = request.getfixturevalue(case)
    g = {k: full[k][:P, :T] for k in ("met", "labels")}
    g.update({k: full[k][:P] for k in ("x_dalec", "x_pheno", "x_pools")})
    P = g["met"].shape[0]
    X = NetworkOutputs(*(jnp.asarray(g[k]) for k in ("x_dalec", "x_pheno", "x_pools")))
    met = jnp.asarray(g["met"])
    cfg = LossConfig(parity=True, enabled={t: True for t in TERMS})

    def loss(X, labels):
        return loss_from_x(X, Forcing.from_array(met), labels, jnp.zeros(P, jnp.int32),
                           jnp.ones(P), 1, cfg, PARITY_MODEL)

    vg = jax.value_and_grad(loss, has_aux=True)
    old = jax.jit(lambda X, arr: vg(X, Labels.from_published(arr)))(X, jnp.asarray(g["labels"]))
    new = jax.jit(vg)(X, jax.tree.map(jnp.asarray, Labels.from_published(g["labels"])))
    (t0, terms0), g0 = old
    (t1, terms1), g1 = new
    assert np.array_equal(np.asarray(t0), np.asarray(t1))
    assert list(terms0) == list(terms1) and len(terms1) == len(TERMS)
    for k in terms0:
        assert np.array_equal(np.asarray(terms0[k]), np.asarray(terms1[k])), k
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    if T is None:  # and both are the published loss (the spec's tolerance, as in test_parity.py)
        assert float(t1) == pytest.approx(float(full["loss"]), rel=1e-4)


def test_reader_carries_the_time_split_of_a_site_store(shared_dir, tmp_path):
    from differland_dist.data import batch
    from differland_dist.data.importers.sites import sites_to_store
    from differland_dist.data.reader import PatchReader
    from differland_dist.data.store import open_store

    url = str(tmp_path / "sites.zarr")
    sites_to_store(shared_dir / "data" / "fluxnet_sites", url, only="FR-Pue,DE-Hai", monthly=True)
    store = open_store(url)
    with PatchReader(store, batch.predictor_names(["PFT"])) as r:
        b = r.read([int(p) for p in store.patch_ids][::-1])
    tt = np.asarray(store.array("time_test")[...], np.float32)[b.pixel_index]
    assert b.labels.time_test is not None and np.array_equal(b.labels.time_test, tt)
    assert 0 < tt.mean() < 1
    train, test = b.labels.time_split(False), b.labels.time_split(True)
    w = b.labels.weight["gpp_flux"]
    assert w.any() and np.array_equal(train.weight["gpp_flux"] + test.weight["gpp_flux"], w)
    assert not (train.weight["gpp_flux"] * tt).any() and not (test.weight["gpp_flux"] * (1 - tt)).any()
