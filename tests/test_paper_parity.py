"""Parity with what the paper reports (issue 16, point 5).

Patch-level terms with partial patches: the published loss (``loss_fn_with_edc`` of
JianingFang/DifferLand_Global) averages NBE, NBE-IAV, fire and water over the batch padded to
320 rows, so a patch of n real pixels has its patch means divided by the padded size, not n.
The golden cases of ``test_parity.py`` hold full patches and cannot see this. Here:

* ``padded_patches.npz`` (tests/) was made with the reference's own loss (run this module as a
  script with the reference checkout's path, see :func:`make_golden`): two patches of 11 and 5
  real pixels from the monthly golden's model outputs (first 36 months), each padded to 16
  rows as ``generate_data_loader`` pads (zero labels), the reference's total per patch and its
  fire, water and NBE (+ NBE-IAV) terms alone
  (``python tests/test_paper_parity.py REFERENCE_CHECKOUT shared/golden/dalec993_monthly.npz``);
* an independent numpy re-implementation of the reference's ``patch_of_error`` on the padded
  arrays checks the same terms without the golden.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist.distributed.shard import pad_patch
from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import TERMS, LossConfig
from differland_dist.loss.terms import EDC_FLUXES, loss_terms, required_series

HERE = Path(__file__).parent
GOLDEN = HERE / "padded_patches.npz"
SIZE, T = 16, 36                      # padded rows per patch, months
PATCHES = (range(0, 11), range(11, 16))  # real pixels of the golden per patch


def _ours(outputs, names, initial_pools, labels, patch, valid, n_patches, cfg):
    series_names, sums = required_series(cfg)
    idx = {n: i for i, n in enumerate(names)}
    series = {n: jnp.asarray(outputs[..., idx[n]]) for n in series_names}
    totals = {n: jnp.asarray(outputs[..., idx[n]].sum(axis=1)) for n in sums}
    terms = loss_terms(series, totals, jnp.asarray(initial_pools),
                       Labels.from_published(jnp.asarray(labels)),
                       jnp.asarray(patch), jnp.asarray(valid), n_patches, cfg)
    return {k: float(v) for k, v in terms.items()}


def _padded_ours(g, pixels):
    """One patch of the golden's ``pixels`` padded to SIZE as a worker pads it (copies of the
    first pixel, label weights 0, valid 0)."""
    sel = np.asarray(list(pixels))
    out = g["outputs"][sel, :T]
    arr = pad_patch(out, g["initial_pools"][sel], Labels.from_published(g["labels"][sel, :T]), SIZE)
    return arr.forcing, arr.predictors_raw, arr.labels.to_published(), arr.valid


def _np_patch_of_error(pred, obs, mask):
    """The reference's ``patch_of_error`` in float64 numpy: means over the padded rows."""
    pred, obs, mask = (np.asarray(a, np.float64) for a in (pred, obs, mask))
    return float(np.sum((np.mean(pred * mask, 0) - np.mean(obs * mask, 0)) ** 2 * np.mean(mask, 0)))


def _np_reference_patch_terms(outputs, names, labels, eps=1e-3):
    """fire, water, NBE and NBE-IAV as the reference computes them on one padded batch
    (labels zero-padded; warm-up 0), weighted."""
    o = {n: outputs[..., i].astype(np.float64) for i, n in enumerate(names)}
    lab = labels.astype(np.float64)
    B = lab.shape[0]
    water_mean = np.sum(o["next_water_pool"] * lab[:, :, 7], 1) / (np.sum(lab[:, :, 7], 1) + eps)
    annual = lambda x: x.reshape(B, -1, 12)  # noqa: E731
    return {
        "fire": 1000 * _np_patch_of_error(o["total_fire_combust"], lab[:, :, 10], lab[:, :, 11]),
        "ewt": 0.2 * _np_patch_of_error(o["next_water_pool"] - water_mean[:, None], lab[:, :, 6],
                                        lab[:, :, 7]),
        "nbe": 3000 * _np_patch_of_error(o["nbe"], lab[:, :, 2], lab[:, :, 3]),
        "nbe_iav": 3000 * 3.46 * _np_patch_of_error(annual(o["nbe"]).mean(2),
                                                    annual(lab[:, :, 2]).mean(2),
                                                    annual(lab[:, :, 3]).prod(2)),
    }


