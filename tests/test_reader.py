"""The streaming reader: exact batches, only the chunks asked for, caches, retries, prefetch."""

from __future__ import annotations

import threading
import uuid

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from differland_dist.storage.location import Location
from differland_dist.data import schema
from differland_dist.data.batch import DAYS_PER_YEAR, predictor_names
from differland_dist.data.reader import PatchReader
from differland_dist.data.rows import StorageReadError, is_transient
from differland_dist.data.store import open_store, write_store
from differland_dist.errors import ConfigError, DifferlandError
from differland_dist.vocabulary.dalec_io import FORCING_INDEX
from storage_servers import gcs_emulator  # noqa: F401 - fixture
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

PREDICTORS = predictor_names(["PFT", "CLIM", "AGE", "SOIL"])


class CountingFS(MemoryFileSystem):
    """The memory filesystem under another protocol, recording every object read and able to
    fail the next ``fail_next`` chunk reads with ``fail_with``."""

    protocol = ("countmem",)
    reads: list[tuple[str, int]] = []
    fail_next = 0
    fail_with: type[Exception] = OSError
    lock = threading.Lock()

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("countmem://"))

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        with CountingFS.lock:
            if "/c" in path and CountingFS.fail_next > 0:
                CountingFS.fail_next -= 1
                raise CountingFS.fail_with(f"injected failure reading {path}")
        data = super().cat_file(path, start, end, **kwargs)
        with CountingFS.lock:
            CountingFS.reads.append((path, len(data)))
        return data

    @classmethod
    def reset(cls):
        cls.reads.clear()
        cls.fail_next = 0
        cls.fail_with = OSError


fsspec.register_implementation("countmem", CountingFS, clobber=True)


def _arrays(b):
    """Every array of a PatchBatch, its labels stream by stream (in a fixed order)."""
    lab = b.labels
    return [b.pixel_index, b.patch, b.forcing, b.predictors,
            *(x for st in lab.streams for x in lab.stream(st)),
            *(() if lab.time_test is None else (lab.time_test,))]


@pytest.fixture(scope="module")
def counted(small_ds):
    """The small Earth written to memory:// and opened through countmem:// (same objects)."""
    root = f"/reader-{uuid.uuid4().hex}/s.zarr"
    write_store(small_ds, f"memory://{root}")
    store = open_store(f"countmem://{root}")
    CountingFS.reset()
    return store, root


@pytest.fixture
def reader(counted):
    store, _ = counted
    with PatchReader(store, PREDICTORS, {}, retries=3, backoff_s=0.001) as r:
        CountingFS.reset()
        yield r
    CountingFS.reset()


def test_batch_content_matches_store(small_ds, reader):
    store = reader.store
    ids = [int(store.patch_ids[5]), int(store.patch_ids[1]), int(store.patch_ids[2])]
    b = reader.read(ids)
    expect_pix = np.concatenate([np.arange(store.patch_slices[p].start, store.patch_slices[p].stop)
                                 for p in ids])
    assert np.array_equal(b.pixel_index, expect_pix)  # in the order of the patches given
    assert np.array_equal(b.patch, small_ds["patch"].values[expect_pix])
    P, T = expect_pix.size, small_ds.sizes["time"]
    assert b.forcing.shape == (P, T, 17) and b.forcing.dtype == np.float32
    assert b.predictors.shape == (P, len(PREDICTORS)) and b.labels.to_published().shape == (P, T, 24)
    ds = small_ds.isel(pixel=expect_pix)
    F = FORCING_INDEX
    for name in ("t_min", "t_max", "swrad", "vpd", "precip", "burned_area"):
        assert np.array_equal(b.forcing[:, :, F[name]], ds[name].values), name
    for name in ("co2", "doy", "delta_t"):
        assert np.array_equal(b.forcing[0, :, F[name]], ds[name].values), name
    np.testing.assert_array_equal(b.forcing[:, 0, F["days"]], np.float32(ds["time"].values[0]))
    np.testing.assert_array_equal(b.forcing[:, 3, F["lat"]], ds["lat"].values)
    np.testing.assert_array_equal(b.forcing[:, 3, F["mat"]], ds["MAT"].values)
    np.testing.assert_allclose(b.forcing[:, 3, F["map_daily"]], ds["MAP"].values / DAYS_PER_YEAR,
                               rtol=1e-6)
    assert not b.forcing[:, :, F["norm_temp"]:].any()
    for j, name in enumerate(PREDICTORS):
        assert np.array_equal(b.predictors[:, j], ds[name].values), name
    for i, st in enumerate(schema.STREAMS):
        value, weight = b.labels.stream(st.name)
        if st.name == "vod":  # not in the synthetic Earth: zero-weighted
            assert not value.any() and not weight.any()
            continue
        obs = ds[f"obs_{st.name}"].values
        obs = np.broadcast_to(obs[:, None], (P, T)) if obs.ndim == 1 else obs
        seen = np.isfinite(obs)
        assert np.array_equal(weight, np.where(seen, 1.0, 0.0)), st.name
        assert np.array_equal(value, np.where(seen, obs, 0.0)), st.name


