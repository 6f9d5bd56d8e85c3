"""A trained model for notebooks: one checkpoint (network, standardisation, config) applied
to xarray batches of a pixel store.

    import differland_dist as dl

    ds = dl.open_store("demo_out/earth.zarr")               # the store, lazily
    tm = dl.TrainedModel.from_checkpoint("demo_out/run")    # a run directory or a .npz
    p = tm.parameters(ds)                                   # 40 variables (pixel,), with units
    sim = tm.simulate(ds.isel(pixel=slice(0, 50)))          # monthly series (pixel, time)

A *batch* is an :class:`xarray.Dataset` holding a store's variables for some pixels: a store
opened with :func:`differland_dist.notebook.stores.open_store`, or a subset of it along ``pixel`` (and,
for :meth:`TrainedModel.simulate`, along ``time``: the run then starts at the batch's first
step from the network's initial pools). Only the variables the model needs are read
(:meth:`TrainedModel.required_variables`), so a lazily opened store costs the subset's bytes.

The computation is inference's (:mod:`differland_dist.inference.compute`): the same network
inputs, the same compiled forward function, so ``simulate`` gives the series ``differland
infer`` writes for the same pixels.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from differland_dist.data.batch import (
    FORCING_PIXEL_VARS, FORCING_VARS, assemble_forcing, assemble_predictors, predictor_names)
from differland_dist.data.schema import PER_PIXEL_FORCING, by_pixel_name
from differland_dist.errors import ConfigError, DifferlandError
from differland_dist.inference.compute import (
    check_standardizer, compiled_forward, flat_parameters, network_inputs, network_parameters,
    pad_pixels, required_store_vars)
from differland_dist.vocabulary.series import (
    DEFAULT_SERIES, SERIES_BY_NAME, check_series, model_outputs_for)
from differland_dist.vocabulary.parameters import (
    PARAM_NAMES, PARAMETERS, PHENOLOGY_PARAMETERS, PROCESS_PARAMETERS)
from differland_dist.vocabulary.units import udunits
from differland_dist.model.rollout import rollout
from differland_dist.model.structures import Forcing, Parameters
from differland_dist.network.standardize import input_names
from differland_dist.runs.trained import load_trained
from differland_dist.storage.location import Location, as_location

log = logging.getLogger(__name__)

#: Pixel coordinates copied from a batch onto every result (when the batch has them).
PIXEL_COORDS = ("pixel", "pixel_lat", "pixel_lon", "row", "col", "patch", "split")
#: Store names of the per-pixel position, and the names :func:`~differland_dist.notebook.stores.open_store`
#: gives them (the inference output's).
_RENAMED = {"lat": "pixel_lat", "lon": "pixel_lon"}
#: Default pixels per compiled call of :meth:`TrainedModel.simulate` (bounds its memory).
BLOCK_PIXELS = 4096


def _numeric_time(da: xr.DataArray) -> np.ndarray:
    """A time variable as the store's numbers (model days): decoded datetimes are encoded back
    with the variable's own units (``days since 2001-01-01`` when it has none)."""
    v = da.values
    if not np.issubdtype(v.dtype, np.datetime64):
        return np.asarray(v, np.float64)
    units = da.encoding.get("units", "days since 2001-01-01")
    calendar = da.encoding.get("calendar", "standard")
    num, _, _ = xr.coding.times.encode_cf_datetime(v, units, calendar, dtype=np.dtype(np.float64))
    return np.asarray(num, np.float64)