def _reference_padding(outputs, labels, n):
    """The reference's padded batch: zero labels beyond ``n``; outputs as given."""
    lab = labels.copy()
    lab[n:] = 0.0
    return outputs, lab


PATCH_TERMS = ("nbe", "nbe_iav", "fire", "ewt")
PARITY_ALL = LossConfig(parity=True, enabled={t: True for t in TERMS})


def test_partial_patch_terms_match_numpy_reference_formula(golden_monthly):
    g, names = golden_monthly, list(golden_monthly["output_names"])
    for pixels in PATCHES:
        out, pools, lab, valid = _padded_ours(g, pixels)
        ours = _ours(out, names, pools, lab, np.zeros(SIZE, np.int32), valid, 1, PARITY_ALL)
        ref_out, ref_lab = _reference_padding(out, lab, len(pixels))
        ref = _np_reference_patch_terms(ref_out, names, ref_lab)
        for t in PATCH_TERMS:
            assert ref[t] > 0
            assert ours[t] == pytest.approx(ref[t], rel=2e-4), t


def test_outside_parity_patch_means_use_real_pixels(golden_monthly):
    """Outside parity the monthly patch terms are (SIZE/n)³ larger (means over n, not SIZE),
    and padding more rows changes nothing; under parity it does."""
    g, names = golden_monthly, list(golden_monthly["output_names"])
    pixels = PATCHES[1]
    n = len(pixels)
    out, pools, lab, valid = _padded_ours(g, pixels)
    free = LossConfig(enabled={t: True for t in TERMS})
    par = _ours(out, names, pools, lab, np.zeros(SIZE, np.int32), valid, 1, PARITY_ALL)
    ours = _ours(out, names, pools, lab, np.zeros(SIZE, np.int32), valid, 1, free)
    for t in ("nbe", "fire"):
        assert ours[t] == pytest.approx(par[t] * (SIZE / n) ** 3, rel=2e-4), t
    # the same patch unpadded: equal outside parity, (n/SIZE)³ apart under parity
    sl = slice(0, n)
    ours_unpadded = _ours(out[sl], names, pools[sl], lab[sl], np.zeros(n, np.int32), valid[sl], 1, free)
    par_unpadded = _ours(out[sl], names, pools[sl], lab[sl], np.zeros(n, np.int32), valid[sl], 1,
                         PARITY_ALL)
    for t in PATCH_TERMS:
        assert ours_unpadded[t] == pytest.approx(ours[t], rel=2e-4), t
    assert par_unpadded["fire"] == pytest.approx(par["fire"] * (SIZE / n) ** 3, rel=2e-4)


def test_partial_patches_match_reference_golden(golden_monthly):
    """Our parity loss on two partial patches in one batch (two segments) equals the sum of
    the reference's losses on each padded batch; each patch term equals the reference's alone."""
    z = np.load(GOLDEN)
    g, names = golden_monthly, list(golden_monthly["output_names"])
    batches = [_padded_ours(g, p) for p in PATCHES]
    out = np.concatenate([b[0] for b in batches])
    pools = np.concatenate([b[1] for b in batches])
    lab = np.concatenate([b[2] for b in batches])
    valid = np.concatenate([b[3] for b in batches])
    patch = np.repeat(np.arange(len(PATCHES), dtype=np.int32), SIZE)
    both = _ours(out, names, pools, lab, patch, valid, len(PATCHES), PARITY_ALL)
    assert sum(both.values()) == pytest.approx(float(z["ref_total"].sum()), rel=1e-4)
    for k, pixels in enumerate(PATCHES):
        o, p, lb, v = batches[k]
        one = _ours(o, names, p, lb, np.zeros(SIZE, np.int32), v, 1, PARITY_ALL)
        assert sum(one.values()) == pytest.approx(float(z["ref_total"][k]), rel=1e-4)
        assert one["fire"] == pytest.approx(float(z["ref_fire"][k]), rel=2e-4)
        assert one["ewt"] == pytest.approx(float(z["ref_ewt"][k]), rel=2e-4)
        assert one["nbe"] + one["nbe_iav"] == pytest.approx(float(z["ref_nbe"][k]), rel=2e-4)
    # the divisor matters: the same patches with the real-count means differ from the reference
    free = LossConfig(enabled={t: True for t in TERMS})
    o, p, lb, v = batches[1]
    real = _ours(o, names, p, lb, np.zeros(SIZE, np.int32), v, 1, free)
    assert abs(real["fire"] / float(z["ref_fire"][1]) - 1) > 0.5