def test_reads_only_the_chunks_of_the_patches_asked_for(reader):
    store = reader.store
    C = store.max_patch_size
    for ids in ([int(store.patch_ids[3])], [int(store.patch_ids[0]), int(store.patch_ids[-1])]):
        CountingFS.reset()
        reader.read(ids)
        chunks = sorted({k for p in ids for k in store.patch_chunks(p)})
        expected = set()
        for var in reader._chunked:
            nd = len(store.dims(var))
            expected |= {f"{var}/c/{k}" + "/0" * (nd - 1) for k in chunks}
        root = store.root.lstrip("/")
        got = {path.lstrip("/")[len(root) + 1:] for path, _ in CountingFS.reads}
        assert got == expected
        # bytes: no more than those chunks hold
        n_bytes = sum(n for _, n in CountingFS.reads)
        assert n_bytes <= sum(store.list_objects()[k] for k in expected)
    assert reader.stats["chunks_fetched"] > 0 and C == 8


def test_memory_cache_serves_repeats(counted):
    store, _ = counted
    with PatchReader(store, ["MAT"], {"sif": "sif"}, cache="memory") as r:
        ids = [int(store.patch_ids[4])]
        n0 = r.stats["chunks_fetched"]  # the per-step arrays, read at start
        first = r.read(ids)
        n = r.stats["chunks_fetched"]
        CountingFS.reset()
        again = r.read(ids)
        assert CountingFS.reads == [] and r.stats["chunks_fetched"] == n
        assert r.stats["cache_hits"] == n - n0 > 0
        assert np.array_equal(first.forcing, again.forcing)


def test_disk_cache_survives_the_reader(counted, tmp_path):
    store, _ = counted
    ids = [int(store.patch_ids[2]), int(store.patch_ids[7])]
    with PatchReader(store, ["MAT", "SAND"], {}, cache=str(tmp_path)) as r:
        first = r.read(ids)
    files = list(tmp_path.rglob("*.npy"))
    assert files and all(store.fingerprint() in str(f) for f in files)
    CountingFS.reset()
    with PatchReader(store, ["MAT", "SAND"], {}, cache=str(tmp_path)) as r:
        again = r.read(ids)
        assert r.stats["chunks_fetched"] == 0
        pixel_vars = set(r._chunked)
    # every chunk, the per-step arrays' too, comes from the cache: no chunk object is read
    read_vars = {p.rsplit("/c/", 1)[0].rsplit("/", 1)[-1] for p, _ in CountingFS.reads if "/c/" in p}
    assert read_vars == set() and pixel_vars
    for a, b in zip(_arrays(first), _arrays(again)):
        assert np.array_equal(a, b)


def test_retries_transient_errors(reader):
    CountingFS.fail_next = 5
    b = reader.read([int(reader.store.patch_ids[0])])
    assert CountingFS.fail_next == 0 and b.forcing.shape[0] > 0


def test_gives_up_after_retries_naming_the_chunk(reader):
    CountingFS.fail_next = 10_000
    with pytest.raises(StorageReadError, match=r"pixels \d+\.\.\d+ of countmem://.*after 4 attempt"):
        reader.read([int(reader.store.patch_ids[0])])