class TrainedModel:
    """Checkpoint + config + standardisation of a trained (or imported) network.

    Attributes:
      record: the :class:`differland_dist.runs.trained.TrainedCheckpoint` it wraps (network, network
        config, standardizer, config, step, source, checkpoint metadata).
    """

    def __init__(self, record):
        self.record = record

    @classmethod
    def from_checkpoint(cls, where: str | Location) -> "TrainedModel":
        """Load a checkpoint ``.npz`` or a run directory (its final network, else its latest
        checkpoint): a path, a ``gs://`` / ``s3://`` URL, or a :class:`Location` (with options)."""
        return cls(load_trained(as_location(where)))

    # -- what it is -------------------------------------------------------------------------------
    @property
    def config(self):
        """The run's full :class:`~differland_dist.config.ExperimentConfig`."""
        return self.record.config

    @property
    def step(self) -> int:
        return self.record.step

    @property
    def network(self):
        """The network weights (:class:`~differland_dist.network.mlp.NetworkParams`)."""
        return self.record.network

    @property
    def network_config(self):
        return self.record.network_config

    @property
    def standardizer(self):
        """The training pixels' statistics of the network inputs ``[hemisphere, predictors]``."""
        return self.record.standardizer

    @property
    def source(self) -> str:
        """The checkpoint file it was loaded from."""
        return self.record.source

    @property
    def predictor_names(self) -> list[str]:
        """Raw predictors in network order (without the hemisphere feature)."""
        return predictor_names(self.config.data.predictors)

    def required_variables(self) -> list[str]:
        """Store variables a batch must hold (forcing, position, predictors)."""
        return required_store_vars(self.predictor_names)

    def __repr__(self) -> str:
        return (f"TrainedModel({self.source!r}, step={self.step}, "
                f"predictors={list(self.config.data.predictors)})")

    # -- reading a batch --------------------------------------------------------------------------
    def _check_batch(self, batch) -> None:
        if not isinstance(batch, xr.Dataset):
            raise DifferlandError(f"a batch must be an xarray.Dataset of store variables (from "
                                  f"differland_dist.open_store, or a subset by pixel), got "
                                  f"{type(batch).__name__}")
        if "pixel" not in batch.dims:
            raise DifferlandError("the batch has no 'pixel' dimension: pass a store opened with "
                                  "differland_dist.open_store (select pixels with .isel/.sel, "
                                  "keeping the dimension: pixel=[i], not pixel=i)")

    def _name(self, batch: xr.Dataset, name: str) -> str | None:
        """The batch's variable for a store variable: the pixel position ``lat`` / ``lon`` is
        ``pixel_lat`` / ``pixel_lon`` in an opened store (``lat`` / ``lon`` are its grid)."""
        if name in _RENAMED:
            for cand in (_RENAMED[name], name):
                if cand in batch.variables and batch[cand].dims == ("pixel",):
                    return cand
            return None
        return name if name in batch.variables else None

    def _read(self, batch: xr.Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Store variables of the batch as numpy arrays (ConfigError naming missing ones)."""
        found = {n: self._name(batch, n) for n in names}
        missing = [n for n, b in found.items() if b is None]
        if missing:
            raise ConfigError(f"the batch lacks variable(s) {missing} that the model needs "
                              f"(predictor sets {list(self.config.data.predictors)}); open the "
                              "whole store with differland_dist.open_store and subset by pixel")
        out = {}
        for n, b in found.items():
            # per-step forcing given per pixel (sites of different years) wins, as in inference
            by = by_pixel_name(n) if n in PER_PIXEL_FORCING else None
            if by is not None and by in batch.variables:
                b = by
            da = batch[b]
            if n == "time":
                out[n] = _numeric_time(da)
            elif np.issubdtype(da.dtype, np.timedelta64):  # delta_t decoded by a user's reader
                out[n] = np.asarray(da.values / np.timedelta64(1, "D"), np.float64)
            else:
                out[n] = np.asarray(da.values)
        return out

    def _pixel_coords(self, batch: xr.Dataset) -> dict[str, xr.Variable]:
        coords = {}
        for name in PIXEL_COORDS:
            raw = {v: k for k, v in _RENAMED.items()}.get(name)
            src = name if name in batch.variables else raw if raw in batch.variables else None
            if src is not None and batch[src].dims == ("pixel",):
                coords[name] = xr.Variable("pixel", np.asarray(batch[src].values), batch[src].attrs)
        return coords

    def _grid_coords(self, batch: xr.Dataset) -> dict[str, xr.Variable]:
        """The grid's lat/lon dimension coordinates, when the batch has them (for maps)."""
        return {d: batch[d].variable for d in ("lat", "lon") if d in batch.dims and d in batch.coords}

    # -- the model ----------------------------------------------------------------------------
    def _inputs_array(self, batch: xr.Dataset) -> np.ndarray:
        names = self.predictor_names
        check_standardizer(self.record.standardizer, names)
        v = self._read(batch, ["lat", *(n for n in names if n != "null")])
        raw = assemble_predictors(v, names, batch.sizes["pixel"])
        return network_inputs(raw, np.asarray(v["lat"]), self.record.standardizer)

    def inputs(self, batch: xr.Dataset) -> xr.DataArray:
        """Standardised network inputs (pixel, input) float32: ``[hemisphere, predictors...]``
        as in training (``input`` coordinate: their names)."""
        self._check_batch(batch)
        x = self._inputs_array(batch)
        names = input_names(self.predictor_names)
        return xr.DataArray(x, dims=("pixel", "input"),
                            coords={**self._pixel_coords(batch), "input": names},
                            name="inputs", attrs={"units": "1", "long_name":
                                                  "standardised network inputs"})

    def _flat_parameters(self, x: np.ndarray) -> np.ndarray:
        p = network_parameters(self.record.network, jnp.asarray(x),
                               self.record.network_config.activation)
        return np.asarray(flat_parameters(p), np.float32)

    def parameters(self, batch: xr.Dataset) -> xr.Dataset:
        """The 40 physical parameters per pixel (31 process, ``Bday``, ``Fday``, 7 initial
        pools ``init_<pool>``): variables (pixel,) float32 named as the parameter table (the
        inference output's ``param_<name>`` without the prefix), with ``units`` and
        ``long_name``."""
        self._check_batch(batch)
        flat = self._flat_parameters(self._inputs_array(batch))
        data = {b.output_name: xr.Variable("pixel", flat[:, j], {"units": udunits(b.units),
                                                                  "long_name": b.long_name})
                for j, b in enumerate(PARAMETERS)}
        return xr.Dataset(data, coords={**self._pixel_coords(batch), **self._grid_coords(batch)},
                          attrs=self._attrs())

    def _attrs(self) -> dict[str, Any]:
        return {"checkpoint": self.source, "checkpoint_step": int(self.step),
                "model_closed_budget": int(bool(self.config.model.closed_budget))}

    def simulate(self, batch: xr.Dataset, series: Sequence[str] | None = None,
                 parameters: xr.Dataset | xr.DataArray | None = None,
                 block_pixels: int = BLOCK_PIXELS) -> xr.Dataset:
        """Run the network and DALEC over the batch's pixels and steps.

        Args:
          batch: store variables of some pixels (see the module docstring).
          series: output series (``differland_dist.vocabulary.series.SERIES`` names; default
            all: gpp, reco, ra, rh, nee, nbe, fire, et, lai, sif, vod, runoff, pool_*).
          parameters: physical parameters to run instead of the network's, for the batch's
            pixels in its order: a Dataset as :meth:`parameters` returns (``param_``-prefixed
            names also accepted), or a (pixel, param) DataArray with a ``param`` coordinate
            of names (a synthetic store's ``true_params``).
          block_pixels: pixels per compiled call (bounds memory; one compilation per shape).

        Returns a Dataset of (pixel, time) float32 series with ``units`` and ``long_name``
        (the inference output's), the batch's ``time`` and pixel coordinates.
        """
        self._check_batch(batch)
        names = check_series(series if series is not None else DEFAULT_SERIES)
        if block_pixels < 1:
            raise DifferlandError(f"block_pixels must be >= 1, got {block_pixels}")

        forcing = assemble_forcing(self._read(batch, [*FORCING_VARS, *FORCING_PIXEL_VARS]))
        P, T = forcing.shape[:2]
        cfg = self.config
        if parameters is None:
            x = self._inputs_array(batch)
        else:
            flat = self._parameter_array(parameters, batch)
        size = min(P, int(block_pixels))
        ys = np.empty((P, T, len(names)), np.float32)
        log.debug("simulating %d pixels x %d steps in blocks of %d (%s parameters)", P, T, size,
                  "the network's" if parameters is None else "given")
        for a in range(0, P, size):
            b = min(a + size, P)
            f = pad_pixels(forcing[a:b], size)
            if parameters is None:
                fn = compiled_forward(self.record.network, names, cfg.network.activation,
                                      bool(cfg.model.closed_budget), size, x.shape[1], T,
                                      int(cfg.model.unroll))
                _, y = fn(self.record.network, pad_pixels(x[a:b], size), f)
            else:
                y = _series_fn(names, bool(cfg.model.closed_budget), int(cfg.model.unroll))(
                    pad_pixels(flat[a:b], size), f)
            ys[a:b] = np.asarray(y)[: b - a]
        coords: dict[str, Any] = {**self._pixel_coords(batch), **self._grid_coords(batch)}
        if "time" in batch.coords:
            coords["time"] = batch["time"].variable
        data = {}
        for i, n in enumerate(names):
            s = SERIES_BY_NAME[n]
            data[n] = xr.Variable(("pixel", "time"), ys[..., i],
                                  {"units": s.units, "long_name": s.long_name,
                                   "model_outputs": " + ".join(s.sources)})
        attrs = self._attrs()
        if parameters is not None:
            attrs["parameters"] = "given (not the network's)"
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def _parameter_array(self, parameters, batch: xr.Dataset) -> np.ndarray:
        """(P, 40) float32 in ``PARAM_NAMES`` order from a Dataset or a (pixel, param) array."""
        P = batch.sizes["pixel"]
        if isinstance(parameters, xr.DataArray):
            if set(parameters.dims) != {"pixel", "param"} or "param" not in parameters.coords:
                raise DifferlandError(f"parameters: a DataArray needs dims (pixel, param) and a "
                                      f"'param' coordinate of names, got dims {parameters.dims}")
            have = [str(n) for n in parameters["param"].values]
            missing = [n for n in PARAM_NAMES if n not in have]
            cols = None if missing else parameters.transpose("pixel", "param").values[
                :, [have.index(n) for n in PARAM_NAMES]]
        elif isinstance(parameters, xr.Dataset):
            def var(n):
                return n if n in parameters.variables else f"param_{n}" if \
                    f"param_{n}" in parameters.variables else None
            missing = [n for n in PARAM_NAMES if var(n) is None]
            cols = None if missing else np.stack(
                [np.asarray(parameters[var(n)].values) for n in PARAM_NAMES], axis=-1)
        else:
            raise DifferlandError(f"parameters: expected an xarray Dataset or DataArray, got "
                                  f"{type(parameters).__name__}")
        if missing:
            raise DifferlandError(f"parameters lack {len(missing)} of the 40 parameters: {missing}")
        if cols.shape != (P, len(PARAM_NAMES)):
            raise DifferlandError(f"parameters hold {cols.shape[0]} pixels, the batch {P}: pass "
                                  "the parameters of the batch's pixels")
        if "pixel" in parameters.coords and "pixel" in batch.coords and not np.array_equal(
                parameters["pixel"].values, batch["pixel"].values):
            raise DifferlandError("parameters and batch hold different pixels (their 'pixel' "
                                  "coordinates differ): select the same pixels in both")
        if not np.all(np.isfinite(cols)):
            raise DifferlandError("parameters hold NaN or infinite values")
        return np.asarray(cols, np.float32)


@lru_cache(maxsize=8)
def _series_fn(series: tuple[str, ...], closed_budget: bool, unroll: int):
    """Jitted ``f(params (P, 40), forcing (P, T, 17)) -> series (P, T, S)``: DALEC with given
    physical parameters (the counterpart of ``compute.forward_fn`` without the network)."""
    needed = model_outputs_for(series)
    sources = [SERIES_BY_NAME[n].sources for n in series]

    a, b = len(PROCESS_PARAMETERS), len(PROCESS_PARAMETERS) + len(PHENOLOGY_PARAMETERS)

    @jax.jit
    def f(flat, forcing):
        params = Parameters.from_arrays(flat[:, :a], flat[:, a:b], flat[:, b:])
        _, out, _ = rollout(params, Forcing.from_array(forcing), outputs=needed,
                            closed_budget=closed_budget, unroll=unroll)
        return jnp.stack([sum((out[s] for s in src[1:]), out[src[0]]) for src in sources], axis=-1)

    return f
