"""The synthetic Earth: a deterministic pixel store whose "true" parameters are known.

The pieces live in their own modules: :mod:`~differland_dist.synthetic.geography` (land pixels,
patches, predictors), :mod:`~differland_dist.synthetic.forcing` (monthly climate and fire),
:mod:`~differland_dist.synthetic.truth` (the hidden relation and DALEC run under it) and
:mod:`~differland_dist.synthetic.observations` (noisy products with realistic coverage). This
module draws them in order (:func:`draw_earth`), assembles the store's Dataset
(:func:`make_synthetic`) and writes it (:func:`synth_to_store`).

Everything is drawn from ``numpy.random.default_rng([seed, k])`` streams, one per purpose
(:mod:`~differland_dist.synthetic.fields`), and written without timestamps, so the same
arguments give the same store byte for byte.
"""

from __future__ import annotations

import logging
import time as _time
from typing import NamedTuple

import numpy as np
import xarray as xr

from differland_dist.data import schema, splits
from differland_dist.data.batch import assemble_forcing
from differland_dist.data.store import check_target, write_store
from differland_dist.data.tiling import monthly_axis
from differland_dist.errors import DifferlandError
from differland_dist.storage.location import Location
from differland_dist.synthetic.fields import RNG_SPLIT, stream
from differland_dist.synthetic.forcing import make_forcing
from differland_dist.synthetic.geography import (
    PFT_CLIMATE_COUPLING, LandPixels, check_coupling, make_grid, make_predictors)
from differland_dist.synthetic.observations import Product, make_observations
from differland_dist.synthetic.truth import run_dalec
from differland_dist.synthetic.truth_design import Truth
from differland_dist.vocabulary.parameters import all_bounds, to_bounded
from differland_dist.synthetic.truth_design import (
    PARAM_NAMES_ALL, PARAM_UNITS_ALL, TRUTH_FEATURES, TruthDesign, apply_truth, build_truth,
    load_design, shipped_designs)

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 5.0
DEFAULT_START = 2001
DEFAULT_YEARS = 5


class EarthSettings(NamedTuple):
    """The arguments of :func:`make_synthetic` that shape what is drawn (checked)."""

    resolution: float      # grid spacing, degrees
    start: int             # first year (January)
    years: int
    seed: int
    max_patch_size: int    # largest patch asked for, pixels
    coupling: float        # pft_climate_coupling in [0, 1]
    dev_fraction: float
    test_fraction: float


class Earth(NamedTuple):
    """Everything drawn for one synthetic Earth (P land pixels, T months)."""

    grid: LandPixels
    axis: dict[str, np.ndarray]        # the monthly time axis (data.tiling.monthly_axis)
    predictors: dict[str, np.ndarray]  # (P,) raw predictors (and internal climate fields)
    forcing: dict[str, np.ndarray]     # (P, T) series and (T,) co2
    truth: Truth
    x: np.ndarray                      # (P, 40) unbounded true parameters
    params: np.ndarray                 # (P, 40) bounded (physical) true parameters
    observations: dict[str, Product]
    split_patch: np.ndarray            # (n_patches,) split code of each patch


def draw_earth(settings: EarthSettings, truth: Truth) -> Earth:
    """Grid, predictors, forcing, the true parameters (``truth`` applied), DALEC's run under
    them, the observations and the patch splits, in this order (each from its own random
    stream)."""
    resolution, start, years, seed, max_patch_size, coupling, dev_fraction, test_fraction = settings
    t0 = _time.perf_counter()
    grid = make_grid(resolution, max_patch_size)
    axis = monthly_axis(start, years)
    log.info("synthetic Earth: %d land pixels at %g deg, %d patches (tiles of %dx%d cells), "
             "%d months from %d", grid.lat.size, resolution, int(grid.patch.max()) + 1,
             *grid.tile, axis["time"].size, start)
    pred = make_predictors(grid.lat, grid.lon, seed, coupling)
    frc = make_forcing(grid.lat, grid.lon, pred, axis, seed)
    x = apply_truth(truth, np.stack([pred[k] for k in TRUTH_FEATURES], axis=1), grid.lat)
    params = to_bounded(x, *all_bounds())
    forcing = assemble_forcing({**frc, **axis, "lat": grid.lat, "MAT": pred["MAT"],
                                "MAP": pred["MAP"]})
    log.info("predictors and forcing ready (%.1f s); running DALEC", _time.perf_counter() - t0)
    sim = run_dalec(forcing, params)
    log.info("DALEC done (%.1f s); making observations", _time.perf_counter() - t0)
    obs = make_observations(sim, frc, grid, axis, seed)
    split_patch = splits.assign(int(grid.patch.max()) + 1, dev_fraction, test_fraction,
                                stream(seed, RNG_SPLIT))
    return Earth(grid, axis, pred, frc, truth, x, params, obs, split_patch)


