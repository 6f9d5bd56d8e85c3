"""``differland experiment``: train the grid, keep the best members, build the ensemble, score.

Experiment directory::

    DIR/experiment.yaml                     the resolved experiment (base config inline)
    DIR/experiment.jsonl                    one record per member state change
    DIR/members/<set>/m<seed>/              each member's run directory (checkpoints, metrics,
                                            network.npz; inference.zarr and evaluation/ if kept)
    DIR/ensemble/<set>.zarr                 ensemble-mean inference output of each set
    DIR/ensemble/<set>_evaluation/          its evaluation (evaluation.json, figures)
    DIR/ensemble.zarr                       mean, <name>_sd, <name>_quantile per set (ensemble.py)
    DIR/selection.json                      kept and dropped members per set, by dev loss
    DIR/scores.json, DIR/scores.md          see :mod:`differland_dist.experiment.scores`
    DIR/figures/                            test NSE by set per stream; ensemble maps
    DIR/summary.json                        what ran, failed members and why, timings
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import yaml
import zarr

from differland_dist.config import with_defaults
from differland_dist.data.store import open_store, zarr_store
from differland_dist.errors import DifferlandError
from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate
from differland_dist.evaluation.streams import RULES
from differland_dist.experiment.ensemble import (
    ENSEMBLE, MEAN_DIR, ensemble_mean_output, mean_output, stat_var, write_ensemble)
from differland_dist.experiment import probabilistic
from differland_dist.experiment import scores
from differland_dist.experiment.grid import GridConfig, grid_from_dict
from differland_dist.experiment.runner import (
    CONFIG_NAME, ExperimentRun, member_dir, member_record, train_members)
from differland_dist.experiment.selection import last_epoch_train_loss, rank_key
from differland_dist.vocabulary.series import DEFAULT_SERIES
from differland_dist.inference.pipeline import InferenceOptions, run_inference
from differland_dist.storage.lease import LEASE_FILE, Lease
from differland_dist.storage.location import OWNER_MARKER, Location, as_location
from differland_dist.storage.secrets import safe_config_dict

log = logging.getLogger(__name__)

EXPERIMENT_KIND = "experiment"
DEFAULT_MAP_PARAMS = ("canopy_efficiency", "LCMA")


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did."""

    out: Location
    run: ExperimentRun
    kept: dict[str, list[str]] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _plain(grid: GridConfig) -> dict:
    """The experiment as saved: credentials never reach a file (secrets.safe_config_dict)."""
    d = grid.to_dict()
    d["base"] = safe_config_dict(grid.base)
    return d


def prepare_dir(grid: GridConfig, out: str | Location, resume: bool) -> None:
    """Write ``experiment.yaml``, or check that an existing one is this experiment (rerun with
    ``resume``); anything else in the way is refused. ``out``: a URL string takes the base
    config's storage options."""
    loc = as_location(out, grid.base.data.storage_options)
    out = loc.url
    cfg = loc.join(CONFIG_NAME)
    want = _plain(grid)
    if cfg.exists():
        try:
            have = yaml.safe_load(cfg.read_bytes().decode())
        except yaml.YAMLError as e:
            raise DifferlandError(f"{cfg.url}: not valid YAML ({e})") from None
        if not resume:
            raise DifferlandError(f"{out} already holds an experiment: pass --resume to continue "
                                  "it, or choose another --out")
        if _comparable(have) != _comparable(want):
            diff = sorted(k for k in want if json.dumps(_comparable(have).get(k), sort_keys=True)
                          != json.dumps(_comparable(want).get(k), sort_keys=True))
            raise DifferlandError(f"{out}: the experiment there differs in {diff}; only "
                                  "training steps and cadences, the cluster, members, keep_best "
                                  "and the ensemble options may change on resume")
        cfg.write_atomic(yaml.safe_dump(want, sort_keys=False).encode())
        return
    present = [e for e in loc.entries() if e not in (OWNER_MARKER, LEASE_FILE)]
    if present:
        raise DifferlandError(f"{out}: not empty and not an experiment directory (holds "
                              f"{', '.join(present[:8])}); choose another --out")
    loc.claim(EXPERIMENT_KIND, [CONFIG_NAME, LEASE_FILE, "experiment.jsonl", "members", "ensemble",
                                "ensemble.zarr", "selection.json", "scores.json", "scores.md",
                                "figures", "summary.json"])
    cfg.write_atomic(yaml.safe_dump(want, sort_keys=False).encode())


def _comparable(d: dict) -> dict:
    """The experiment minus what may change on resume: steps, cadences, the cluster, the
    number of members and what is kept and ensembled."""
    d = json.loads(json.dumps(d))
    # a key added to the calibration config since the experiment was written reads as its default
    base = d["base"] = with_defaults(d.get("base", {}))
    base.pop("ray", None)
    for k in ("steps", "eval_every", "checkpoint_every"):
        base.get("training", {}).pop(k, None)
    for k in ("resources", "members", "keep_best", "keep_by", "inference", "ensemble_series"):
        d.pop(k, None)  # more members, another selection or ensemble: same experiment
    return d