def make_golden(reference_dir: str, golden_file: str, out: Path = GOLDEN) -> None:
    """Write ``padded_patches.npz`` with the reference's ``loss_fn_with_edc`` (the checkout of
    JianingFang/DifferLand_Global at ``reference_dir``; needs jax and numpy only) from the
    monthly golden ``golden_file`` (shared/golden/dalec993_monthly.npz). The model is
    replaced by the monthly golden's outputs (the loss's inputs), padded rows repeat the first
    pixel's outputs with violation 0 (the reference's padding rows run the network on zero
    predictors, whose violation our loss, which masks padding, does not see)."""
    sys.path.insert(0, reference_dir)
    from DifferLand.model.DALEC_993_parinfo import dalec993_pfn
    from DifferLand.optimization.loss_functions import loss_fn_with_edc

    g = dict(np.load(golden_file))
    names = list(g["output_names"])
    vi = names.index("violation")
    tot, fire, ewt, nbe = [], [], [], []
    for pixels in PATCHES:
        o, p, lab, v = _padded_ours(g, pixels)
        o = o.copy()
        o[len(pixels):, :, vi] = 0.0
        o, lab = _reference_padding(o, lab, len(pixels))

        def ref(labels, outputs=o, pools=p):
            fwd = lambda params, pred, met: (jnp.asarray(pools), jnp.asarray(outputs)[:, :, None, :])  # noqa: E731
            return float(loss_fn_with_edc(None, None, None, jnp.asarray(labels), fwd, dalec993_pfn,
                                          warm_up=0, batch_size=SIZE))

        def alone(col):  # one stream's weights kept, violation off: that term only (EDC off)
            lb = np.zeros_like(lab)
            lb[..., col - 1:col + 1] = lab[..., col - 1:col + 1]
            oo = o.copy()
            oo[..., vi] = 0.0
            return ref(lb, outputs=oo)

        tot.append(ref(lab))
        fire.append(alone(11))
        ewt.append(alone(7))
        nbe.append(alone(3))
    np.savez_compressed(out, ref_total=np.array(tot), ref_fire=np.array(fire), ref_ewt=np.array(ewt),
                        ref_nbe=np.array(nbe), size=SIZE, months=T,
                        real_pixels=np.array([len(p) for p in PATCHES]))
    print({"total": tot, "fire": fire, "ewt": ewt, "nbe": nbe})


if __name__ == "__main__":
    make_golden(sys.argv[1], sys.argv[2])


# -- evaluate --conventions paper ------------------------------------------------------------------
from synth_fixtures import small_ds, small_store_url  # noqa: E402,F401 - fixtures

from differland_dist.errors import DifferlandError  # noqa: E402
from differland_dist.evaluation import metrics as M  # noqa: E402
from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate  # noqa: E402

PAPER = EvaluationOptions(figures=False, conventions="paper", paper_warm_up=12)


