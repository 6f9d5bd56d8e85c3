"""What the analyses read from an experiment directory: each set's kept members' parameter
maps in the network's unbounded space (dates as phases: differland_dist.model.calendar), the
store's predictors, patches, splits and (synthetic stores) the true parameters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from differland_dist.data import schema
from differland_dist.data.batch import predictor_names
from differland_dist.data.store import open_store
from differland_dist.errors import DifferlandError
from differland_dist.experiment.pipeline import load_experiment
from differland_dist.inference.output import open_output
from differland_dist.storage.location import Location
from differland_dist.vocabulary.parameters import PARAM_NAMES
from differland_dist.vocabulary.series import param_var
from differland_dist.model import calendar
from differland_dist.vocabulary.parameters import all_bounds, to_unbounded
from differland_dist.synthetic import Truth

log = logging.getLogger(__name__)

#: Unbounded values are clipped to this: a parameter on its bound maps to +-inf.
X_CLIP = 50.0


def unbounded(physical: np.ndarray) -> np.ndarray:
    """(P, 40) physical parameters (``param_*`` order) -> the network's unbounded space."""
    lo, hi = all_bounds()
    p = np.clip(np.asarray(physical, np.float64), lo, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = to_unbounded(p, lo, hi)
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=X_CLIP, neginf=-X_CLIP), -X_CLIP, X_CLIP)


@dataclass
class SetMaps:
    """One predictor set: kept member keys, run directories and (M, P, 40) unbounded maps
    whose dates are phases around ``date_centre`` (day of year per date parameter)."""

    name: str
    predictors: list[str]
    members: list[str]
    run_dirs: list[Location]
    x: np.ndarray
    date_centre: dict = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        return self.x.mean(axis=0)

    @property
    def sd(self) -> np.ndarray:
        return self.x.std(axis=0, ddof=1) if self.x.shape[0] > 1 else np.zeros(self.x.shape[1:])


@dataclass
class ExperimentData:
    """Everything the analyses need, read once."""

    root: Location                           # the experiment directory
    store_url: str
    param_names: tuple[str, ...]
    sets: dict[str, SetMaps]
    predictors: dict[str, np.ndarray]        # every predictor the store holds, raw (P,)
    lat: np.ndarray
    lon: np.ndarray
    row: np.ndarray
    col: np.ndarray
    patch: np.ndarray
    split: np.ndarray
    grid_shape: tuple[int, int] | None
    true_x: np.ndarray | None = None         # (P, 40) unbounded truth (synthetic stores), dates as phases
    truth_date_centre: dict = field(default_factory=dict)
    truth: object | None = None              # synth.Truth: the hidden relation
    scores: dict = field(default_factory=dict)
    member_scores: dict = field(default_factory=dict)  # set -> member key -> evaluation.json


def full_set_name(sets: dict[str, SetMaps]) -> str:
    """The set with the most predictors (the 'full' set)."""
    return max(sets, key=lambda s: (len(sets[s].predictors), s))


def pft_set_name(sets: dict[str, SetMaps]) -> str | None:
    """The PFT-only set, if the experiment has one."""
    for s, m in sets.items():
        if list(m.predictors) == list(schema.PREDICTOR_SETS["PFT"]):
            return s
    return None


def load(experiment: Location | str, sets: list[str] | None = None,
         store: Location | None = None) -> ExperimentData:
    """Read an experiment directory (local or object storage; a URL string is taken without
    storage options) for the analyses; ``store``: where its input store is read (default: the
    experiment config's ``data.url`` and ``data.storage_options``)."""
    root = experiment if isinstance(experiment, Location) else Location(experiment)
    grid = load_experiment(root)
    try:
        selection = root.join("selection.json").read_json()
    except FileNotFoundError:
        raise DifferlandError(f"{root.url}: no selection.json: the experiment has no finished ensemble "
                              "(run `differland experiment ... --resume` to finish it)") from None
    known = [s.name for s in grid.predictor_sets]
    chosen = list(sets) if sets else [s for s in known if selection.get(s, {}).get("kept")]
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise DifferlandError(f"--sets {unknown}: not in the experiment (its sets: {known})")
    empty = [s for s in chosen if not selection.get(s, {}).get("kept")]
    if empty:
        raise DifferlandError(f"set(s) {empty}: no kept member in {root.url}/selection.json")
    src = store or Location(grid.base.data.url, dict(grid.base.data.storage_options))
    # the experiment validated the store; the analyses only read it
    pstore = open_store(src, validate=False)
    ds = pstore.ds
    P = pstore.n_pixels
    lat = np.asarray(ds["pixel_lat"].values if "pixel_lat" in ds.variables else ds["lat"].values)
    lon = np.asarray(ds["pixel_lon"].values if "pixel_lon" in ds.variables else ds["lon"].values)
    names = list(PARAM_NAMES)
    out_sets = {}
    for s in chosen:
        ps = next(p for p in grid.predictor_sets if p.name == s)
        keys = list(selection[s]["kept"])
        dirs = [root.join("members", k) for k in keys]
        xs = []
        for k, d in zip(keys, dirs):
            if not d.join("inference.zarr", "zarr.json").exists():
                raise DifferlandError(f"{d.url}: kept member {k} has no inference.zarr; run "
                                      "`differland experiment CONFIG --out DIR --ensemble-only` first")
            g = open_output(d.join("inference.zarr"))
            phys = np.stack([np.asarray(g[param_var(n)][:]) for n in PARAM_NAMES], axis=1)
            if phys.shape[0] != P:
                raise DifferlandError(f"{d.url}/inference.zarr: {phys.shape[0]} pixels, the store has {P}")
            xs.append(unbounded(phys))
        x = np.stack(xs)
        centre = calendar.centres(x, lat, names)  # one centre for the set: members average as phases
        out_sets[s] = SetMaps(s, predictor_names(list(ps.predictors)), keys, dirs,
                              calendar.align(x, lat, names, centre), centre)
        log.info("analysis: set %s, %d kept member(s)", s, len(keys))
    preds = {v.name: np.asarray(ds[v.name].values, np.float64) for v in schema.PREDICTORS
             if v.name in ds.variables and ds[v.name].dims == ("pixel",)}
    shape = pstore.attrs.get("grid_shape")
    data = ExperimentData(root, grid.base.data.url, tuple(PARAM_NAMES), out_sets, preds,
                          lat, lon, np.asarray(ds["row"].values), np.asarray(ds["col"].values),
                          np.asarray(pstore.patch), np.asarray(pstore.split),
                          tuple(shape) if shape else None)
    if "true_x" in ds.variables:
        true_x = np.asarray(ds["true_x"].values, np.float64)
        data.truth_date_centre = calendar.centres(true_x, lat, names)
        data.true_x = calendar.align(true_x, lat, names, data.truth_date_centre)
        if "truth_w1" in ds.variables:
            data.truth = Truth(*(np.asarray(ds[k].values, np.float64) for k in (
                "truth_centre", "truth_scale", "truth_w1", "truth_b1", "truth_w2",
                "truth_b2_north", "truth_b2_south")))
    if root.join("scores.json").exists():
        data.scores = root.join("scores.json").read_json()
    for s, m in out_sets.items():
        data.member_scores[s] = {}
        for k, d in zip(m.members, m.run_dirs):
            ev = d.join("evaluation", "evaluation.json")
            if ev.exists():
                data.member_scores[s][k] = ev.read_json()
    return data