def _var(name: str, dims, data, extra: dict | None = None) -> xr.Variable:
    spec = {v.name: v for v in schema.COORDS + schema.FORCING + schema.PREDICTORS}[name]
    return xr.Variable(dims, np.asarray(data, dtype=spec.dtype),
                       {"units": spec.units, "long_name": spec.long_name, **(extra or {})})



def _input_variables(earth: Earth) -> dict[str, xr.Variable]:
    """Patch, split, the time series, the forcing and the predictors, as the schema says."""
    PT = ("pixel", "time")
    grid, axis, frc = earth.grid, earth.axis, earth.forcing
    data = {
        "patch": _var("patch", "pixel", grid.patch),
        "split": _var("split", "pixel", earth.split_patch[grid.patch]),
        "doy": _var("doy", "time", axis["doy"]),
        "delta_t": _var("delta_t", "time", axis["delta_t"]),
        "co2": _var("co2", "time", frc["co2"]),
    }
    for k in ("t_min", "t_max", "swrad", "vpd", "precip", "burned_area"):
        data[k] = _var(k, PT, frc[k])
    for v in schema.PREDICTORS:
        data[v.name] = _var(v.name, "pixel", earth.predictors[v.name])
    return data


def _observation_variables(obs: dict[str, Product]) -> dict[str, xr.Variable]:
    """``obs_<product>`` and its weight for every product."""
    data = {}
    for product, (value, weight, level, how) in obs.items():
        st = schema.STREAMS[schema.STREAM_INDEX[product]]
        dims = ("pixel", "time") if value.ndim == 2 else ("pixel",)
        data[schema.obs_value_name(product)] = xr.Variable(dims, value, {
            "units": st.units, "long_name": f"synthetic {st.name} observations", "stream": st.name,
            "level": level, "description": how})
        data[schema.obs_weight_name(product)] = xr.Variable(dims, weight, {
            "units": "1", "long_name": f"weight of obs_{product} (0 = missing)"})
    return data


def _truth_variables(earth: Earth) -> dict[str, xr.Variable]:
    """The true parameters (bounded and unbounded) and the hidden relation's weights."""
    pr = ("pixel", "param")
    th = ("truth_feature", "truth_hidden")
    truth = earth.truth
    return {
        "true_params": xr.Variable(pr, earth.params.astype(np.float32), {
            "units": "see param_units", "long_name": "true physical DALEC parameters, phenology "
            "dates and initial pools (init_*) behind the synthetic observations"}),
        "true_x": xr.Variable(pr, earth.x.astype(np.float32), {
            "units": "1", "long_name": "unbounded values of true_params: lo * (hi/lo) ** "
            "(atan(x)/pi + 0.5)"}),
        "truth_centre": xr.Variable("truth_feature", truth.centre, {"units": "as the feature"}),
        "truth_scale": xr.Variable("truth_feature", truth.scale, {"units": "as the feature"}),
        "truth_w1": xr.Variable(th, truth.w1, {"units": "1"}),
        "truth_b1": xr.Variable("truth_hidden", truth.b1, {"units": "1"}),
        "truth_w2": xr.Variable(("truth_hidden", "param"), truth.w2, {"units": "1"}),
        "truth_b2_north": xr.Variable("param", truth.b2, {"units": "1"}),
        "truth_b2_south": xr.Variable("param", truth.b2_south, {"units": "1"}),
    }


def _coordinates(earth: Earth) -> dict[str, xr.Variable]:
    grid = earth.grid
    return {
        "time": _var("time", "time", earth.axis["time"]),
        "lat": _var("lat", "pixel", grid.lat),
        "lon": _var("lon", "pixel", grid.lon),
        "row": _var("row", "pixel", grid.row),
        "col": _var("col", "pixel", grid.col),
        # object arrays: stored as zarr's variable-length "string" data type
        "param": xr.Variable("param", np.array(PARAM_NAMES_ALL, dtype=object)),
        "param_units": xr.Variable("param", np.array(PARAM_UNITS_ALL, dtype=object)),
        "truth_feature": xr.Variable("truth_feature", np.array(TRUTH_FEATURES, dtype=object)),
    }


