"""The pixel store: round trips over every URL kind, atomic writes, layout, fingerprint."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import zarr

from differland_dist.storage.location import Location
from differland_dist.data import schema
from differland_dist.data.store import (
    PixelStore, open_store, parse_storage_options, patch_runs, write_store)
from differland_dist.errors import DataValidationError, DifferlandError
from storage_servers import gcs_emulator, s3_server  # noqa: F401 - fixtures
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "OUT":  # strings: object in memory, zarr's "string" type when read
        return a.tolist() == b.tolist()
    if a.dtype.kind == "f":
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    return a.dtype == b.dtype and np.array_equal(a, b)


def _check_roundtrip(ds, store: PixelStore) -> None:
    assert store.attrs["complete"] is True
    assert set(ds.variables) == set(store.array_names)
    for name in ds.variables:
        assert _same(ds[name].values, store.ds[name].values), name
        assert store.ds[name].attrs.get("units") == ds[name].attrs.get("units"), name
    assert store.n_pixels == ds.sizes["pixel"] and store.n_time == ds.sizes["time"]
    assert store.steps_per_year == 12


def test_store_functions_take_a_location_not_a_url_and_its_options(small_ds, tmp_path):
    """A Location (or a plain URL) is what the store functions take; the old (url, options)
    call fails loudly instead of reading the options as ``overwrite`` or ``validate``."""
    url = str(tmp_path / "loc.zarr")
    with pytest.raises(TypeError):
        write_store(small_ds, url, {"anon": True})
    assert not (tmp_path / "loc.zarr").exists()
    write_store(small_ds, Location(url, {}))
    with pytest.raises(TypeError):
        open_store(url, {"anon": True})
    by_location, by_url = open_store(Location(url)), PixelStore(url)
    assert by_location.location == by_url.location and by_url.location.url == url
    assert by_location.fingerprint() == by_url.fingerprint()


@pytest.mark.parametrize("kind", ["path", "file", "memory"])
def test_roundtrip_local_and_memory(small_ds, tmp_path, kind):
    url = {"path": str(tmp_path / "a.zarr"), "file": f"file://{tmp_path}/b.zarr",
           "memory": f"memory://rt-{uuid.uuid4().hex}/s.zarr"}[kind]
    write_store(small_ds, url)
    store = open_store(url)  # validates
    _check_roundtrip(small_ds, store)


@pytest.fixture(scope="module")
def coarse_chunked(small_ds, tmp_path_factory):
    """The small Earth with pixel chunks of 64 (fewer objects for the servers) and a local
    copy of its store."""
    ds = small_ds.copy()
    ds.attrs = {**small_ds.attrs, "max_patch_size": 64}
    url = str(tmp_path_factory.mktemp("coarse") / "s.zarr")
    write_store(ds, url)
    return ds, url


@pytest.mark.parametrize("server", ["gcs", "s3"])
def test_roundtrip_object_storage(coarse_chunked, server, request):
    """gs:// through gcsfs against the GCS emulator, s3:// through s3fs against moto."""
    info = request.getfixturevalue({"gcs": "gcs_emulator", "s3": "s3_server"}[server])
    ds, local_url = coarse_chunked
    url = f"{info['url_prefix']}/{uuid.uuid4().hex}/s.zarr"
    opts = info["storage_options"]
    write_store(ds, Location(url, opts))
    store = open_store(Location(url, opts))  # validates: listing, chunks, data
    assert store.attrs["complete"] is True and set(store.array_names) == set(ds.variables)
    assert np.array_equal(store.ds["t_min"].values, ds["t_min"].values)  # through xarray too
    # same bytes (so the same values as the local round trip), same identity
    local = PixelStore(local_url)
    assert store.fingerprint() == local.fingerprint()
    keys = sorted(local.list_objects())
    remote_bytes = store.fs.cat([f"{store.root}/{k}" for k in keys])
    assert [remote_bytes[f"{store.root}/{k}"] for k in keys] == [
        local.fs.cat_file(f"{local.root}/{k}") for k in keys]


@pytest.mark.parametrize("server", ["gcs", "s3"])
def test_object_storage_keeps_every_byte(server, request):
    """Objects ending in CR or LF come back whole (the test servers must not eat them)."""
    info = request.getfixturevalue({"gcs": "gcs_emulator", "s3": "s3_server"}[server])
    from differland_dist.data.store import resolve

    fs, root = resolve(Location(f"{info['url_prefix']}/{uuid.uuid4().hex}", info["storage_options"]))
    blobs = {"cr": b"abc\r", "crlf": b"abc\r\n", "lf": b"\n", "bin": bytes(range(256))}
    fs.pipe({f"{root}/{k}": v for k, v in blobs.items()})
    assert {k: fs.cat_file(f"{root}/{k}") for k in blobs} == blobs


