"""The analysis zarrs are CF datasets: units on every numeric variable, Conventions, provenance
(checked with the CF checker on the layouts analysis/pipeline.py writes)."""

from __future__ import annotations

import numpy as np

from cf_check import cf_problems

from differland_dist.analysis.cf_store import cf_dataset


def test_analysis_layouts_pass_the_cf_checker(tmp_path):
    P, C, K = 6, 3, 4
    rng = np.random.default_rng(0)
    pix = {"pixel_lat": ("pixel", np.linspace(-40, 40, P).astype(np.float32)),
           "pixel_lon": ("pixel", np.linspace(-100, 100, P).astype(np.float32)),
           "row": ("pixel", np.arange(P, dtype=np.int32)), "col": ("pixel", np.arange(P, dtype=np.int32))}
    names = np.array([f"p{i}" for i in range(K)], dtype=object)
    grad = cf_dataset({"explained": ("component", rng.random(C).astype(np.float32)),
                       "loadings": (("component", "param"), rng.random((C, K)).astype(np.float32)),
                       "scores": (("pixel", "component"), rng.random((P, C)).astype(np.float32))},
                      {"component": np.arange(1, C + 1, dtype=np.int32), "param": names, **pix},
                      {"description": "PCA"})
    unc = cf_dataset({"spread_ratio": (("pixel", "param"), rng.random((P, K)).astype(np.float32))},
                     {"param": names, **pix})
    for name, ds in (("gradients", grad), ("uncertainty", unc)):
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["differland_version"]
        assert all("units" in ds[v].attrs for v in ds.data_vars)
        assert ds.pixel_lat.attrs["units"] == "degrees_north"
        problems = cf_problems(ds, str(tmp_path), name)
        assert problems == [], (name, problems)
    assert grad.scores.attrs["coordinates"] == "pixel_lat pixel_lon"
