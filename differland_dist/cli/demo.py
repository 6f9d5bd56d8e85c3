"""The main job on the embedded default, as the commands a user would run one after another:

1. ``differland synth``     the synthetic Earth (known true parameters)     -> earth.zarr
2. ``differland calibrate`` the network on a local Ray cluster               -> run/
3. ``differland infer``     every pixel, trained and untrained network      -> inference.zarr, untrained.zarr
4. ``differland evaluate``  every observation stream, both networks         -> evaluation/, untrained_evaluation/
5. the report: held-out numbers from ``evaluate`` (its test split), GPP on the dev and test pixels against
   the hidden truth (the true parameters run through DALEC with :class:`TrainedModel`), the
   learnt map of a parameter next to its true map                           -> report.md, summary.json, *.png

The untrained network is the run's own initialisation (seed of the config, the run's
standardisation), saved as ``untrained/network.npz``. Every stage resumes: a rerun reuses the
store, the finished run and complete outputs, and only re-evaluates.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from differland_dist.notebook import stores
from differland_dist.config import load_config
from differland_dist.data import splits
from differland_dist.data.store import open_store as open_pixel_store
from differland_dist.synthetic import synth_to_store
from differland_dist.distributed.trainer import calibrate
from differland_dist.errors import OutputMismatchError
from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate
from differland_dist.evaluation.metrics import flat
from differland_dist.evaluation.report import clean
from differland_dist.inference.pipeline import InferenceOptions, run_inference
from differland_dist.storage.location import Location
from differland_dist.network.io import save_network
from differland_dist.network.mlp import init_network
from differland_dist.runs.layout import latest_checkpoint
from differland_dist.storage.checkpoint import CheckpointRecord
from differland_dist.notebook.trained import TrainedModel

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
#: The parameter whose learnt map is drawn next to its true map.
MAP_PARAM = "field_capacity"
STAGES = 5


def _stage(k: int, what: str, t0: float) -> None:
    log.info("demo [%d/%d] %s (%.0f s so far)", k, STAGES, what, time.perf_counter() - t0)


def write_untrained(run_dir: str, url: str) -> str:
    """Save the run's initial network (before step 1) as a checkpoint: the trainer's
    ``init_network(PRNGKey(training.seed))`` with the run's standardisation and config."""
    tm = TrainedModel.from_checkpoint(run_dir)
    cfg = tm.config
    net0 = init_network(jax.random.PRNGKey(cfg.training.seed), len(tm.standardizer.mean) - 1,
                        cfg.network)
    record = CheckpointRecord(kind="training", predictor_sets=tuple(cfg.data.predictors), step=0,
                              config=tm.record.record.config,
                              note=f"initial network of {tm.source} (untrained)")
    save_network(Location(url), net0, tm.network_config, record=record, standardizer=tm.standardizer)
    return url


def infer(checkpoint: str, out: str, store: str, workers: int):
    """``differland infer --checkpoint CKPT --store STORE --out OUT`` (Ray Data, ``workers``
    actors at most); an output of an older network of the run is replaced (it is ours)."""
    opts = InferenceOptions(max_actors=max(1, workers))
    try:
        return run_inference(checkpoint, out, store, options=opts)
    except OutputMismatchError as e:
        log.warning("%s; replacing it (the run's network changed)", e)
        return run_inference(checkpoint, out, store, options=opts, overwrite=True)


def gpp_against_truth(store_url: str, outputs: dict[str, str], checkpoint: str, warm_up: int
                      ) -> dict[str, dict[str, float]]:
    """Scores of each output's GPP against the hidden truth's GPP on the held-out (dev and test)
    pixels after
    the warm-up: the store's true parameters run through DALEC with the run's model options."""
    ds = stores.open_store(store_url)
    test = ds.isel(pixel=np.flatnonzero(ds["split"].values != splits.TRAIN))
    truth = TrainedModel.from_checkpoint(checkpoint).simulate(
        test, series=["gpp"], parameters=test["true_params"])["gpp"].values[:, warm_up:]
    res = {}
    for name, url in outputs.items():
        sim = stores.open_output(url)["gpp"].sel(pixel=test["pixel"]).values[:, warm_up:]
        res[name] = flat(truth, sim)
    return res


