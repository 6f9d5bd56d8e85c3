"""``differland evaluate``: observation-stream metrics, parameter recovery and figures.

The target is an inference output store (its attributes name the input store, the checkpoint
and the training config) or a run directory; for a run directory the output
``RUN_DIR/inference.zarr`` is made first with the inference pipeline if it is missing or
partial (resuming it) or made from an older network of the run (replacing it), so evaluation
always reads stored model output, block by block (:mod:`~differland_dist.evaluation.targets`).

What is written to the output directory (default: ``RUN_DIR/evaluation`` for a run directory,
``<output without .zarr>_evaluation`` beside an output store):

* ``evaluation.json``: inputs, per stream (of ``differland_dist.vocabulary.streams``) and split (train / dev / test:
  the split the run trained with, i.e. its own draw when ``data.split_seed`` is set) the
  flat, spatial and temporal metrics (:mod:`differland_dist.evaluation.metrics`; NaN as null),
  and, for synthetic stores, the recovery of the true parameters per parameter;
* ``evaluation.md``: the same as Markdown tables;
* ``evaluation.zarr``: for gridded outputs, the skill maps, zonal means and global totals
  (:mod:`~differland_dist.evaluation.products`);
* ``figures/*.png``: parameter maps, observed-vs-simulated density per stream, series at a few
  held-out pixels, training curves (from ``RUN_DIR/metrics.jsonl`` when found) and recovery
  (:mod:`~differland_dist.evaluation.figures`).

This module is the orchestration: each step is a function of its own module.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, NamedTuple

import numpy as np

from differland_dist.config import ExperimentConfig, from_dict
from differland_dist.data import splits
from differland_dist.data.store import PixelStore
from differland_dist.errors import DifferlandError
from differland_dist.evaluation import report
from differland_dist.evaluation.compare import compare
from differland_dist.evaluation.figures import carbon_figures, make_figures
from differland_dist.evaluation.options import EvaluationOptions
from differland_dist.evaluation.paper import paper_conventions
from differland_dist.evaluation.products import (
    PRODUCTS_KIND, PRODUCTS_NAME, carbon_products, paper_map_dataset, products_dataset,
    write_products)
from differland_dist.evaluation.recovery import recovery_from_store
from differland_dist.evaluation.targets import Target, default_out_dir, resolve_target
from differland_dist.inference.output import open_output
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)


class Inputs(NamedTuple):
    """What an evaluation reads: the target, the output group and its attributes, the run's
    config, the input store (where, and opened), and the per-pixel split codes the run
    trained with."""

    target: Target
    group: Any
    attrs: dict
    cfg: ExperimentConfig
    store_at: Location
    store: PixelStore
    codes: np.ndarray


def open_inputs(target: Location, store: Location | None, inference) -> Inputs:
    """Resolve the target (running inference for a run directory), open its complete output
    and its input store, and check they belong together."""
    tgt = resolve_target(target, store, inference)
    group = open_output(tgt.output)
    attrs = dict(group.attrs)
    if not attrs.get("complete"):
        raise DifferlandError(f"{tgt.output.url}: the inference output is not complete; run "
                              "`differland infer` again to finish it")
    cfg = from_dict(json.loads(attrs["config_json"]))
    src = store if store is not None else Location(attrs["source_store"], target.options)
    pstore = PixelStore(src)
    if (pstore.n_pixels, pstore.n_time) != (int(attrs["n_pixels"]), int(attrs["n_time"])):
        raise DifferlandError(f"{src.url} has {pstore.n_pixels} pixels x {pstore.n_time} steps, "
                              f"the output {attrs['n_pixels']} x {attrs['n_time']}: not its input store")
    # the split the run trained with: the store's, a published run's (data.run) or its own
    # draw (data.split_seed)
    codes = splits.pixel_codes(pstore.patch, splits.of_data(pstore, cfg.data))
    return Inputs(tgt, group, attrs, cfg, src, pstore, codes)


def check_before_work(inp: Inputs, out_dir: Location, options: EvaluationOptions) -> None:
    """Refuse what would fail late: a foreign ``evaluation.zarr`` in the way, a paper warm-up
    longer than the store."""
    if inp.attrs.get("has_maps"):
        out_dir.join(PRODUCTS_NAME).check_replaceable(PRODUCTS_KIND, overwrite=True)
    if options.conventions == "paper" and options.paper_warm_up >= inp.store.n_time:
        raise DifferlandError(f"paper conventions: the {options.paper_warm_up}-step warm-up leaves "
                              f"nothing of the store's {inp.store.n_time} steps")


def inputs_record(inp: Inputs) -> dict[str, Any]:
    """The ``inputs`` section of ``evaluation.json``."""
    wu, run_dir = int(inp.cfg.loss.warm_up), inp.target.run_dir
    return {"store": inp.store_at.url, "checkpoint": inp.attrs.get("checkpoint_file"),
            "checkpoint_step": inp.attrs.get("checkpoint_step"), "warm_up": wu,
            "steps_evaluated": inp.store.n_time - wu,
            "run_dir": None if run_dir is None else run_dir.url,
            "n_pixels": inp.store.n_pixels,
            "n_dev_pixels": int((inp.codes == splits.DEV).sum()),
            "n_test_pixels": int((inp.codes == splits.TEST).sum()),
            "split_seed": inp.cfg.data.split_seed}


def write_carbon_products(inp: Inputs, out_dir: Location, skill: dict, totals: dict,
                          plan: dict, paper_maps: dict) -> dict[str, Any]:
    """Write ``evaluation.zarr`` (our skill maps, totals and zonal means, and the paper's
    skill maps with ``--conventions paper``); its entry of ``evaluation.json``."""
    ds = products_dataset(inp.group, skill, totals, plan, f"evaluation of {inp.target.output.url}")
    if paper_maps:  # the paper's skill maps beside ours (--conventions paper)
        ds = ds.merge(paper_map_dataset(inp.group, paper_maps), combine_attrs="override")
    write_products(out_dir.join(PRODUCTS_NAME), ds)
    return {"store": PRODUCTS_NAME, "variables": sorted(map(str, ds.data_vars))}


def evaluate(target: Location | str, *, store: Location | str | None = None,
             out: Location | str | None = None, options: EvaluationOptions = EvaluationOptions(),
             inference=None) -> dict[str, Any]:
    """Evaluate an inference output or a run directory; write JSON, Markdown and figures.

    Args:
      target: inference output store or run directory (see the module docstring); its
        options reach the output, the run directory and (by default) the results.
      store: input store (default: the one the output was made from, with ``target``'s options).
      out: output directory (default: see the module docstring).
      inference: ``InferenceOptions`` for a run directory without complete inference output.

    A URL string is taken as a ``Location`` without storage options. Returns the result (as
    written to ``evaluation.json``).
    """
    t0 = time.perf_counter()
    target = target if isinstance(target, Location) else Location(target)
    store = store if store is None or isinstance(store, Location) else Location(store)
    inp = open_inputs(target, store, inference)
    out_dir = (default_out_dir(target, inp.target.is_run_dir) if out is None
               else out if isinstance(out, Location) else Location(out, target.options))
    check_before_work(inp, out_dir, options)
    skill: dict[str, dict[str, np.ndarray]] = {}
    plan, samples = compare(inp.store, inp.group, inp.cfg, options, skill=skill, split=inp.codes)
    rec = recovery_from_store(inp.store, inp.group, inp.codes)
    totals = carbon_products(inp.group, int(inp.cfg.loss.warm_up), options.block_pixels)
    paper_maps: dict[str, Any] = {}
    paper = (paper_conventions(inp.store, inp.group, inp.cfg, inp.codes,
                               warm_up=options.paper_warm_up, block_pixels=options.block_pixels,
                               maps=paper_maps)
             if options.conventions == "paper" else None)
    result: dict[str, Any] = {
        "output": inp.target.output.url, "inputs": inputs_record(inp), "streams": plan,
        "recovery": rec, "paper_conventions": paper,
        "global_totals": None if totals is None else
        {k: v for k, v in totals.items() if k not in ("zonal_means", "zonal_units")},
        "products": None, "figures": []}
    if totals is not None:
        result["products"] = write_carbon_products(inp, out_dir, skill, totals, plan, paper_maps)
    if options.figures:
        figs = make_figures(inp.store, inp.group, inp.cfg, plan, samples, options,
                            inp.target.run_dir, rec, split=inp.codes)
        if totals is not None:
            figs.update(carbon_figures(inp.group, skill, totals, plan))
        for name, data in figs.items():
            out_dir.join("figures", name).write_atomic(data)
        result["figures"] = [f"figures/{n}" for n in figs]
    out_dir.join("evaluation.json").write_atomic(report.to_json(result).encode())
    out_dir.join("evaluation.md").write_atomic(report.to_markdown(result).encode())
    result["out_dir"] = out_dir.url
    log.info("evaluation of %s written to %s in %.1f s", inp.target.output.url, out_dir.url,
             time.perf_counter() - t0)
    return result
