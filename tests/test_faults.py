"""Fault injection: each way a user's data could be lost, leaked or silently wrong (issue 11).

Every case here reproduced on main before its fix; none may come back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.errors import DifferlandError
from differland_dist.storage.location import OWNER_MARKER, Location


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "differland_dist.cli.main", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


# -- 1. --overwrite deletes only what differland provably wrote ------------------------------------
def test_overwrite_refuses_a_folder_differland_did_not_write(tmp_path, small_store_url):
    victim = tmp_path / "victim"
    (victim / "notes").mkdir(parents=True)
    (victim / "notes" / "n.txt").write_text("n")
    (victim / "precious.txt").write_text("p")
    shutil.copytree(small_store_url, victim / "old.zarr")
    r = _cli("synth", "--out", str(victim), "--resolution", "30", "--years", "1", "--overwrite")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert "refusing to overwrite" in err and "precious.txt" in err and "old.zarr/" in err
    assert (victim / "precious.txt").read_text() == "p"
    assert (victim / "notes" / "n.txt").exists()
    assert (victim / "old.zarr" / "zarr.json").exists()


def test_overwrite_replaces_our_store_but_not_a_file_added_to_it(tmp_path):
    from differland_dist.data.store import open_store
    from differland_dist.synthetic import synth_to_store

    url = str(tmp_path / "s.zarr")
    synth_to_store(url, resolution=30, years=1, max_patch_size=8)
    assert (tmp_path / "s.zarr" / OWNER_MARKER).exists()
    with pytest.raises(DifferlandError, match="pass --overwrite"):
        synth_to_store(url, resolution=30, years=1, max_patch_size=8)
    synth_to_store(url, resolution=30, years=1, seed=1, max_patch_size=8, overwrite=True)
    assert open_store(url).attrs["complete"]
    (tmp_path / "s.zarr" / "mine.txt").write_text("mine")
    with pytest.raises(DifferlandError, match="mine.txt"):
        synth_to_store(url, resolution=30, years=1, max_patch_size=8, overwrite=True)
    assert (tmp_path / "s.zarr" / "mine.txt").read_text() == "mine"


def test_an_interrupted_write_is_ours_to_replace(tmp_path):
    """The marker is written first, so what a killed writer left can be replaced."""
    from differland_dist.data.store import STORE_KIND, check_target

    loc = Location(str(tmp_path / "half.zarr"))
    loc.claim(STORE_KIND, ["zarr.json", "lai"])
    (tmp_path / "half.zarr" / "lai").mkdir()
    (tmp_path / "half.zarr" / "lai" / "c0").write_bytes(b"x")
    assert check_target(loc.url, overwrite=True) is True
    loc.clear_owned(STORE_KIND)
    assert loc.entries() == []


def test_inference_output_overwrite_keeps_foreign_files(tmp_path):
    from differland_dist.inference.output import OUTPUT_KIND

    out = Location(str(tmp_path / "out.zarr"))
    out.claim(OUTPUT_KIND, ["zarr.json", "gpp"])
    (tmp_path / "out.zarr" / "gpp").mkdir()
    (tmp_path / "out.zarr" / "gpp" / "c").write_bytes(b"1")
    (tmp_path / "out.zarr" / "keep.nc").write_bytes(b"k")
    with pytest.raises(DifferlandError, match="keep.nc"):
        out.clear_owned(OUTPUT_KIND)
    assert (tmp_path / "out.zarr" / "gpp" / "c").exists()
    with pytest.raises(DifferlandError, match="not a 'zarr-store'"):
        out.check_replaceable("zarr-store", overwrite=True)
