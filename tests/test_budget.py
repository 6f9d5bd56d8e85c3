"""Science invariants: every pool's change equals inflows minus outflows, every step."""

import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist.model import simulate

from differland_dist.vocabulary.dalec_io import OUTPUTS

I = {n: i for i, n in enumerate(OUTPUTS)}

BUDGETS = {
    "labile": (["labile_production"], ["labile_release", "labile_fire_combust", "labile_fire_transfer"]),
    "foliar": (["leaf_production", "labile_release"], ["leaf_litter", "foliar_fire_combust", "foliar_fire_transfer"]),
    "root": (["root_production"], ["root_litter", "root_fire_combust", "root_fire_transfer"]),
    "wood": (["wood_production"], ["wood_litter", "wood_fire_combust", "wood_fire_transfer"]),
    "litter": (["leaf_litter", "root_litter", "labile_fire_transfer", "foliar_fire_transfer", "root_fire_transfer"],
               ["respiration_hetero_litter", "litter_to_som", "litter_fire_combust", "litter_fire_transfer"]),
    "som": (["litter_to_som", "wood_litter", "wood_fire_transfer", "litter_fire_transfer"],
            ["respiration_hetero_som", "som_fire_combust"]),
}
POOL_ORDER = ["labile", "foliar", "root", "wood", "litter", "som", "water"]


def _residuals(g, closed_budget):
    _, out = simulate(g["met"], g["dalec_params"], g["pheno_params"], g["initial_pools"],
                      closed_budget=closed_budget)
    out = np.asarray(out, np.float64)
    dt = g["met"][..., 10].astype(np.float64)
    pools = np.concatenate([g["initial_pools"][:, None, :].astype(np.float64),
                            out[:, :, I["next_labile_pool"]:I["next_water_pool"] + 1]], axis=1)
    res = {}
    for k, name in enumerate(POOL_ORDER):
        change = pools[:, 1:, k] - pools[:, :-1, k]
        if name == "water":
            inflow = g["met"][..., 8].astype(np.float64)
            outflow = out[..., I["ET"]] + out[..., I["runoff"]]
        else:
            ins, outs = BUDGETS[name]
            inflow = sum(out[..., I[n]] for n in ins)
            outflow = sum(out[..., I[n]] for n in outs)
        flux = (inflow - outflow) * dt
        # float32 accuracy: a few ulps of the magnitudes involved in the update
        tol = 4e-6 * (np.abs(pools[:, 1:, k]) + np.abs(pools[:, :-1, k]) + (np.abs(inflow) + np.abs(outflow)) * dt) + 1e-5
        res[name] = (np.abs(change - flux) / tol, change, flux)
    return res, out


@pytest.mark.parametrize("which", ["monthly", "daily"])
def test_budgets_close_every_step(which, golden_monthly, golden_daily):
    g = {"monthly": golden_monthly, "daily": golden_daily}[which]
    res, _ = _residuals(g, closed_budget=True)
    for name, (ratio, _, _) in res.items():
        p, t = np.unravel_index(np.argmax(ratio), ratio.shape)
        assert ratio.max() <= 1.0, f"{name} budget off at pixel {p} step {t}: ratio {ratio.max():.2f}"


def test_clamps_are_exercised_and_total_carbon_closes(golden_monthly):
    g = golden_monthly
    res, out = _residuals(g, closed_budget=True)
    pools = out[:, :, I["next_labile_pool"]:I["next_water_pool"] + 1]
    # The golden forcing drives pools onto their bounds: the clamping paths are really tested.
    assert np.any(np.isclose(pools[..., 1], 1.0)) and np.any(np.isclose(pools[..., 6], 1.0))
    # Ecosystem carbon changes by -NBE * dt.
    c = np.concatenate([g["initial_pools"][:, None, :6], pools[..., :6]], axis=1).sum(-1)
    change = np.diff(c, axis=1)
    flux = -out[..., I["nbe"]] * g["met"][..., 10]
    tol = 1e-5 * np.abs(c[:, 1:]) + 1e-3
    assert np.all(np.abs(change - flux) <= tol)


def test_published_quirks_are_the_only_budget_breaks(golden_monthly):
    """In parity mode the foliar budget breaks exactly where the foliar pool hit its floor."""
    res, out = _residuals(golden_monthly, closed_budget=False)
    ratio, _, _ = res["foliar"]
    broken = ratio > 1.0
    at_floor = np.isclose(out[..., I["next_foliar_pool"]] + (out[..., I["foliar_fire_combust"]] + out[..., I["foliar_fire_transfer"]]) * golden_monthly["met"][..., 10], 1.0)
    assert broken.any()
    assert np.all(at_floor[broken])
    for name in ("labile", "root", "wood", "litter", "som"):
        assert res[name][0].max() <= 1.0, name
