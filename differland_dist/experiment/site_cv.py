"""Leave-sites-out cross-validation over the sites of a site store.

The sites are split into folds (``"loo"``: one site each; k: k folds, site i in fold i mod k,
in store order). For each predictor set and fold, a copy of the store with the fold's sites as
test (``split`` = 2, no time split) is calibrated with the config, and the held-out sites are
scored on every year after the warm-up (:mod:`~differland_dist.experiment.site_scores`).
Runs resume: a fold whose run finished is only scored again. The result is JSON (per predictor
set: per-site scores, the median, the folds) and a markdown summary.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from differland_dist.data import splits
from differland_dist.errors import ConfigError, DifferlandError
from differland_dist.experiment.site_scores import median_scores, score_table, site_scores

log = logging.getLogger(__name__)


def parse_folds(text: str | int) -> str | int:
    """``"loo"`` or a whole number of folds >= 2 (ConfigError otherwise)."""
    if str(text).strip().lower() == "loo":
        return "loo"
    try:
        k = int(text)
    except (TypeError, ValueError):
        k = 0
    if k < 2:
        raise ConfigError(f"--folds {text!r}: expected loo or a number of folds >= 2")
    return k


def cv_folds(site_ids: Sequence[str], folds: str | int) -> list[tuple[str, ...]]:
    """The held-out sites of each fold: ``"loo"`` one site a fold; k: site i in fold i mod k."""
    ids = list(site_ids)
    k = len(ids) if folds == "loo" else int(folds)
    if len(ids) < 2 or k > len(ids):
        raise ConfigError(f"--folds {folds}: needs at least 2 sites and no more folds than "
                          f"sites; the store has {len(ids)} ({', '.join(ids)})")
    return [tuple(ids[i] for i in range(len(ids)) if i % k == f) for f in range(k)]


def write_fold_store(src_url: str, dst_url: str, held_out: Sequence[str]) -> None:
    """Copy the site store ``src_url`` to ``dst_url`` with the ``held_out`` sites as test
    (split = 2), the rest train, and no time split. Rewritten only if absent or different."""
    import xarray as xr

    from differland_dist.data.store import open_store, write_store

    dst = Path(dst_url)
    if dst.exists():
        try:
            old = open_store(dst_url)
            ids = np.asarray(old.array("site_id")[...]).astype(str)
            if sorted(ids[old.split == splits.TEST]) == sorted(held_out):
                return
        except DifferlandError:
            pass  # an incomplete copy: written again
    ds = xr.open_zarr(src_url, zarr_format=3, consolidated=True, decode_times=False).load()
    ids = ds["site_id"].values.astype(str)
    ds["split"] = ds["split"].copy(data=np.where(np.isin(ids, list(held_out)), splits.TEST,
                                                 splits.TRAIN).astype(ds["split"].dtype))
    ds = ds.drop_vars([v for v in ("time_test",) if v in ds.variables])
    ds.attrs["time_split"] = f"none: leave-sites-out fold, test sites {', '.join(held_out)}"
    ds.attrs.pop("complete", None)
    write_store(ds, dst_url, overwrite=dst.exists())


@dataclass(frozen=True)
class CVPlan:
    """What one cross-validation runs: the config file and its overrides, the predictor sets
    (each a list of set names), the folds, and the work directory (fold stores and runs)."""

    config: str
    overrides: tuple[str, ...]
    predictor_sets: tuple[tuple[str, ...], ...]
    folds: str | int
    work: str


def set_name(sets: Sequence[str]) -> str:
    return "+".join(sets)


def run_site_cv(plan: CVPlan) -> dict:
    """Calibrate and score every (predictor set, fold); returns the result dict (JSON-able)."""
    from differland_dist.config import load_config
    from differland_dist.data.store import open_store
    from differland_dist.distributed import pool
    from differland_dist.distributed.trainer import calibrate
    from differland_dist.distributed.worker import worker_env

    base = load_config(plan.config, list(plan.overrides))
    for sets in plan.predictor_sets:  # every set checked before anything long runs
        load_config(plan.config, [*plan.overrides, f"data.predictors={','.join(sets)}"])
    store = open_store(base.data.url)
    if "site_id" not in store.array_names:
        raise DifferlandError(f"{base.data.url}: not a site store (no site_id)")
    ids = [str(x) for x in np.asarray(store.array("site_id")[...])]
    folds = cv_folds(ids, plan.folds)
    work = Path(plan.work)
    work.mkdir(parents=True, exist_ok=True)
    fold_stores = [str(work / f"fold{f}.zarr") for f in range(len(folds))]
    for url, held in zip(fold_stores, folds):  # all written (and validated) before Ray starts
        write_fold_store(base.data.url, url, held)
    rc = base.ray  # joined once here, as the trainer would, so folds share one cluster
    started = pool.connect(rc, {**{k: v for k, v in rc.runtime_env.items() if k != "env_vars"},
                                "env_vars": worker_env(rc)})
    result = {"config": str(plan.config), "overrides": list(plan.overrides),
              "store": base.data.url, "sites": ids, "folds": [list(f) for f in folds],
              "steps": base.training.steps, "date": time.strftime("%Y-%m-%d"), "sets": {}}
    try:
        for sets in plan.predictor_sets:
            name, per_site, secs = set_name(sets), {}, 0.0
            for f, held in enumerate(folds):
                fold_store = fold_stores[f]
                cfg = load_config(plan.config, [*plan.overrides, f"data.url={fold_store}",
                                                f"data.predictors={','.join(sets)}"])
                run = str(work / name / f"fold{f}")
                t0 = time.perf_counter()
                calibrate(cfg, run, resume=True)
                secs += time.perf_counter() - t0
                per_site.update(site_scores(run, fold_store, "held_out_sites"))
                log.info("%s fold %d (%s): %s", name, f, ", ".join(held),
                         json.dumps({s: per_site[s] for s in held}))
            result["sets"][name] = {"predictors": list(sets), "per_site": per_site,
                                    "median": median_scores(per_site), "seconds": secs}
    finally:
        if started:
            import ray

            ray.shutdown()
    return result


def cv_markdown(result: dict) -> str:
    """The markdown summary of a :func:`run_site_cv` result: one table per predictor set."""
    lines = [f"# Leave-sites-out cross-validation ({len(result['folds'])} folds, "
             f"{len(result['sites'])} sites, {result['steps']} steps)", "",
             "Monthly NSE on the held-out sites, every year after the warm-up, observed "
             "months only. Folds: " + "; ".join(", ".join(f) for f in result["folds"]) + "."]
    for name, r in result["sets"].items():
        lines += ["", f"## Predictors {name}", "", score_table(r["per_site"], result["sites"])]
    return "\n".join(lines) + "\n"


def write_cv(result: dict, out_dir: str) -> tuple[Path, Path]:
    """``cv_sites.json`` and ``cv_sites.md`` in ``out_dir`` (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "cv_sites.json", out / "cv_sites.md"
    for p, text in zip(paths, (json.dumps(result, indent=1), cv_markdown(result))):
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(p)
    return paths


__all__ = ["CVPlan", "cv_folds", "cv_markdown", "parse_folds", "run_site_cv",
           "set_name", "write_cv", "write_fold_store"]
