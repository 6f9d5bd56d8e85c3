"""Validation: every kind of broken store gets a clear problem naming variable and range."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from differland_dist.cli.main import main
from differland_dist.data.store import open_store
from differland_dist.data.validate import check_store, validate_dataset, validate_store
from differland_dist.errors import DataValidationError
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

# the tests re-consolidate stores by hand, which zarr notes is not yet in the v3 spec
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


@pytest.fixture
def copy(small_store_url, tmp_path):
    """A private copy of the valid small store (a path)."""
    dst = tmp_path / "copy.zarr"
    shutil.copytree(small_store_url, dst)
    return dst


def _group(path):
    return zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)


def _reconsolidate(path):
    zarr.consolidate_metadata(str(path), zarr_format=3)


def test_valid_store_has_no_problems(small_store_url):
    assert validate_store(small_store_url) == []
    assert check_store(small_store_url).n_pixels == 67


def test_missing_chunk_names_variable_and_pixel_range(copy):
    (copy / "t_min" / "c" / "1" / "0").unlink()  # pixels 8..15 (chunks of 8 pixels)
    problems = validate_store(str(copy))
    assert problems == ["t_min: chunk t_min/c/1/0 is missing from the store (pixels 8..15, "
                        "time steps 0..23); zarr would read it as fill values"]
    with pytest.raises(DataValidationError, match="t_min/c/1/0"):
        open_store(str(copy))


def test_nan_in_forcing(copy):
    _group(copy)["swrad"][3, 5] = np.nan
    _group(copy)["swrad"][6, 9] = np.nan
    problems = validate_store(str(copy))
    assert problems == ["swrad: 2 missing value(s) (NaN) at pixels 3..6, time steps 5..9; "
                        "gaps are not allowed in forcing"]


def test_nan_in_predictor_and_out_of_range(copy):
    g = _group(copy)
    g["SAND"][10] = np.nan
    g["t_max"][0, 0] = 99.0
    problems = validate_store(str(copy))
    assert "SAND: 1 missing value(s) (NaN) at pixels 10; gaps are not allowed in predictors" in problems
    assert ("t_max: 1 value(s) outside the expected range [-90, 70] degC at pixels 0, time steps 0 "
            "(actual min 99, max 99)") in problems
    assert len(problems) == 2


def test_wrong_unit(copy):
    g = _group(copy)
    g["t_min"].attrs["units"] = "K"
    stale = validate_store(str(copy))  # the consolidated metadata still says degC
    assert any(p.startswith("t_min: its metadata (t_min/zarr.json) differs from the consolidated")
               for p in stale)
    _reconsolidate(copy)
    assert validate_store(str(copy)) == ["t_min: units 'K', expected 'degC'"]


def test_missing_variable(copy, small_ds):
    shutil.rmtree(copy / "vpd")
    problems = validate_store(str(copy))
    assert problems == ["vpd: its metadata object vpd/zarr.json is missing from the store "
                        "(the variable was deleted after writing)"]
    _reconsolidate(copy)  # a store written without it at all
    assert validate_store(str(copy)) == [
        "vpd: missing (forcing; expected dims ('pixel', 'time'), dtype float32, units 'hPa')"]
    assert validate_dataset(small_ds.drop_vars("MAT")) == [
        "MAT: missing (predictors; expected dims ('pixel',), dtype float32, units 'degC')"]


def test_incomplete_store_fails(copy):
    g = zarr.open_group(str(copy), mode="r+", zarr_format=3, use_consolidated=True)
    g.attrs["complete"] = False
    problems = validate_store(str(copy))
    assert len(problems) == 1 and problems[0].startswith("attrs: complete is False, expected True")


def test_observation_rules(copy):
    g = _group(copy)
    lai = g["obs_lai"][...]
    r, c = np.argwhere(np.isnan(lai))[0]
    g["obs_lai_weight"][r, c] = 1.0      # a gap with weight
    g["obs_sif_weight"][0, 0] = -1.0     # a negative weight
    g["obs_nbe"][2, 3] = 80.0            # outside the stream's range
    problems = validate_store(str(copy))
    assert (f"obs_lai_weight: 1 weight(s) > 0 where obs_lai is missing (NaN) at pixels {r}, time "
            f"steps {c}; a gap must have weight 0") in problems
    assert ("obs_sif_weight: 1 weight(s) negative or NaN at pixels 0, time steps 0; weights must "
            "be finite and >= 0") in problems
    assert ("obs_nbe: 1 value(s) outside the range of stream nbe [-50, 50] gC m-2 d-1 at pixels 2, "
            "time steps 3 (actual min 80, max 80)") in problems
    assert len(problems) == 3


def test_dataset_structure_rules(small_ds):
    ds = small_ds.copy(deep=True)
    ds.attrs["max_patch_size"] = 4
    problems = validate_dataset(ds)
    assert len(problems) == 1 and problems[0].startswith("patch: ") and "larger than max_patch_size=4" in problems[0]
    ds = small_ds.copy(deep=True)
    first = ds["patch"].values == 0
    ds["split"].values[np.flatnonzero(first)[0]] = 1 - ds["split"].values[first][0]
    assert validate_dataset(ds) == [
        f"split: 1 patch(es) mix train and test pixels (the split must be by patch): patch 0 "
        f"(pixels 0..{first.sum() - 1})"]
    ds = small_ds.copy(deep=True)
    ds["patch"].values[[0, -1]] = ds["patch"].values[[-1, 0]]
    assert validate_dataset(ds)[0].startswith("patch: pixel axis not sorted by patch")
    ds = small_ds.copy(deep=True)
    ds["t_min"] = ds["t_min"].astype("float64")
    del ds.attrs["steps_per_year"]
    assert validate_dataset(ds) == ["attrs: global attribute 'steps_per_year' missing",
                                    "t_min: dtype float64, expected float32"]
    ds = small_ds.copy(deep=True)
    ds["obs_lai"].attrs["stream"] = "lia"
    assert validate_dataset(ds) == [
        "obs_lai: attribute 'stream' is 'lia', expected one of sif, nbe, lai, ewt, biomass, fire, "
        "som, vod, gpp_flux, reco_flux, et_flux, et_gleam"]


def test_cli_validate_exit_codes(small_store_url, copy, tmp_path, capsys):
    assert main(["validate", small_store_url]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "pixels: 67" in out and "fingerprint:" in out
    (copy / "MAP" / "c" / "2").unlink()
    _group(copy)["precip"][1, 1] = np.nan
    assert main(["validate", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "MAP: chunk MAP/c/2 is missing" in out and "precip: 1 missing" in out
    assert main(["validate", str(tmp_path / "nowhere.zarr")]) == 1
    assert "no zarr v3 group" in capsys.readouterr().out
    assert main(["validate", small_store_url, "--storage-options", "{bad"]) == 1
    assert "not valid JSON" in capsys.readouterr().err