def test_paper_scores_hand_computed():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 30))
    sim = obs * 0.8 + rng.normal(scale=0.3, size=obs.shape) + 0.2
    obs[0, :10] = np.nan
    obs[4] = np.nan                     # a unit with no observation: not a unit
    r = M.paper_scores(obs, sim)
    ok = np.isfinite(obs)
    o, s = obs[ok], sim[ok]
    slope, intercept = np.polyfit(s, o, 1)   # observed on simulated, as linregress(pred, label)
    assert r["n"] == ok.sum() and r["n_units"] == 4
    assert r["flat"]["slope"] == pytest.approx(slope) and r["flat"]["intercept"] == pytest.approx(intercept)
    assert r["flat"]["nse"] == pytest.approx(1 - np.sum((s - o) ** 2) / np.sum((o - o.mean()) ** 2))
    assert r["flat"]["r"] == pytest.approx(np.corrcoef(s, o)[0, 1])
    per = [1 - np.sum((sim[i, ok[i]] - obs[i, ok[i]]) ** 2) / np.sum((obs[i, ok[i]] - obs[i, ok[i]].mean()) ** 2)
           for i in range(4)]
    assert r["temporal_nse"]["mean"] == pytest.approx(np.mean(per))
    assert r["temporal_nse"]["median"] == pytest.approx(np.median(per))
    assert r["temporal_nse"]["std"] == pytest.approx(np.std(per))
    om = np.array([obs[i, ok[i]].mean() for i in range(4)])
    sm = np.array([sim[i, ok[i]].mean() for i in range(4)])
    assert r["spatial"]["slope"] == pytest.approx(np.polyfit(sm, om, 1)[0])


@pytest.fixture(scope="module")
def paper_output(small_store_url, tmp_path_factory):  # noqa: F811
    from differland_dist.inference.pipeline import InferenceOptions, run_inference
    from random_checkpoint import random_checkpoint

    d = tmp_path_factory.mktemp("paper_eval")
    ck = random_checkpoint(small_store_url, str(d / "network.npz"), config={"loss": {"warm_up": 3}})
    url = str(d / "out.zarr")
    run_inference(ck, url, small_store_url, options=InferenceOptions(executor="local"))
    return url


def test_evaluate_paper_conventions(paper_output, small_ds, tmp_path):  # noqa: F811
    import json
    import shutil

    from differland_dist.inference.output import open_output

    r = evaluate(paper_output, out=str(tmp_path / "ev"), options=PAPER)
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    pc = saved["paper_conventions"]
    assert pc["warm_up"] == 12 and saved["inputs"]["warm_up"] == 3   # ours stay beside
    split = small_ds["split"].values
    w = small_ds["obs_lai_weight"].values[:, 12:] > 0
    assert pc["streams"]["lai"]["test"]["n"] == int(w[split == 2].sum())
    n_test_patches = len(np.unique(small_ds["patch"].values[split == 2]))
    assert pc["streams"]["nbe"]["test"]["n_units"] == n_test_patches
    assert pc["streams"]["vod"]["note"] == "switched off in the config"
    for k in ("slope", "intercept", "nse"):
        assert k in pc["streams"]["lai"]["train"]["flat"]
    # the reference's exact numbers beside the gap-aware ones: the same pairs in the flat view
    ref = pc["streams"]["lai"]["train"]["reference"]
    assert ref["flat_rmse"] == pytest.approx(pc["streams"]["lai"]["train"]["flat"]["rmse"])
    assert ref["flat_slope"] == pytest.approx(pc["streams"]["lai"]["train"]["flat"]["slope"])
    assert "reference" in pc["keys"] and "spatial_median_temporal_nse" in ref
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "## The paper's conventions" in md and "temporal NSE mean" in md
    assert r["streams"]["lai"]["test"]["flat"]["n"] > pc["streams"]["lai"]["test"]["n"]
    # observations as the model: NSE 1, slope 1, intercept 0 (pixel and patch streams)
    url = str(tmp_path / "perfect.zarr")
    shutil.copytree(paper_output, url)
    g = open_output(url, mode="r+")
    for series, product in (("lai", "lai"), ("nbe", "nbe")):
        g[series][:] = np.nan_to_num(small_ds[f"obs_{product}"].values)
    pc = evaluate(url, out=str(tmp_path / "ev2"), options=PAPER)["paper_conventions"]
    for stream in ("lai", "nbe"):
        f = pc["streams"][stream]["train"]["flat"]
        assert f["nse"] == pytest.approx(1.0) and f["slope"] == pytest.approx(1.0)
        assert f["intercept"] == pytest.approx(0.0, abs=1e-6)
        assert pc["streams"][stream]["train"]["temporal_nse"]["median"] == pytest.approx(1.0)
    with pytest.raises(DifferlandError, match="24-step warm-up leaves nothing"):
        evaluate(url, out=str(tmp_path / "ev3"),
                 options=EvaluationOptions(figures=False, conventions="paper"))