def select(grid: GridConfig, run: ExperimentRun) -> dict[str, dict[str, list[str]]]:
    """Per set: the ``keep_best`` finished members ranked by ``grid.keep_by``
    (:mod:`~differland_dist.experiment.selection`: the final dev loss, or the last epoch's
    training loss read from each member's ``metrics.jsonl``; ties and missing losses by seed),
    and the dropped ones."""
    out = {}
    for s in grid.predictor_sets:
        done = [m for m in run.members.values() if m.set == s.name and m.state == "done"]
        train = {m.key: _epoch_loss(member_dir(run.out, m)) for m in done} if grid.keep_by == "train_loss" else {}
        done.sort(key=lambda m: rank_key(grid.keep_by, m.dev_loss, train.get(m.key), m.seed))
        out[s.name] = {"kept": [m.key for m in done[:grid.keep_best]],
                       "dropped": [m.key for m in done[grid.keep_best:]],
                       "failed": [m.key for m in run.members.values()
                                  if m.set == s.name and m.state == "failed"],
                       "keep_by": grid.keep_by}
        if train:
            out[s.name]["train_loss"] = {k: v for k, v in train.items()}
    return out


def _epoch_loss(run_dir: Location) -> float | None:
    try:
        text = run_dir.join("metrics.jsonl").read_bytes().decode()
    except FileNotFoundError:
        return None
    return last_epoch_train_loss(text)


def run_experiment(grid: GridConfig, out: str | Location, *, resume: bool = False,
                   address: str | None = None, ensemble: bool | None = None, train: bool = True,
                   inference_options=None, progress_every_s: float = 15.0,
                   force: bool = False, tensorboard: str | None = None,
                   mlflow: str | None = None) -> ExperimentResult:
    """Train (or finish training) the grid, then build the ensemble and the scores.

    Args:
      grid: the experiment (see :func:`differland_dist.experiment.grid.load_grid`).
      out: experiment directory: a Location, or a local path / object-storage URL reached with
        the base config's ``data.storage_options``.
      resume: continue an existing experiment directory (finished members are kept).
      ensemble: run inference, ensemble and scores after training (default: ``grid.inference``).
      train: train members (False: only rebuild the ensemble from finished members).
      inference_options: ``InferenceOptions`` for the members' inference.
      force: take over a stale lease on ``out`` (a driver that was killed); a live
        experiment's lease is never taken.
      tensorboard: local directory for the members' TensorBoard logs (one per member).
      mlflow: MLflow tracking URI: one MLflow run per member (see :func:`train_members`).

    One driver at a time holds the experiment directory (:mod:`differland_dist.storage.lease`).
    """
    t0 = time.time()
    data = grid.base.data.location
    root = as_location(out, data.options)
    if not data.url:
        raise DifferlandError("base config: data.url is empty (set it, or --set base.data.url=URL)")
    store = open_store(data, validate=True)  # a bad store fails before Ray
    prepare_dir(grid, root, resume or not train)
    with Lease(root, owner="experiment", force=force):
        run = (train_members(grid, root, address=address, progress_every_s=progress_every_s,
                             tensorboard=tensorboard, mlflow=mlflow)
               if train else _finished(grid, root))
        return _finish(grid, root, store, run, ensemble, inference_options, t0)


def _finish(grid, root: Location, store, run, ensemble, inference_options, t0) -> ExperimentResult:
    """Selection, the ensemble and scores (unless switched off), and the summary."""
    result = ExperimentResult(root, run)
    selection = select(grid, run)
    root.join("selection.json").write_json(selection)
    result.kept = {k: v["kept"] for k, v in selection.items()}
    if ensemble if ensemble is not None else grid.inference:
        empty = [k for k, v in result.kept.items() if not v]
        if empty:
            log.warning("no finished member in set(s) %s: left out of the ensemble", empty)
        kept = {k: v for k, v in result.kept.items() if v}
        if kept:
            result.scores = build_ensemble(grid, root, store, kept, inference_options)
            result.files += ["ensemble.zarr", "scores.json", "scores.md", "figures/"]
    summary = {"experiment": grid.name, "members": len(run.members),
               "done": len(run.by_state("done")), "failed": [
                   {"member": m.key, "error": m.error} for m in run.failed],
               "kept": result.kept, "wall_s": time.time() - t0}
    root.join("summary.json").write_json(summary)
    for m in run.failed:
        log.warning("member %s failed: %s", m.key, m.error)
    log.info("experiment %s: %d done, %d failed, in %.0f s", grid.name, summary["done"],
             len(run.failed), summary["wall_s"])
    return result


def _finished(grid: GridConfig, root: Location) -> ExperimentRun:
    """The members' states read from their run directories (no training)."""
    return ExperimentRun(root, {m.key: member_record(grid, root, m) for m in grid.members}, 0.0)