def _attributes(grid: LandPixels, settings: EarthSettings, spec: TruthDesign, shipped: bool) -> dict:
    """The store's global attributes (no timestamps: the same arguments, the same bytes)."""
    resolution, start, years, seed, max_patch_size, coupling, dev_fraction, test_fraction = settings
    return {
        "differland_store_version": schema.STORE_VERSION,
        "title": f"DifferLand synthetic Earth ({resolution:g} deg, {start}-{start + years - 1}, "
                 f"seed {seed})",
        "source": "synthetic",
        "steps_per_year": 12,
        # the largest patch the tiling allows: pixel chunks no bigger than a patch needs
        "max_patch_size": int(min(max_patch_size, grid.tile[0] * grid.tile[1])),
        "grid_resolution_deg": float(resolution),
        "grid_shape": [int(n) for n in grid.shape],
        "grid_origin": "row 0 at 90 N, column 0 at 180 W; centres at +-(i + 0.5) * resolution",
        "patch_tile_cells": [int(n) for n in grid.tile],
        "land_mask": "GLOBE 1 km land-sea mask (global-land-mask package), >= 50 % land, "
                     "north of 60 S",
        "synth_seed": int(seed),
        "synth_start_year": int(start),
        "synth_years": int(years),
        "truth_design": spec.name,
        **({} if shipped else {"truth_design_yaml": spec.to_yaml()}),
        # absent: 1, the geography of the stores made before the setting existed
        **({} if coupling == PFT_CLIMATE_COUPLING else {"synth_pft_climate_coupling": coupling}),
        "test_fraction": float(test_fraction),
        "dev_fraction": float(dev_fraction),
        splits.CONVENTION_ATTR: splits.CONVENTION,
        "truth": "true_x = truth_b2_{north|south} + tanh(((F - truth_centre) / truth_scale) @ "
                 "truth_w1 + truth_b1) @ truth_w2, F = the truth_feature predictors; "
                 "true_params = bounded(true_x)",
    }


def make_synthetic(resolution: float = DEFAULT_RESOLUTION, start: int = DEFAULT_START,
                   years: int = DEFAULT_YEARS, seed: int = 0, test_fraction: float = 0.1,
                   max_patch_size: int = 320, dev_fraction: float = 0.1,
                   truth: "str | TruthDesign" = "random",
                   pft_climate_coupling: float = PFT_CLIMATE_COUPLING) -> xr.Dataset:
    """The synthetic Earth as an in-memory Dataset following the store schema.

    Args:
      resolution: grid spacing in degrees (a divisor of 180 on the 1/120 deg mask grid).
      start, years: the monthly period, January of ``start`` on.
      seed: seeds every random draw.
      test_fraction, dev_fraction: fractions of patches in the test and dev splits (by
        patch; see :mod:`differland_dist.data.splits`); the rest is train.
      max_patch_size: largest patch allowed, in pixels. The store's ``max_patch_size`` (its
        pixel chunk) is the largest patch the tiling can make: min(this, tile cells).
      truth: the hidden relation's design: a shipped name (configs/truths: "random",
        "structured"), a design YAML file, "random-structured" (drawn from ``seed``) or a
        :class:`TruthDesign` (synthetic/truth_design.py).
      pft_climate_coupling: how strongly vegetation cover follows climate, in [0, 1]
        (:func:`make_predictors`).
    """
    # grid-independent: bad designs and settings fail first
    spec = truth if isinstance(truth, TruthDesign) else load_design(truth, seed)
    coupling = check_coupling(pft_climate_coupling)
    # a shipped design is recorded by its name (stores as before); others carry their YAML
    shipped = isinstance(truth, str) and truth in shipped_designs()
    relation = build_truth(spec, seed)
    if years < 1:
        raise DifferlandError(f"years must be >= 1, got {years}")
    splits.check_fractions(dev_fraction, test_fraction)
    t0 = _time.perf_counter()
    settings = EarthSettings(resolution, start, years, seed, max_patch_size, coupling,
                             dev_fraction, test_fraction)
    earth = draw_earth(settings, relation)
    data = {**_input_variables(earth), **_observation_variables(earth.observations),
            **_truth_variables(earth)}
    ds = xr.Dataset(data, coords=_coordinates(earth),
                    attrs=_attributes(earth.grid, settings, spec, shipped))
    log.info("synthetic Earth built in %.1f s", _time.perf_counter() - t0)
    return ds


def synth_to_store(where: Location | str, resolution: float = DEFAULT_RESOLUTION, start: int = DEFAULT_START,
                   years: int = DEFAULT_YEARS, seed: int = 0, test_fraction: float = 0.1,
                   max_patch_size: int = 320,
                   overwrite: bool = False, dev_fraction: float = 0.1,
                   truth: "str | TruthDesign" = "random",
                   pft_climate_coupling: float = PFT_CLIMATE_COUPLING) -> xr.Dataset:
    """Make the synthetic Earth and write it to ``where`` (atomically: complete flag last).
    Returns the in-memory Dataset."""
    spec = truth if isinstance(truth, TruthDesign) else load_design(truth, seed)  # bad designs fail first
    check_coupling(pft_climate_coupling)
    check_target(where, overwrite=overwrite)  # fail before minutes of work, not after
    ds = make_synthetic(resolution=resolution, start=start, years=years, seed=seed,
                        test_fraction=test_fraction, max_patch_size=max_patch_size,
                        dev_fraction=dev_fraction,
                        truth=truth if isinstance(truth, str) and truth in shipped_designs() else spec,
                        pft_climate_coupling=pft_climate_coupling)
    write_store(ds, where, overwrite=overwrite)
    return ds
