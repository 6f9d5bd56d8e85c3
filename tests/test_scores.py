"""The experiment's probabilistic scores (experiment/probabilistic.py) against hand-computed
values, a brute-force definition, known truths of calibrated and over-confident ensembles, and
their place in scores.json / scores.md (experiment/scores.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from differland_dist.experiment import probabilistic as pr
from differland_dist.experiment import scores as sc


def test_crps_by_hand():
    crps, spread = pr.crps_fair(np.array([[0.0], [2.0]]), np.array([1.0]))
    # |0-1|, |2-1| mean 1; pairs: |0-2| over both orders = 4, / (2 * 2 * 1) = 1
    assert crps[0] == pytest.approx(0.0) and spread[0] == pytest.approx(1.0)
    crps, spread = pr.crps_fair(np.array([[0.0], [1.0], [3.0]]), np.array([2.0]))
    # mean |x - 2| = 4/3; unordered pair sum 1 + 3 + 2 = 6, / (3 * 2) = 1
    assert crps[0] == pytest.approx(1 / 3) and spread[0] == pytest.approx(1.0)


def test_crps_equals_the_brute_force_definition():
    rng = np.random.default_rng(0)
    ens, obs = rng.normal(size=(7, 50)), rng.normal(size=50)
    M = ens.shape[0]
    brute = (np.abs(ens - obs).mean(0)
             - np.abs(ens[:, None] - ens[None]).sum((0, 1)) / (2 * M * (M - 1)))
    np.testing.assert_allclose(pr.crps_fair(ens, obs)[0], brute, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("members", [1, 5])
def test_a_point_ensemble_has_crps_equal_to_mae(members):
    rng = np.random.default_rng(1)
    x, obs = rng.normal(size=40), rng.normal(size=40)
    s = pr.ensemble_scores(np.repeat(x[None], members, axis=0), obs)
    assert s["crps"] == pytest.approx(np.abs(x - obs).mean(), rel=1e-12)
    assert s["crps"] == pytest.approx(s["mae"], rel=1e-12)
    assert s["crps_spread"] == pytest.approx(0.0, abs=1e-12)
    # no spread: the ratio is 0 (or undefined for one member); the intervals are points
    if members == 1:
        assert s["spread_skill"] is None
    else:
        assert s["spread_skill"] == pytest.approx(0.0, abs=1e-12)
    assert s["coverage_90"] == 0.0


def test_calibrated_and_over_confident_ensembles():
    """Observations and members drawn from the same N(mu, 1) per point: the expected CRPS of a
    standard normal is 1/sqrt(pi), spread-skill 1, coverage nominal. Members with sd 0.5 (the
    control) are over-confident: ratio about 0.5 and coverage well below nominal."""
    rng = np.random.default_rng(2)
    n, M = 20000, 20
    mu = rng.normal(0, 3, size=n)
    obs = mu + rng.normal(size=n)
    good = pr.ensemble_scores(mu + rng.normal(size=(M, n)), obs)
    assert good["crps"] == pytest.approx(1 / math.sqrt(math.pi), rel=0.03)
    assert good["spread_skill"] == pytest.approx(1.0, abs=0.04)
    assert good["coverage_50"] == pytest.approx(0.5 * (M - 1) / (M + 1), abs=0.03)
    assert good["coverage_90"] == pytest.approx(0.9 * (M - 1) / (M + 1), abs=0.03)
    narrow = pr.ensemble_scores(mu + 0.5 * rng.normal(size=(M, n)), obs)
    assert narrow["spread_skill"] == pytest.approx(0.5, abs=0.05)
    assert narrow["coverage_90"] < good["coverage_90"] - 0.25
    assert narrow["crps"] > good["crps"]  # CRPS is proper: the wrong spread scores worse


def test_accumulated_blocks_equal_one_pass():
    rng = np.random.default_rng(3)
    ens, obs = rng.gamma(2.0, size=(4, 300)), rng.gamma(2.0, size=300)
    acc = pr.Accumulator(4)
    for a in range(0, 300, 70):
        acc.add(ens[:, a:a + 70], obs[a:a + 70])
    acc.add(ens[:, :0], obs[:0])  # an empty block changes nothing
    whole = pr.ensemble_scores(ens, obs)
    for k, v in acc.scores().items():
        assert v == pytest.approx(whole[k], rel=1e-12), k
    assert pr.Accumulator(3).scores() == {"n": 0, "members": 3}


def test_scores_json_and_markdown_carry_kge_mae_and_the_probabilistic_scores():
    def ev(nse, kge, mae):
        flat = {"nse": nse, "kge": kge, "mae": mae, "r2": 0.5, "rmse": 1.0, "bias": 0.0, "r": 0.7}
        return {"streams": {"lai": {sp: {"flat": flat, "spatial": flat} for sp in sc.SPLITS}}}

    prob = {"S": {"lai": {sp: pr.ensemble_scores(np.array([[1.0, 2.0], [1.5, 2.5]]),
                                                 np.array([1.2, 2.0])) for sp in sc.SPLITS},
                  "nbe": {"note": "patch-level stream: scored by the evaluation only"}}}
    s = sc.collect({"S": [ev(0.5, 0.4, 0.3), ev(0.7, 0.6, 0.1)]}, {"S": ev(0.8, 0.7, 0.2)}, prob)
    test = s["S"]["lai"]["test"]
    assert test["flat"]["kge"]["ensemble"] == 0.7 and test["flat"]["mae"]["member_mean"] == pytest.approx(0.2)
    p = test["probabilistic"]
    assert p["members"] == 2 and p["n"] == 2 and p["crps"] == pytest.approx(
        float(pr.crps_fair(np.array([[1.0, 2.0], [1.5, 2.5]]), np.array([1.2, 2.0]))[0].mean()))
    assert "nbe" not in s["S"]  # a stream the evaluations do not score gets no entry
    back = json.loads(sc.to_json(s))
    assert back["S"]["lai"]["dev"]["probabilistic"]["coverage_90"] == p["coverage_90"]
    md = sc.to_markdown(s)
    assert "| S | 2 | " in md and "spread–skill" in md
