"""A small synthetic Earth shared by the data-layer tests (made once per test session).

15 degree grid (67 land pixels), 2 years, patches of at most 8 pixels (21 patches), so that
patches straddle chunk boundaries and the split has several patches on each side.
"""

from __future__ import annotations

import pytest

SMALL = dict(resolution=15.0, years=2, seed=0, max_patch_size=8)


@pytest.fixture(scope="session")
def small_ds():
    """The in-memory Dataset of the small synthetic Earth."""
    from differland_dist.data.synth import make_synthetic

    return make_synthetic(**SMALL)


@pytest.fixture(scope="session")
def small_store_url(small_ds, tmp_path_factory):
    """A local, valid store of the small synthetic Earth (do not modify it: copy it)."""
    from differland_dist.data.store import write_store

    url = str(tmp_path_factory.mktemp("stores") / "small.zarr")
    write_store(small_ds, url)
    return url