def _series_needed(grid: GridConfig) -> tuple[str, ...]:
    want = set(grid.ensemble_series) | {n for r in RULES.values() for n in r.series}
    return tuple(n for n in DEFAULT_SERIES if n in want)


def _member_outputs(grid: GridConfig, root: Location, kept: dict[str, list[str]], series,
                    inference_options) -> tuple[dict[str, list[dict]], dict[str, list[Location]]]:
    """Inference and evaluation of every kept member: (set -> evaluations, set -> outputs)."""
    opts = dataclasses.replace(inference_options or InferenceOptions(), series=series)
    data = grid.base.data.location
    quiet = EvaluationOptions(figures=False)
    evals: dict[str, list[dict]] = {}
    outputs: dict[str, list[Location]] = {}
    by_key = {m.key: m for m in grid.members}
    n_kept = sum(len(v) for v in kept.values())
    i = 0
    for set_name, keys in kept.items():
        for key in keys:
            i += 1
            rd = member_dir(root, by_key[key])
            output = rd.join("inference.zarr")
            log.info("ensemble: inference of member %s (%d/%d)", key, i, n_kept)
            run_inference(rd, output, data, options=opts)
            evals.setdefault(set_name, []).append(
                evaluate(output, store=data, out=rd.join("evaluation"), options=quiet))
            outputs.setdefault(set_name, []).append(output)
    return evals, outputs


def build_ensemble(grid: GridConfig, root: Location, store, kept: dict[str, list[str]],
                   inference_options=None) -> dict[str, Any]:
    """Inference of every kept member, their evaluations, the ensemble outputs and the scores."""
    series = _series_needed(grid)
    data = grid.base.data.location
    member_evals, outputs = _member_outputs(grid, root, kept, series, inference_options)
    ens_evals = {}
    for set_name, members in outputs.items():
        mean = mean_output(root, set_name)
        ensemble_mean_output(mean, store, members, series)
        ens_evals[set_name] = evaluate(mean, store=data, out=root.join(MEAN_DIR, f"{set_name}_evaluation"))
    write_ensemble(root.join(ENSEMBLE), store, outputs,
                       [n for n in grid.ensemble_series if n in series])
    prob = {s: probabilistic.score_members(store, members, grid.base.data.products,
                                           int(grid.base.loss.warm_up))
            for s, members in outputs.items()}
    table = scores.collect(member_evals, ens_evals, prob)
    _write_scores(grid, root, table)
    return table


def _write_scores(grid: GridConfig, root: Location, table: dict[str, Any]) -> None:
    """scores.json, scores.md and the figures (test NSE per stream, ensemble maps)."""
    root.join("scores.json").write_atomic(scores.to_json(table).encode())
    root.join("scores.md").write_atomic(scores.to_markdown(table, f"Experiment {grid.name}: scores").encode())
    streams = sorted({st for per in table.values() for st in per})
    for st in streams:
        root.join("figures", f"test_nse_{st}.png").write_atomic(scores.nse_figure(table, st, "test"))
    for name, data in ensemble_maps(root.join(ENSEMBLE)).items():
        root.join("figures", name).write_atomic(data)


def ensemble_maps(ensemble: Location, params=DEFAULT_MAP_PARAMS) -> dict[str, bytes]:
    """PNG maps of the ensemble mean and standard deviation of ``params``, one row per set."""
    # imported here: matplotlib is heavy and only the figures need it; the backend is set before
    # pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = zarr.open_group(zarr_store(ensemble), mode="r", zarr_format=3)
    if "lat" not in g:
        return {}
    sets = [str(s) for s in g["predictor_set"][:]]
    figs = {}
    for p in params:
        arrs = (g[f"map_{p}"], g[stat_var(f"map_{p}", "sd")])  # ensemble mean, sd
        units = dict(arrs[0].attrs).get("units", "")
        fig, axes = plt.subplots(len(sets), 2, figsize=(8, 2.2 * len(sets) + 0.4), dpi=100, squeeze=False)
        for i, s in enumerate(sets):
            for j, label in enumerate(("ensemble mean", "ensemble sd")):
                im = axes[i, j].imshow(arrs[j][i], cmap="viridis" if j == 0 else "magma", aspect="auto")
                axes[i, j].set_title(f"{s}: {p} {label}", fontsize=8)
                axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
                fig.colorbar(im, ax=axes[i, j], shrink=0.8, label=units)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        figs[f"ensemble_{p}.png"] = buf.getvalue()
    return figs


def load_experiment(out: str | Location) -> GridConfig:
    """The experiment saved in ``DIR/experiment.yaml`` (its base config's storage options are
    empty: pass them again where needed)."""
    loc = as_location(out)
    try:
        d = yaml.safe_load(loc.join(CONFIG_NAME).read_bytes().decode())
    except FileNotFoundError:
        raise DifferlandError(f"{out}: no {CONFIG_NAME}: not an experiment directory") from None
    return grid_from_dict(d)
