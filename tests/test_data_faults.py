"""Damaged inputs are refused with the variable, chunk and pixel/time range, never a traceback.

Each test damages a private copy of the small synthetic store (15 degree grid, 67 pixels,
24 steps, pixel chunks of 8) the way storage or people do, then runs the real commands:
``differland infer`` (NaN forcing, a deleted chunk: refused before anything is written),
``differland validate`` (exit 1), ``differland calibrate`` and the streaming reader.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.cli.main import main
from differland_dist.data.store import PixelStore, decode_raw, open_store
from differland_dist.data.validate import validate_store
from differland_dist.errors import DataValidationError

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def copy(small_store_url, tmp_path):  # noqa: F811
    """A private copy of the valid small store (a path)."""
    dst = tmp_path / "copy.zarr"
    shutil.copytree(small_store_url, dst)
    return dst


@pytest.fixture(scope="module")
def checkpoint(small_store_url, tmp_path_factory):  # noqa: F811
    from random_checkpoint import random_checkpoint

    path = str(tmp_path_factory.mktemp("ckpt") / "network.npz")
    return random_checkpoint(small_store_url, path, config={"loss": {"warm_up": 3}})


def _infer(checkpoint, store, out) -> int:
    return main(["infer", "--checkpoint", checkpoint, "--store", str(store), "--out", str(out),
                 "--executor", "local", "--chunk-pixels", "8"])


def _nothing_written(out) -> bool:
    parent = out.parent
    return not any(p.name.startswith(out.name) for p in parent.iterdir())


def _chunk(path, var, k):
    return path / var / "c" / str(k) / "0"


# -- item 4: infer checks its input before writing ---------------------------------------------
def test_infer_refuses_nan_forcing_before_writing(checkpoint, copy, tmp_path, capsys):
    g = zarr.open_group(str(copy), mode="r+", zarr_format=3, use_consolidated=False)
    g["swrad"][3, 5] = np.nan
    g["swrad"][6, 9] = np.nan
    out = tmp_path / "out.zarr"
    assert _infer(checkpoint, copy, out) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error:")
    assert "refusing to run inference" in err
    assert "swrad: 2 missing value(s) (NaN) at pixels 3..6, time steps 5..9" in err
    assert _nothing_written(out)


def test_infer_refuses_a_deleted_chunk_before_writing(checkpoint, copy, tmp_path, capsys):
    _chunk(copy, "t_min", 1).unlink()
    out = tmp_path / "out.zarr"
    assert _infer(checkpoint, copy, out) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("t_min: chunk t_min/c/1/0 is missing from the store (pixels 8..15, time steps "
            "0..23)") in err
    assert _nothing_written(out)


def test_inference_task_checks_what_it_reads(copy):
    """The worker's own guard (a store changed after the pre-flight check): NaN inputs and
    corrupt chunks are errors naming variable and range, never NaN series."""
    from differland_dist.inference.compute import check_finite

    from differland_dist.data.rows import RowReader

    store = PixelStore(str(copy))
    rows = RowReader(store)
    v = rows.read(["swrad"], slice(16, 32))
    check_finite(v, {"swrad": ("pixel", "time")}, 16, store.url)
    v["swrad"][4, 7] = np.inf
    with pytest.raises(DataValidationError, match=r"swrad: 1 missing or infinite value\(s\) at "
                                                  r"pixels 20, time steps 7"):
        check_finite(v, {"swrad": ("pixel", "time")}, 16, store.url)
    p = _chunk(copy, "vpd", 2)
    p.write_bytes(p.read_bytes()[:-9])
    with pytest.raises(DataValidationError, match=r"vpd: chunk vpd/c/2/0 is corrupt \(pixels "
                                                  r"16\.\.23, time steps 0\.\.23\)"):
        rows.read(["vpd"], slice(16, 32))


# -- item 5: corrupt chunks and metadata are validation errors ---------------------------------
def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _damage_frame(path):
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"\x00\x00\x00\x00"  # the zstd frame's magic number
    path.write_bytes(bytes(raw))


def _same_size_in_range_flip(store_path, var, k):
    """Flip one bit of a chunk so that it keeps its size and still decodes to values within
    the schema's range (only the checksum can tell); returns the bit flipped."""
    store = PixelStore(str(store_path))
    codec = store.chunks.codec(var)
    path = _chunk(store_path, var, k)
    raw = path.read_bytes()
    good = decode_raw(codec, raw)
    plain = codec._replace(crc32c=False)
    for byte in range(len(raw) - 5, 16, -1):
        for bit in range(8):
            bad = bytearray(raw)
            bad[byte] ^= 1 << bit
            try:
                vals = decode_raw(plain, bytes(bad[:-4]))
            except ValueError:
                continue
            if (not np.array_equal(vals, good) and np.all(np.isfinite(vals))
                    and vals.min() >= -90 and vals.max() <= 60):
                path.write_bytes(bytes(bad))
                return byte, bit
    raise AssertionError("no same-size in-range bit flip found")


