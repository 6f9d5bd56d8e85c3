"""differland_dist: distributed calibration of the DifferLand hybrid land model.

The notebook surface (docs/python.md), importable from the top level::

    import differland_dist as dl

    ds = dl.open_store("demo_out/earth.zarr")              # a store as an xarray Dataset
    tm = dl.TrainedModel.from_checkpoint("demo_out/run")   # a checkpoint, applied to xarray
    out = dl.open_output("demo_out/inference.zarr")        # an inference output
    cube = dl.gridded(out.gpp)                             # (time, lat, lon)

to write a store of one's own data ``write_store`` (an xarray Dataset following the schema) or
``import_cube`` (CF datasets, docs/data.md), to export ``export_cube`` (a CF (time, lat, lon)
cube), and the commands' functions with the configs the CLI uses: ``load_config``, ``synth_to_store``,
``calibrate``, ``run_inference`` (``InferenceOptions``), ``evaluate`` (``EvaluationOptions``),
``run_demo``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Resolved on first use: importing the package stays cheap and imports no JAX, so the CLI
# (and a notebook) can still tune the heap (differland_dist.common.allocator) before JAX loads.
_EXPORTS = {
    "open_store": "differland_dist.notebook.stores",
    "open_output": "differland_dist.notebook.stores",
    "gridded": "differland_dist.notebook.stores",
    "open_ensemble": "differland_dist.notebook.stores",
    "write_store": "differland_dist.data.store",
    "export_cube": "differland_dist.inference.cube",
    "import_cube": "differland_dist.data.importers.cube",
    "load_grid": "differland_dist.experiment",
    "run_experiment": "differland_dist.experiment",
    "TrainedModel": "differland_dist.notebook.trained",
    "Labels": "differland_dist.vocabulary.labels",
    "load_config": "differland_dist.config",
    "ExperimentConfig": "differland_dist.config",
    "synth_to_store": "differland_dist.synthetic",
    "calibrate": "differland_dist.distributed.trainer",
    "run_inference": "differland_dist.inference.pipeline",
    "InferenceOptions": "differland_dist.inference.pipeline",
    "evaluate": "differland_dist.evaluation.evaluate",
    "EvaluationOptions": "differland_dist.evaluation.evaluate",
    "run_demo": "differland_dist.cli.demo",
    "DEMO_CONFIG": "differland_dist.cli.demo",
    "DifferlandError": "differland_dist.errors",
    "Location": "differland_dist.storage.location",
    "TensorBoardHook": "differland_dist.distributed.tracking",
    "MLflowHook": "differland_dist.distributed.tracking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'differland_dist' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
