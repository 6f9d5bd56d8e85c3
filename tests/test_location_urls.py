"""URLs handed to Ray workers: a worker runs in its cluster's working directory, not the
driver's, so a relative local path is made absolute before it leaves the driver."""

from __future__ import annotations

import os

from differland_dist.storage.location import absolute_url


def test_relative_local_paths_become_absolute_and_the_rest_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_url("demo_out/earth.zarr") == os.path.join(str(tmp_path), "demo_out", "earth.zarr")
    assert absolute_url("/data/earth.zarr") == "/data/earth.zarr"
    for remote in ("gs://bucket/earth.zarr", "s3://b/e.zarr", "memory://e.zarr", "file:///d/e.zarr"):
        assert absolute_url(remote) == remote
    assert absolute_url("") == ""

