"""The main job on the embedded default: synthetic Earth → calibration on local Ray →
held-out evaluation against the untrained network → a short report with plots."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


@dataclass(frozen=True)
class Score:
    rmse: float
    nse: float
    n: int


def score(sim: np.ndarray, obs: np.ndarray, w: np.ndarray) -> Score:
    """RMSE and NSE over entries with weight > 0."""
    m = w > 0
    s, o = sim[m].astype(np.float64), obs[m].astype(np.float64)
    if s.size == 0:
        return Score(float("nan"), float("nan"), 0)
    sse = float(((s - o) ** 2).sum())
    sst = float(((o - o.mean()) ** 2).sum())
    return Score(float(np.sqrt(sse / s.size)), 1.0 - sse / sst if sst > 0 else float("nan"), int(s.size))


def held_out_comparison(store_url: str, run_dir: str, warm_up: int):
    """LAI (vs its observations) and GPP (vs the synthetic truth's GPP) on held-out pixels,
    for the untrained network (step 0) and the trained one."""
    import jax
    import jax.numpy as jnp

    from differland_dist.data.batch import predictor_names
    from differland_dist.data.store import open_store
    from differland_dist.inference.compute import read_patches, simulate_batch
    from differland_dist.model import simulate
    from differland_dist.model.parameters import OUTPUTS
    from differland_dist.runs import load_trained

    tm = load_trained(run_dir)
    cfg = tm.config
    store = open_store(store_url)
    b = read_patches(tm, store, store.test_patches)
    i_lai, i_gpp = OUTPUTS.index("lai"), OUTPUTS.index("gpp")

    # the untrained network: the run's own initialisation (step-0 checkpoint arrays are not
    # kept, so re-create it from the seed exactly as the trainer does)
    from differland_dist.network.mlp import init_network

    net0 = init_network(jax.random.PRNGKey(cfg.training.seed), len(predictor_names(cfg.data.predictors)), cfg.network)
    _, out0 = simulate_batch(tm, b, network=net0)
    p1, out1 = simulate_batch(tm, b)
    true = np.asarray(store.array("true_params")[b.pixel_index[0]:b.pixel_index[-1] + 1]) \
        if np.all(np.diff(b.pixel_index) == 1) else np.asarray(store.array("true_params")[...])[b.pixel_index]
    _, out_true = simulate(jnp.asarray(b.forcing), jnp.asarray(true[:, :31]), jnp.asarray(true[:, 31:33]),
                           jnp.asarray(true[:, 33:40]), closed_budget=True)
    out_true = np.asarray(out_true)
    lai_obs, lai_w = b.labels[..., 4], b.labels[..., 5]
    sl = slice(warm_up, None)
    ones = np.ones_like(lai_obs)
    res = {
        "lai_untrained": score(out0[:, sl, i_lai], lai_obs[:, sl], lai_w[:, sl]),
        "lai_trained": score(out1[:, sl, i_lai], lai_obs[:, sl], lai_w[:, sl]),
        "gpp_untrained": score(out0[:, sl, i_gpp], out_true[:, sl, i_gpp], ones[:, sl]),
        "gpp_trained": score(out1[:, sl, i_gpp], out_true[:, sl, i_gpp], ones[:, sl]),
    }
    return res, b.pixel_index, p1


def plot_report(out_dir: Path, metrics: list[dict], store_url: str, run_dir: str, param: str = "field_capacity"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from differland_dist.data.store import open_store
    from differland_dist.inference.compute import read_patches, simulate_batch
    from differland_dist.model.parameters import PARAM_NAMES
    from differland_dist.runs import load_trained

    figs = []
    tr = [m for m in metrics if m.get("split") == "train"]
    te = [m for m in metrics if m.get("split") == "test"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].semilogy([m["step"] for m in tr], [m["loss"] for m in tr], lw=0.8, label="train (per step)")
    ax[0].semilogy([m["step"] for m in te], [m["loss"] for m in te], "o-", label="held-out")
    ax[0].set_xlabel("step"), ax[0].set_ylabel("loss"), ax[0].legend(), ax[0].set_title("total loss")
    for term in ("sif", "lai", "nbe", "ewt", "edc", "et_gleam"):
        if te and term in te[0]:
            ax[1].semilogy([m["step"] for m in te], [max(m[term], 1e-12) for m in te], label=term)
    ax[1].set_xlabel("step"), ax[1].set_title("held-out terms"), ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=110)
    plt.close(fig)
    figs.append("loss_curves.png")

    # map of one learnt parameter next to its true map, all pixels
    tm = load_trained(run_dir)
    store = open_store(store_url)
    b = read_patches(tm, store, store.patch_ids)
    p, _ = simulate_batch(tm, b)
    k = PARAM_NAMES.index(param)
    learnt = np.asarray(p.process.stack())[:, k]
    true = np.asarray(store.array("true_params")[...])[b.pixel_index, k]
    rows = np.asarray(store.array("row")[...])[b.pixel_index]
    cols = np.asarray(store.array("col")[...])[b.pixel_index]
    split = np.asarray(store.array("split")[...])[b.pixel_index]
    grid = np.full((rows.max() + 1, cols.max() + 1), np.nan)
    fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
    vmin, vmax = np.percentile(true, [2, 98])
    for a, vals, title in ((ax[0], learnt, f"learnt {param}"), (ax[1], true, f"true {param}")):
        g = grid.copy()
        g[rows, cols] = vals
        im = a.imshow(g, vmin=vmin, vmax=vmax, cmap="viridis")
        a.set_title(title), a.set_xticks([]), a.set_yticks([])
    # held-out pixels outlined in the learnt map
    ax[0].scatter(cols[split == 1], rows[split == 1], s=14, marker="s", facecolors="none",
                  edgecolors="r", linewidths=0.6, label="held-out")
    ax[0].legend(loc="lower left", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8, label=param)
    fig.savefig(out_dir / f"map_{param}.png", dpi=110)
    plt.close(fig)
    figs.append(f"map_{param}.png")
    r = np.corrcoef(learnt[split == 1], true[split == 1])[0, 1] if (split == 1).sum() > 2 else float("nan")
    return figs, float(r)


def run_demo(out: str, resolution: float = 5.0, years: int = 5, steps: int | None = None,
             seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """Run the whole demo into directory ``out``; returns the summary written to summary.json."""
    from differland_dist.config import load_config
    from differland_dist.data.synth import synth_to_store
    from differland_dist.distributed.trainer import calibrate

    t0 = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_url = str(out_dir / "earth.zarr")
    run_dir = str(out_dir / "run")
    from differland_dist.data.store import open_store

    try:
        open_store(store_url)
        log.info("reusing the synthetic Earth at %s", store_url)
    except Exception:
        log.info("making the synthetic Earth (%.3g deg, %d years) at %s", resolution, years, store_url)
        synth_to_store(store_url, resolution=resolution, years=years, seed=seed, overwrite=True)
    t_synth = time.perf_counter() - t0
    overrides = [f"data.url={store_url}", f"ray.workers={workers}"]
    if steps is not None:
        overrides.append(f"training.steps={steps}")
    cfg = load_config(DEMO_CONFIG, overrides)
    from differland_dist.runs import latest_checkpoint

    resume = latest_checkpoint(run_dir) is not None
    state, cal = calibrate(cfg, run_dir, resume=resume, progress=progress)
    t_train = time.perf_counter() - t0 - t_synth
    res, _, _ = held_out_comparison(store_url, run_dir, cfg.loss.warm_up)
    figs, r_param = plot_report(out_dir, cal.metrics, store_url, run_dir)
    summary = {
        "store": store_url, "run_dir": run_dir, "steps": state.step, "workers": workers,
        "seconds": {"synth": round(t_synth, 1), "calibrate": round(t_train, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "held_out": {k: v.__dict__ for k, v in res.items()},
        "held_out_param_correlation_with_truth": r_param,
        "figures": figs,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# differland demo report", "",
        f"Synthetic Earth at {resolution}° with {years} years; {state.step} steps on {workers} Ray workers.", "",
        "Held-out pixels (never trained on), after the warm-up year:", "",
        "| quantity | untrained RMSE | trained RMSE | untrained NSE | trained NSE |",
        "| --- | --- | --- | --- | --- |",
        f"| LAI vs observations (m2 m-2) | {res['lai_untrained'].rmse:.3f} | {res['lai_trained'].rmse:.3f} | "
        f"{res['lai_untrained'].nse:.3f} | {res['lai_trained'].nse:.3f} |",
        f"| GPP vs the hidden truth (gC m-2 d-1) | {res['gpp_untrained'].rmse:.3f} | {res['gpp_trained'].rmse:.3f} | "
        f"{res['gpp_untrained'].nse:.3f} | {res['gpp_trained'].nse:.3f} |", "",
        f"Correlation of the learnt field capacity with the true one on held-out pixels: {r_param:.3f}", "",
        *(f"![{f}]({f})" for f in figs), "",
        f"Time: synth {t_synth:.0f} s, calibration {t_train:.0f} s, total {summary['seconds']['total']:.0f} s.",
    ]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return summary