def test_permanent_errors_are_not_retried(reader):
    CountingFS.fail_next, CountingFS.fail_with = 1, PermissionError
    with pytest.raises(PermissionError):
        reader.read([int(reader.store.patch_ids[0])])
    assert not is_transient(FileNotFoundError()) and is_transient(TimeoutError())
    assert is_transient(ConnectionResetError()) and not is_transient(ValueError())


def test_prefetch_reads_ahead_in_the_background(reader):
    store = reader.store
    batches = [[int(p)] for p in store.patch_ids[:4]]
    started = [threading.Event() for _ in batches]
    original = reader.read

    def recording_read(ids):
        started[[b[0] for b in batches].index(ids[0])].set()
        return original(ids)

    reader.read = recording_read
    got = []
    it = reader.iter_batches(batches, prefetch=1)
    first = next(it)
    # while the caller holds batch 0, batch 1 is being read without being asked for
    assert started[1].wait(timeout=10)
    assert not started[3].is_set()  # never more than `prefetch` ahead
    got.append(first)
    got.extend(it)
    assert [int(b.patch[0]) for b in got] == [b[0] for b in batches]
    # no prefetch: nothing is read before it is asked for
    for e in started:
        e.clear()
    it = reader.iter_batches(batches, prefetch=0)
    next(it)
    assert not started[1].wait(timeout=0.3)
    it.close()


def test_read_predictors_all_and_splits(small_ds, reader):
    all_ = reader.read_predictors_all()
    assert all_.shape == (small_ds.sizes["pixel"], len(PREDICTORS))
    split = small_ds["split"].values
    train, test = reader.read_predictors_all("train"), reader.read_predictors_all("test")
    assert np.array_equal(train, all_[split == 0]) and np.array_equal(test, all_[split == 2])
    assert np.array_equal(reader.read_predictors_all("dev"), all_[split == 1])
    assert np.array_equal(all_[:, PREDICTORS.index("MAP")], small_ds["MAP"].values)
    assert not [p for p, _ in CountingFS.reads if "t_min" in p or "obs_" in p]  # only small vars
    with pytest.raises(ConfigError):
        reader.read_predictors_all("validation")


def test_stream_switches_and_special_predictors(counted):
    store, _ = counted
    with PatchReader(store, ["lat", "lon", "null"], {"lai": None, "vod": "vod_other"}) as r:
        b = r.read([int(store.patch_ids[0])])
    assert not np.any(b.labels.stream("lai"))  # switched off
    assert b.labels.weight["sif"].any()  # default product kept
    assert np.array_equal(b.predictors[:, 2], np.ones(b.predictors.shape[0], np.float32))
    assert np.array_equal(b.predictors[:, 0], b.forcing[:, 0, FORCING_INDEX["lat"]])
    with pytest.raises(ConfigError, match="not in the store"):
        PatchReader(store, ["MAT", "nonsense"], {})
    with pytest.raises(ConfigError, match="unknown stream"):
        PatchReader(store, ["MAT"], {"bogus": "x"})
    with PatchReader(store, ["MAT"], {}) as r:
        with pytest.raises(DifferlandError, match="patch 9999 is not in"):
            r.read([9999])


def test_predictor_names():
    assert predictor_names(["SOIL", "PFT"]) == list(schema.PREDICTOR_SETS["PFT"]) + list(
        schema.PREDICTOR_SETS["SOIL"])
    assert predictor_names(["PFT", "CLIM", "SOIL", "AGE"])[10:15] == [
        "MAT", "MAP", "elevation", "canopy_height", "forest_age"]
    assert predictor_names(["CONTROL"]) == ["null"]
    assert predictor_names(["LATLON", "CLIM"]) == ["MAT", "MAP", "elevation", "lat", "lon"]
    with pytest.raises(ConfigError, match="unknown predictor set"):
        predictor_names(["PFT", "XYZ"])


