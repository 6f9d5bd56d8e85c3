"""The schema's one range check (validation and both importers call it) and the data package's
layering: schema facts in schema.py, validation below the store's validated entry points."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from differland_dist.data import importers, schema, store, validate

DATA = Path(store.__file__).parent


def test_outside_counts_finite_values_and_missing_only_when_asked():
    v = np.array([[-1.0, 0.5, np.nan], [2.0, np.inf, 1.0]])
    assert schema.outside(v, 0, 1).tolist() == [[True, False, False], [True, False, False]]
    assert schema.outside(v, 0, 1, missing=True).tolist() == [[True, False, True], [True, True, False]]
    assert schema.outside(np.array([0, 5, 3], np.int8), 0, 3).tolist() == [False, True, False]


def test_out_of_range_message():
    v = np.zeros((3, 4), np.float32)
    v[1, 2], v[2, 0] = 99.0, -95.0
    where = lambda i: f"pixels {sorted(set(i[:, 0].tolist()))}, time steps {sorted(set(i[:, 1].tolist()))}"  # noqa: E731
    assert schema.out_of_range("t_max", v, -90, 70, "degC", where, of="the expected range ") == (
        "t_max: 2 value(s) outside the expected range [-90, 70] degC at pixels [1, 2], time "
        "steps [0, 2] (actual min -95, max 99)")
    assert schema.out_of_range("obs", np.array([1.0, 80.0]), -50, 50, "u", stream="nbe") == (
        "obs: 1 value(s) outside [-50, 50] u (stream nbe) (actual min 80, max 80)")
    assert schema.out_of_range("t_max", v, -100, 100, "degC", where) is None
    assert schema.out_of_range("site 1: lat", 95.0, -90, 90, "degrees_north") == (
        "site 1: lat = 95 outside [-90, 90] degrees_north")
    # all offenders missing: no extremes to report
    assert schema.out_of_range("co2", np.array([np.nan, 400.0]), 200, 1000, "ppm", missing=True,
                               what="value(s) missing or") == (
        "co2: 1 value(s) missing or outside [200, 1000] ppm")


def test_schema_facts_live_in_schema_and_importers_reexport_them():
    assert importers.PER_PIXEL_FORCING is schema.PER_PIXEL_FORCING
    assert importers.by_pixel_name is schema.by_pixel_name
    assert importers.SCHEMA_VARS is schema.VARS
    assert schema.by_pixel_name("co2") == "co2_by_pixel"
    assert set(schema.VARS) == {v.name for v in schema.COORDS + schema.FORCING + schema.PREDICTORS
                                + schema.SITE_PREDICTORS}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_validation_sits_below_the_store_entry_points():
    """io <- validate <- store: validation never imports the module that calls it, and the
    store's entry points still come from data.store."""
    assert "differland_dist.data.store" not in _imports(DATA / "validate.py")
    assert "differland_dist.data.io" in _imports(DATA / "validate.py")
    io_imports = _imports(DATA / "io.py")
    assert not {"differland_dist.data.validate", "differland_dist.data.store"} & io_imports
    assert store.check_store is validate.check_store
    assert store.PixelStore.__module__ == "differland_dist.data.io"
    assert callable(store.open_store) and callable(store.write_store)