def test_water_time_mask_and_padded_scaling():
    """ewt: patch means over the padded rows (sum / padded) and the 0.7 mean-weight mask."""
    from differland_dist.evaluation.paper_scores import paper_patch_series

    x = np.arange(12, dtype=float).reshape(3, 4)
    w = np.array([[1, 1, 0, 1], [1, 1, 0, 1], [1, 0, 0, 1.0]])
    s = paper_patch_series(x, w, np.zeros(3, int), np.array([0]), 4, True, 0.7)[0]
    # mean weights over 4 padded rows: .75 .5 0 .75 -> steps 1 and 2 masked
    assert np.isnan(s[1]) and np.isnan(s[2])
    assert s[0] == pytest.approx((0 + 4 + 8) / 4) and s[3] == pytest.approx((3 + 7 + 11) / 4)
    n = paper_patch_series(x, w, np.zeros(3, int), np.array([0]), 4, False, 0.7)[0]
    assert n[1] == pytest.approx((1 + 5) / 2, rel=1e-6) and n[2] == pytest.approx(0.0)


# -- the reference's own numbers (evaluation/paper_conventions.py) ------------------------------------
def _golden_conventions():
    import json

    g = json.loads((Path(__file__).parent / "paper_conventions_golden.json").read_text())
    arr = lambda k: np.array([[np.nan if v is None else v for v in row] for row in g["inputs"][k]])  # noqa: E731
    return g, arr


def _assert_reference(got: dict, want: dict):
    for k, v in want.items():
        if v is None:
            assert np.isnan(got[k]), k
        else:   # the reference computes in float32 (jax means, float32 sklearn inputs)
            tol = 1e-3 if k.endswith("pval") else 2e-5
            assert got[k] == pytest.approx(v, rel=tol, abs=1e-6), k


def test_reference_conventions_match_the_reference_code():
    """compute_metrics of evaluate_performance.py, run by the reference's own code on a small
    case (tests/paper_conventions_golden.json says how): plain-mean spatial scores (NaN when
    every unit has a gap), sklearn's r2 for constant and single-pair series, the -9999 fill
    averaged into partial biomass years."""
    from differland_dist.evaluation import paper_conventions as PC

    g, arr = _golden_conventions()
    obs, sim = arr("obs"), arr("sim")
    _assert_reference(PC.reference_metrics(obs, sim), g["reference"]["monthly"])
    _assert_reference(PC.reference_metrics(arr("gappy_obs"), sim), g["reference"]["all_gaps"])
    _assert_reference(PC.reference_metrics(*PC.reference_units(arr("biomass_obs"), arr("biomass_sim"), 12)),
                      g["reference"]["biomass_annual"])
    # in blocks of units, as evaluate reads the store: the same numbers
    acc = PC.ReferenceScores()
    for s in (slice(0, 3), slice(3, 7)):
        acc.add(obs[s], sim[s])
    _assert_reference(acc.result(), g["reference"]["monthly"])
    # the conventions themselves
    assert PC.r2_score(np.array([1.5, 1.5]), np.array([1.5, 1.5])) == 1.0
    assert PC.r2_score(np.array([0.5, 0.5]), np.array([0.4, 0.6])) == 0.0
    assert np.isnan(PC.r2_score(np.array([2.0]), np.array([1.0])))
    year = PC.sentinel_annual(np.array([[1.0] * 6 + [np.nan] * 6]))
    assert year[0, 0] == pytest.approx((6 - 6 * 9999) / 12)
    # the gap-aware versions differ exactly where the reference's conventions bite
    ours = M.paper_scores(arr("gappy_obs"), sim)
    assert np.isfinite(ours["spatial"]["nse"]) and g["reference"]["all_gaps"]["spatial_nse"] is None