def test_layout_patches_and_chunks(small_ds, small_store_url):
    store = open_store(small_store_url)
    C = store.max_patch_size
    patch = small_ds["patch"].values
    assert np.all(np.diff(patch) >= 0)
    assert list(store.patch_ids) == sorted(set(patch.tolist()))
    covered = np.zeros(store.n_pixels, int)
    for p, s in store.patch_slices.items():
        assert np.all(patch[s] == p) and s.stop - s.start <= C
        covered[s] += 1
        chunks = store.patch_chunks(p)
        assert 1 <= len(chunks) <= 2
        assert chunks[0] * C <= s.start and s.stop <= (chunks[-1] + 1) * C
    assert np.all(covered == 1)
    # every array with a pixel dim is chunked by max_patch_size pixels, whole along the rest
    for name in store.array_names:
        arr = store.array(name)
        dims = store.dims(name)
        if "pixel" in dims:
            ax = dims.index("pixel")
            assert arr.chunks[ax] == C, name
            assert all(c == n for i, (c, n) in enumerate(zip(arr.chunks, arr.shape)) if i != ax)
    # train/dev/test by patch
    split = small_ds["split"].values
    assert set(store.dev_patches) == {int(p) for p in np.unique(patch[split == 1])}
    assert set(store.test_patches) == {int(p) for p in np.unique(patch[split == 2])}
    assert len(store.dev_patches) and len(store.test_patches)
    tr, dv, te = set(store.train_patches), set(store.dev_patches), set(store.test_patches)
    assert tr | dv | te == set(store.patch_ids) and not (tr & dv or tr & te or dv & te)


def test_products_and_lazy_ds(small_store_url):
    store = open_store(small_store_url)
    assert store.products("lai") == ["lai"]
    assert store.products("vod") == []  # the synthetic Earth has no VOD
    with pytest.raises(DifferlandError, match="unknown stream"):
        store.products("nope")
    ds = store.ds
    assert ds["t_min"].dims == ("pixel", "time")
    assert ds["time"].attrs["units"] == "days since 2001-01-01"  # not decoded to datetimes
    assert ds["time"].dtype == np.float64


def test_patch_runs():
    runs = patch_runs(np.array([0, 0, 2, 2, 2, 5]))
    assert runs == {0: slice(0, 2), 2: slice(2, 5), 5: slice(5, 6)}
    assert patch_runs(np.array([], np.int32)) == {}


def test_write_refuses_existing_and_overwrites(small_ds, tmp_path):
    url = str(tmp_path / "s.zarr")
    write_store(small_ds, url)
    with pytest.raises(DifferlandError, match="already exists"):
        write_store(small_ds, url)
    write_store(small_ds, url, overwrite=True)
    assert open_store(url).attrs["complete"] is True
    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(DifferlandError, match="not a zarr store"):
        write_store(small_ds, str(other), overwrite=True)
    assert (other / "precious.txt").read_text() == "keep me"


def test_write_refuses_invalid_dataset_and_writes_nothing(small_ds, tmp_path):
    bad = small_ds.copy(deep=True)
    bad["vpd"].values[4, 7] = np.nan
    url = tmp_path / "bad.zarr"
    with pytest.raises(DataValidationError, match=r"vpd: 1 missing value\(s\) \(NaN\) at pixels 4, time steps 7"):
        write_store(bad, str(url))
    assert not url.exists()


def test_complete_flag_is_written_last(small_ds, tmp_path, monkeypatch):
    """An interrupted write leaves a store that does not validate."""
    url = str(tmp_path / "cut.zarr")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(zarr, "consolidate_metadata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_store(small_ds, url)
    monkeypatch.undo()
    with pytest.raises(DataValidationError, match="complete is False"):
        open_store(url)


def test_fingerprint_stable_and_sensitive(small_ds, small_store_url, tmp_path):
    a = PixelStore(small_store_url).fingerprint()
    assert a == PixelStore(small_store_url).fingerprint() and len(a) == 64
    url = str(tmp_path / "s.zarr")
    write_store(small_ds, url)
    assert PixelStore(url).fingerprint() == a
    changed = small_ds.copy(deep=True)
    changed["MAT"].values[0] += 1.0
    write_store(changed, url, overwrite=True)
    assert PixelStore(url).fingerprint() != a


def test_open_errors(tmp_path):
    with pytest.raises(DataValidationError, match="no zarr v3 group"):
        open_store(str(tmp_path / "nothing.zarr"))


def test_parse_storage_options():
    assert parse_storage_options(None) == {}
    assert parse_storage_options('{"token": "anon"}') == {"token": "anon"}
    with pytest.raises(DifferlandError, match="not valid JSON"):
        parse_storage_options("{token")
    with pytest.raises(DifferlandError, match="JSON object"):
        parse_storage_options("[1]")


def test_schema_attrs_written(small_store_url):
    store = PixelStore(small_store_url)
    for key in schema.GLOBAL_ATTRS:
        assert key in store.attrs
    meta = json.loads((__import__("pathlib").Path(small_store_url) / "zarr.json").read_text())
    assert "consolidated_metadata" in meta and meta["attributes"]["complete"] is True