CORRUPTIONS = {
    "truncated": (lambda p: _truncate(_chunk(p, "t_min", 1)), "t_min", 1),
    "damaged_frame": (lambda p: _damage_frame(_chunk(p, "t_min", 1)), "t_min", 1),
    "same_size_flip": (lambda p: _same_size_in_range_flip(p, "t_min", 1), "t_min", 1),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_chunk_is_a_validation_error(kind, copy, checkpoint, tmp_path, capsys):
    damage, var, k = CORRUPTIONS[kind]
    size = _chunk(copy, var, k).stat().st_size
    damage(copy)
    if kind == "same_size_flip":
        assert _chunk(copy, var, k).stat().st_size == size  # the manifest cannot tell
    expected = f"{var}: chunk {var}/c/{k}/0 is corrupt (pixels 8..15, time steps 0..23)"
    problems = validate_store(str(copy))
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    assert "crc32c checksum mismatch" in problems[0]

    assert main(["validate", str(copy)]) == 1
    out = capsys.readouterr().out
    assert expected in out and "1 problem(s)" in out

    assert main(["calibrate", str(ROOT / "configs" / "demo.yaml"), "--set",
                 f"data.url={copy}", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()

    out_url = tmp_path / "inf.zarr"
    assert _infer(checkpoint, copy, out_url) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert _nothing_written(out_url)


def test_reader_names_the_corrupt_chunk(copy):
    """The streaming reader of the calibration workers (no validation pass before it)."""
    from differland_dist.data.reader import PatchReader

    store = open_store(str(copy))
    _truncate(_chunk(copy, "precip", 1))
    with PatchReader(store, ["MAT"], {}) as r:
        with pytest.raises(DataValidationError, match=r"precip: chunk precip/c/1/0 is corrupt "
                                                      r"\(pixels 8\.\.15, time steps 0\.\.23\)"):
            r.read([int(store.patch[8])])
        store.chunks.codec = lambda name: None  # the zarr path names it too
        with pytest.raises(DataValidationError, match=r"precip: chunk precip/c/1/0 is corrupt"):
            r.read([int(store.patch[8])])


def test_chunks_without_checksum_still_fail_cleanly(small_ds, tmp_path, capsys):  # noqa: F811
    """Stores written before the checksum (zstd only): a damaged frame or a truncated chunk is
    still named, from the decompressor's or the size check's complaint."""
    ds = small_ds.copy()
    for v in ds.variables.values():
        v.encoding = {}
    old = tmp_path / "nocrc.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(str(old), zarr_format=3, consolidated=True,
                   encoding={"t_max": {"chunks": (8, 24)}, "swrad": {"chunks": (8, 24)}})
        g = zarr.open_group(str(old), mode="r+")
        g.attrs["complete"] = True
        zarr.consolidate_metadata(str(old))
    store = PixelStore(str(old))
    assert not store.chunks.codec("t_max").crc32c
    _damage_frame(_chunk(old, "t_max", 2))
    _truncate(_chunk(old, "swrad", 3))
    problems = [p for p in validate_store(str(old)) if "corrupt" in p]
    assert problems[0].startswith("swrad: chunk swrad/c/3/0 is corrupt (pixels 24..31, "
                                  "time steps 0..23): its compressed frame cannot be decoded")
    assert problems[1].startswith("t_max: chunk t_max/c/2/0 is corrupt (pixels 16..23, "
                                  "time steps 0..23): its compressed frame cannot be decoded")
    assert main(["validate", str(old)]) == 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("content", [b'{"zarr_format": 3, "node_ty', b"\xff\xfe garbage",
                                     b'{"zarr_format": 2}', b"[]"])
def test_corrupt_root_metadata(content, copy, checkpoint, tmp_path, capsys):
    (copy / "zarr.json").write_bytes(content)
    problems = validate_store(str(copy))
    assert len(problems) == 1 and problems[0].startswith("zarr.json: ")
    assert main(["validate", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "zarr.json: " in out
    with pytest.raises(DataValidationError, match="zarr.json: "):
        open_store(str(copy))
    assert main(["calibrate", str(ROOT / "configs" / "demo.yaml"), "--set",
                 f"data.url={copy}", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "zarr.json: " in err and "Traceback" not in err
    assert _infer(checkpoint, copy, tmp_path / "inf.zarr") == 1
    err = capsys.readouterr().err
    assert "zarr.json: " in err and "Traceback" not in err


def test_corrupt_array_metadata_object(copy):
    (copy / "vpd" / "zarr.json").write_bytes(b"{not json")
    problems = validate_store(str(copy))
    assert problems == [p for p in problems if p.startswith("vpd: its metadata object "
                                                            "vpd/zarr.json is not valid JSON")]
    assert len(problems) == 1


def test_store_is_written_with_checksums_and_reads_fast(small_store_url):  # noqa: F811
    """Every numeric array carries a crc32c; the reader's fast path verifies it."""
    store = PixelStore(small_store_url)
    assert all(store.chunks.codec(n).crc32c for n in store.array_names
               if np.dtype(store.array(n).dtype).kind in "biuf")
    t0 = time.perf_counter()
    assert validate_store(small_store_url) == []
    assert time.perf_counter() - t0 < 10


# -- gs:// uploads: bounded, adapted concurrency ----------------------------------------------
@pytest.fixture
def stock_gcs_emulator():
    """gcp-storage-emulator as installed: its single-threaded server with the stock listen
    backlog of 5 and one connection per request (the shared fixture raises the backlog to 256,
    which hides the stall). Only the emulator's lost-trailing-CR upload bug is mended (see
    storage_servers), so that stored bytes can be compared."""
    from storage_servers import gcs_emulator_server

    with gcs_emulator_server("stock", stock_backlog=True) as info:
        yield info["storage_options"]


def test_gcs_upload_does_not_stall_on_a_short_listen_queue(small_ds, stock_gcs_emulator,  # noqa: F811
                                                           small_store_url):  # noqa: F811
    """~400 objects: fsspec's unbounded batched put took ~110 s here (dropped connections,
    each retried by the kernel after 1, 3, 7 ... s); one by one takes ~2 s."""
    import uuid

    from differland_dist.data.store import write_store
    from differland_dist.storage.location import Location

    url = f"gs://stock/{uuid.uuid4().hex}/small.zarr"
    t0 = time.perf_counter()
    write_store(small_ds, Location(url, stock_gcs_emulator))
    took = time.perf_counter() - t0
    # the same bytes as the local store of the same Dataset (writes are deterministic)
    remote = Location(url, stock_gcs_emulator)
    fs, root = remote.fs, remote.path
    local = Location(small_store_url).list_objects()
    assert remote.list_objects() == local
    for key in local:
        assert fs.cat_file(f"{root}/{key}") == (Path(small_store_url) / key).read_bytes(), key
    assert took < 30, f"write_store to the emulator took {took:.1f} s"


def test_upload_window_grows_only_while_it_pays(tmp_path, stock_gcs_emulator):
    """A single-threaded server gains nothing from more requests in flight: the window stays
    small; every object arrives intact."""
    import os
    import uuid

    import fsspec

    from differland_dist.data.store import upload

    fs = fsspec.filesystem("gs", **stock_gcs_emulator)
    root = f"stock/{uuid.uuid4().hex}"
    blobs = {f"o{i}": os.urandom(1000 + 37 * i) for i in range(120)}
    for k, v in blobs.items():
        (tmp_path / k).write_bytes(v)
    window = upload(fs, [(str(tmp_path / k), f"{root}/{k}") for k in blobs], "gs://" + root)
    assert 1 <= window <= 8
    fs.invalidate_cache()
    assert {k: fs.cat_file(f"{root}/{k}") for k in blobs} == blobs