def plot_map(store_url: str, output: str, param: str = MAP_PARAM) -> bytes:
    """PNG of the learnt map of ``param`` (the inference output's ``map_<param>``) next to its
    true map (the store's ``true_params``), one colour scale, held-out pixels outlined."""
    # imported here: matplotlib only for this figure, with the file backend chosen before pyplot
    # loads (no display)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ds = stores.open_store(store_url)
    out = stores.open_output(output)
    learnt = out[f"map_{param}"].values
    true = stores.gridded(ds["true_params"].sel(param=param), grid=ds).values
    lat, lon = ds["lat"].values, ds["lon"].values
    r = float(abs(lon[1] - lon[0])) if lon.size > 1 else 1.0
    extent = (float(lon.min()) - r / 2, float(lon.max()) + r / 2,
              float(lat.min()) - r / 2, float(lat.max()) + r / 2)
    vmin, vmax = np.nanpercentile(true, [2, 98])
    held = ds["split"].values != splits.TRAIN
    fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
    for a, vals, title in ((ax[0], learnt, f"learnt {param} (differland infer)"),
                           (ax[1], true, f"true {param} (the synthetic store)")):
        im = a.imshow(vals if lat[0] > lat[-1] else vals[::-1], extent=extent, origin="upper",
                      vmin=vmin, vmax=vmax, cmap="viridis", interpolation="nearest", aspect="auto")
        a.set_title(title, fontsize=10)
        a.set_xlabel("longitude")
    ax[0].set_ylabel("latitude")
    ax[0].scatter(ds["pixel_lon"].values[held], ds["pixel_lat"].values[held], s=14, marker="s",
                  facecolors="none", edgecolors="r", linewidths=0.6, label="held-out")
    ax[0].legend(loc="lower left", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"{param} ({out[f'map_{param}'].attrs.get('units', '')})")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _flat(ev: dict, stream: str) -> dict[str, Any]:
    return ev["streams"][stream]["test"]["flat"]


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def run_demo(out: str, resolution: float = 5.0, years: int = 5, steps: int | None = None,
             seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """Run the whole demo into directory ``out``; returns the summary written to summary.json."""
    t0 = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Location(str(out_dir))
    store_url = str(out_dir / "earth.zarr")
    run_dir = str(out_dir / "run")
    paths = {k: str(out_dir / v) for k, v in (
        ("inference", "inference.zarr"), ("untrained_ckpt", "untrained/network.npz"),
        ("untrained", "untrained.zarr"), ("evaluation", "evaluation"),
        ("untrained_evaluation", "untrained_evaluation"))}
    seconds: dict[str, float] = {}

    _stage(1, f"synth: the synthetic Earth at {store_url}", t0)
    _synth(store_url, resolution, years, seed)
    seconds["synth"] = time.perf_counter() - t0

    _stage(2, f"calibrate: {run_dir} on {workers} Ray workers", t0)
    t = time.perf_counter()
    overrides = [f"data.url={store_url}", f"ray.workers={workers}"]
    if steps is not None:
        overrides.append(f"training.steps={steps}")
    cfg = load_config(DEMO_CONFIG, overrides)
    state, _ = calibrate(cfg, run_dir, resume=latest_checkpoint(Location(run_dir)) is not None,
                         progress=progress)
    seconds["calibrate"] = time.perf_counter() - t

    _stage(3, "infer: every pixel with the trained and the untrained network", t0)
    t = time.perf_counter()
    infer(run_dir, paths["inference"], store_url, workers)
    write_untrained(run_dir, paths["untrained_ckpt"])  # deterministic: the same on a rerun
    infer(paths["untrained_ckpt"], paths["untrained"], store_url, workers)
    seconds["infer"] = time.perf_counter() - t

    _stage(4, "evaluate: every observation stream, training and held-out pixels", t0)
    t = time.perf_counter()
    ev = evaluate(paths["inference"], out=paths["evaluation"],
                  options=EvaluationOptions(map_params=(MAP_PARAM, "canopy_efficiency", "LCMA")))
    ev0 = evaluate(paths["untrained"], out=paths["untrained_evaluation"],
                   options=EvaluationOptions(figures=False))
    seconds["evaluate"] = time.perf_counter() - t

    _stage(5, "report: held-out numbers, GPP against the hidden truth, maps", t0)
    t = time.perf_counter()
    gpp = gpp_against_truth(store_url, {"untrained": paths["untrained"], "trained": paths["inference"]},
                            run_dir, cfg.loss.warm_up)
    figs = _figures(root, store_url, paths)
    seconds["report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    summary = _summary(ev, ev0, gpp, figs, seconds, store=store_url, run_dir=run_dir,
                       steps=state.step, workers=workers, outputs=paths)
    root.join("summary.json").write_atomic((json.dumps(summary, indent=2) + "\n").encode())
    root.join("report.md").write_atomic(report_markdown(summary, resolution, years).encode())
    log.info("demo done in %.0f s: %s", seconds["total"], out_dir / "report.md")
    return summary


def _synth(store_url: str, resolution: float, years: int, seed: int) -> None:
    """The synthetic Earth at ``store_url``: reused when it opens, else (re)made."""
    try:
        open_pixel_store(store_url)
        log.info("reusing the synthetic Earth at %s", store_url)
    except Exception:  # noqa: BLE001 - missing or unusable: (re)make it (synth refuses foreign data)
        log.info("making the synthetic Earth (%.3g deg, %d years) at %s", resolution, years, store_url)
        synth_to_store(store_url, resolution=resolution, years=years, seed=seed, overwrite=True)


def _figures(root: Location, store_url: str, paths: dict[str, str]) -> list[str]:
    """The report's figures in ``root``: the learnt vs true map, the evaluation's loss curves."""
    figs = [f"map_{MAP_PARAM}.png", "loss_curves.png"]
    root.join(figs[0]).write_atomic(plot_map(store_url, paths["inference"]))
    curves = Location(paths["evaluation"]).join("figures", "training_curves.png")
    root.join(figs[1]).write_atomic(curves.read_bytes())
    return figs


def _summary(ev: dict, ev0: dict, gpp: dict, figs: list[str], seconds: dict[str, float],
             **facts) -> dict:
    """summary.json: ``facts`` (store, run_dir, steps, workers, outputs), the held-out
    numbers of the trained (``ev``) and untrained (``ev0``) evaluations, GPP against the truth."""
    rec = (ev.get("recovery") or {}).get("test", {})
    rec_param = rec.get("parameters", {}).get(MAP_PARAM, {})
    streams = {name: {"untrained": s["test"]["flat"], "trained": ev["streams"][name]["test"]["flat"],
                      "units": s["units"]}
               for name, s in ev0["streams"].items()
               if "note" not in s and ev["streams"][name]["test"]["flat"]["n"]}
    return clean({
        **facts,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "held_out": {"lai_untrained": _flat(ev0, "lai"), "lai_trained": _flat(ev, "lai"),
                     "gpp_untrained": gpp["untrained"], "gpp_trained": gpp["trained"]},
        "held_out_streams": streams,
        "held_out_param_correlation_with_truth": rec_param.get("r"),
        "held_out_param_r2": rec_param.get("r2"),
        "held_out_median_r2": rec.get("median_r2"),
        "figures": figs,
        "evaluation_figures": [f"evaluation/{f}" for f in ev.get("figures", [])],
    })


def report_markdown(s: dict, resolution: float, years: int) -> str:
    """report.md from the summary (numbers from ``differland evaluate`` and the truth)."""
    h = s["held_out"]
    lines = [
        "# differland demo report", "",
        f"Synthetic Earth at {resolution:g}° with {years} years; {s['steps']} calibration steps on "
        f"{s['workers']} Ray workers; then `differland infer` and `differland evaluate` for the "
        "trained network and for its untrained initialisation.", "",
        "Held-out pixels, never trained on (LAI and the streams: `evaluate`'s test split; GPP: the dev and test patches), after the warm-up year:", "",
        "| quantity | untrained RMSE | trained RMSE | untrained NSE | trained NSE |",
        "| --- | --- | --- | --- | --- |",
        f"| LAI vs observations (m2 m-2; `evaluate`) | {_fmt(h['lai_untrained']['rmse'])} | "
        f"{_fmt(h['lai_trained']['rmse'])} | {_fmt(h['lai_untrained']['nse'])} | {_fmt(h['lai_trained']['nse'])} |",
        f"| GPP vs the hidden truth (gC m-2 d-1) | {_fmt(h['gpp_untrained']['rmse'])} | "
        f"{_fmt(h['gpp_trained']['rmse'])} | {_fmt(h['gpp_untrained']['nse'])} | {_fmt(h['gpp_trained']['nse'])} |",
        "",
        "Every observation stream on the held-out pixels (`evaluate`, flat view; "
        "`evaluation/evaluation.md` has the spatial and temporal views and the training pixels):", "",
        "| stream | units | n | untrained NSE | trained NSE | untrained RMSE | trained RMSE |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {n} | {v['units']} | {v['trained']['n']} | {_fmt(v['untrained']['nse'])} | "
          f"{_fmt(v['trained']['nse'])} | {_fmt(v['untrained']['rmse'])} | {_fmt(v['trained']['rmse'])} |"
          for n, v in s["held_out_streams"].items()),
        "",
        f"Learnt vs true {MAP_PARAM} on held-out pixels: r = {_fmt(s['held_out_param_correlation_with_truth'])}, "
        f"R² = {_fmt(s['held_out_param_r2'])}; median R² of the 40 parameters: "
        f"{_fmt(s['held_out_median_r2'])} (`evaluation/figures/recovery.png`).", "",
        *(f"![{f}]({f})" for f in s["figures"]), "",
        "More figures from `evaluate`: " + ", ".join(f"[{Path(f).name}]({f})"
                                                   for f in s["evaluation_figures"]) + ".", "",
        "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in s["seconds"].items()) + ".", "",
    ]
    return "\n".join(lines)