def test_streaming_from_the_gcs_emulator(small_ds, small_store_url, gcs_emulator):
    url = f"{gcs_emulator['url_prefix']}/{uuid.uuid4().hex}/s.zarr"
    opts = gcs_emulator["storage_options"]
    ds = small_ds.copy()
    ds.attrs = {**small_ds.attrs, "max_patch_size": 32}  # fewer objects for the emulator
    write_store(ds, Location(url, opts))
    remote = open_store(Location(url, opts), validate=False)
    local = open_store(small_store_url)
    batches = [[int(p) for p in local.patch_ids[i:i + 4]] for i in (0, 8, 16)]
    with PatchReader(remote, PREDICTORS, {}) as r, PatchReader(local, PREDICTORS, {}) as l:
        for a, b in zip(r.iter_batches(batches), l.iter_batches(batches)):
            for x, y in zip(_arrays(a), _arrays(b)):
                assert np.array_equal(x, y)


def test_per_pixel_overrides_of_per_step_forcing(small_ds, tmp_path):
    """Stores of sites with different calendars give ``<name>_by_pixel`` (pixel, time)."""
    import xarray as xr

    from differland_dist.data.validate import validate_dataset

    ds = small_ds.copy()
    P, T = ds.sizes["pixel"], ds.sizes["time"]
    shift = np.arange(P, dtype=np.float32)[:, None]
    ds["co2_by_pixel"] = xr.Variable(("pixel", "time"), ds["co2"].values[None, :] + shift,
                                     {"units": "ppm"})
    ds["time_by_pixel"] = xr.Variable(("pixel", "time"), ds["time"].values[None, :] + 365.0 * shift,
                                      {"units": "days since 2001-01-01"})
    ds["time_by_pixel"] = ds["time_by_pixel"].astype("float64")
    assert validate_dataset(ds) == []
    url = str(tmp_path / "sites.zarr")
    write_store(ds, url)
    store = open_store(url)
    ids = [int(store.patch_ids[3])]
    with PatchReader(store, ["MAT"], {}) as r:
        b = r.read(ids)
    px = b.pixel_index
    np.testing.assert_array_equal(b.forcing[:, :, FORCING_INDEX["co2"]], ds["co2_by_pixel"].values[px])
    np.testing.assert_array_equal(b.forcing[:, :, FORCING_INDEX["days"]],
                                  ds["time_by_pixel"].values[px].astype(np.float32))
    np.testing.assert_array_equal(b.forcing[:, :, FORCING_INDEX["doy"]],
                                  np.broadcast_to(ds["doy"].values, (px.size, T)))
    bad = ds.copy()
    bad["co2_by_pixel"] = bad["co2_by_pixel"].assign_attrs(units="ppb")
    assert validate_dataset(bad) == ["co2_by_pixel: units 'ppb', expected 'ppm'"]


def test_zarr_fallback_path_gives_the_same_batch(reader):
    """Arrays whose codecs the fast path does not decode are read through zarr."""
    ids = [int(reader.store.patch_ids[6]), int(reader.store.patch_ids[0])]
    fast = reader.read(ids)
    raw_bytes, fetched = reader.stats["stored_bytes_fetched"], reader.stats["chunks_fetched"]
    reader.store.chunks.codec = lambda name: None
    slow = reader.read(ids)
    # the chunks were read again, through zarr: no raw bytes of the fast path
    assert reader.stats["chunks_fetched"] > fetched
    assert reader.stats["stored_bytes_fetched"] == raw_bytes
    for a, b in zip(_arrays(fast), _arrays(slow)):
        assert np.array_equal(a, b)


def test_missing_chunk_is_an_error_not_fill_values(small_store_url, tmp_path):
    import shutil

    dst = tmp_path / "s.zarr"
    shutil.copytree(small_store_url, dst)
    store = open_store(str(dst))
    (dst / "precip" / "c" / "1" / "0").unlink()
    with PatchReader(store, ["MAT"], {}) as r:
        with pytest.raises(DifferlandError, match=r"precip: chunk precip/c/1/0 is missing from "
                                                  r"the store \(pixels 8\.\.15, time"):
            r.read([int(store.patch[8])])
