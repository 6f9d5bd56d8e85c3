"""What ``differland analyze`` writes into its output directory: JSON made of plain values
(:func:`jsonable`), the per-analysis JSON files, the CF zarr stores of the gradients, SHAP
values and uncertainty, and the figures."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from differland_dist.analysis import report
from differland_dist.analysis.cf_store import cf_dataset
from differland_dist.data.store import zarr_store
from differland_dist.storage.location import Location


def jsonable(x: Any) -> Any:
    """``x`` with numpy values as Python ones, non-finite floats as None and ``arrays``
    entries dropped."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if k != "arrays"}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(loc: Location, obj: Any) -> None:
    """``obj`` as indented JSON (:func:`jsonable`), written atomically."""
    loc.write_atomic(json.dumps(jsonable(obj), indent=1, allow_nan=False).encode())


def write_zarr(loc: Location, data_vars: dict, coords: dict, attrs: dict | None = None) -> None:
    """A CF dataset (units, Conventions, provenance: :func:`cf_dataset`) as a zarr store."""
    ds = cf_dataset(data_vars, coords, attrs)
    ds.to_zarr(zarr_store(loc, read_only=False), mode="w", zarr_format=3,
               consolidated=False)


def write_json_files(out: Location, a) -> None:
    """The per-analysis JSON files of an :class:`~differland_dist.analysis.pipeline.Analysis`."""
    s = a.summary
    if a.gen is not None:
        write_json(out.join("generalisation.json"), a.gen)
    write_json(out.join("variance_partition.json"), {**a.vp, **({"truth": a.vpt} if a.vpt else {})})
    write_json(out.join("gradients.json"), {
        **{k: v for k, v in a.gr.items() if k != "arrays"},
        **({"truth_cosines_all": s["pca_cosines_all"],
            "truth_cosines_identifiable": s.get("pca_cosines"),
            "truth_explained": s["gradients_truth"]["explained"]}
           if a.cos_all is not None else {})})
    write_json(out.join("shap.json"), a.shap_summary)
    if "shap_paper" in s:
        write_json(out.join("shap_paper.json"), s["shap_paper"])
    write_json(out.join("uncertainty.json"), {k: v for k, v in a.un.items() if k != "ratio_map"})
    if a.idf:
        write_json(out.join("identifiability.json"), a.idf)
    if "truth_check" in s:
        write_json(out.join("truth_check.json"), s["truth_check"])


def write_zarrs(out: Location, a) -> None:
    """``gradients.zarr``, ``shap.zarr`` and ``uncertainty.zarr``."""
    data, names, gr, ex = a.data, a.names, a.gr, a.ex
    C = gr["arrays"]["loadings"].shape[0]
    pix = {"pixel_lat": ("pixel", data.lat), "pixel_lon": ("pixel", data.lon),
           "row": ("pixel", data.row), "col": ("pixel", data.col)}
    param = np.array(names, dtype=object)
    write_zarr(out.join("gradients.zarr"), {
        "explained": ("component", gr["arrays"]["explained"].astype(np.float32)),
        "loadings": (("component", "param"), gr["arrays"]["loadings"].astype(np.float32)),
        "scores": (("pixel", "component"), gr["arrays"]["scores"].astype(np.float32))},
        {"component": np.arange(1, C + 1, dtype=np.int32), "param": param, **pix},
        {"predictor_set": a.full,
         "description": "PCA of the standardised ensemble-mean unbounded parameter maps"})
    vals = np.stack([ex["values"][k][:, :, a.idx] for k in a.fs.members]).astype(np.float32)
    sv = {"shap": (("member", "sample", "feature", "param"), vals),
          "sample_pixel": ("sample", ex["pixels"].astype(np.int32)),
          "features": (("sample", "feature"), a.F[ex["pixels"]].astype(np.float32))}
    if "truth" in ex["values"]:
        sv["shap_truth"] = (("sample", "feature", "param"),
                            ex["values"]["truth"][:, :, a.idx].astype(np.float32))
    write_zarr(out.join("shap.zarr"), sv,
               {"member": np.array(list(a.fs.members), dtype=object),
                "feature": np.array(a.feats, dtype=object), "param": param},
               {"explainer": "shap.KernelExplainer", "background": int(len(ex["background"])),
                "nsamples": a.shap_options.nsamples, "space": "unbounded network outputs"})
    write_zarr(out.join("uncertainty.zarr"), {
        "spread_ratio": (("pixel", "param"), a.un["ratio_map"].astype(np.float32)),
        "ensemble_sd": (("pixel", "param"), a.fs.sd[:, a.idx].astype(np.float32)),
        "ensemble_mean": (("pixel", "param"), a.xm.astype(np.float32))},
        {"param": param, **pix},
        {"description": "member sd / spatial sd of the ensemble mean (unbounded space)"})


def add_figures(a) -> None:
    """The analyses' figures into ``a.figs`` (beside the SHAP dependence figures there)."""
    data, names, gr, un, figs = a.data, a.names, a.gr, a.un, a.figs
    if a.gen is not None:
        figs["generalisation.png"] = report.generalisation_figure([a.gen, a.gen["spatial"]])
    figs["variance_partition.png"] = report.partition_figure(a.vp, a.vpt)
    figs["pca_loadings.png"] = report.loadings_figure(gr["arrays"]["loadings"], names,
                                                      gr["arrays"]["explained"])
    sc = gr["arrays"]["scores"]
    figs["pca_scores.png"] = report.maps_figure(
        [report.to_grid(sc[:, c], data.row, data.col, data.grid_shape) for c in range(3)],
        [f"PC{c + 1} score ({100 * gr['arrays']['explained'][c]:.0f} %)" for c in range(3)])
    figs["shap_importance.png"] = report.shap_figure(a.m_mean, a.feats, names)
    worst = sorted(names, key=lambda n: -(un["parameters"][n]["ratio"]
                                           if math.isfinite(un["parameters"][n]["ratio"]) else -1))[:3]
    figs["uncertainty.png"] = report.maps_figure(
        [report.to_grid(un["ratio_map"][:, names.index(n)], data.row, data.col, data.grid_shape)
         for n in worst], [f"{n}: member sd / spatial sd" for n in worst], cmap="magma",
        symmetric=False)
