"""Training that scales (issue 15): balanced steps, the same network for 1 to 4 workers and
for any call split, streamed patches through a bounded cache with prefetch, and call sizes
from ``training.pixels_per_call``. Runs use the 10-degree synthetic Earth and few steps."""

from __future__ import annotations

import numpy as np
import pytest

from differland_dist.config import load_config
from synth_fixtures import quick_config, run_calibration, store10  # noqa: F401 - fixture

CACHE = "/tmp/differland-test-jax-cache"


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"JAX_COMPILATION_CACHE_DIR": CACHE}})
    yield
    ray.shutdown()


BASE = {"training.steps": 3, "training.patches_per_step": 7,
        "training.patches_per_call": 2, "training.eval_every": 0, "training.checkpoint_every": 0,
        "training.seed": 11, "ray.workers": 1}


def _cfg(url, **kw):
    return quick_config(url, BASE, **kw)


_run = run_calibration


# -- the split of a step ---------------------------------------------------------------------

@pytest.mark.parametrize("n,group", [(7, 2), (32, 4), (5, 1), (3, 8), (64, 5)])
def test_calls_are_dealt_evenly_and_do_not_depend_on_workers(n, group):
    from differland_dist.distributed.policy import calls, deal

    patches = list(np.random.default_rng(n).permutation(1000)[:n])
    reference = calls(patches, group)
    for W in (1, 2, 3, 4, 5):
        dealt = deal(patches, group, W)
        per_worker = [len(calls(dealt.get(w, []), group)) for w in range(W)]
        assert max(per_worker) - min(per_worker) <= 1, (W, per_worker)
        assert sum(per_worker) == len(reference)
        # the same calls whatever the number of workers: a patch's bits depend on its call
        got = sorted(c for ids in dealt.values() for c in map(tuple, calls(ids, group)))
        assert got == sorted(map(tuple, reference))


def test_call_size_from_pixels_per_call():
    from differland_dist.distributed.shard import DEFAULT_PIXELS_PER_CALL, patches_per_call

    tc = load_config(None, ["training.pixels_per_call=1000"]).training
    assert patches_per_call(tc, 100) == 10
    assert patches_per_call(tc, 100, n_devices=4) == 40          # each device filled
    assert patches_per_call(tc, 100, cap=7) == 7                  # never more than a step
    assert patches_per_call(tc, 100, n_devices=4, cap=7) == 8     # whole devices
    tc = load_config(None, ["training.patches_per_call=3", "training.pixels_per_call=1000"]).training
    assert patches_per_call(tc, 100) == 3
    tc = load_config(None, []).training
    assert patches_per_call(tc, 320, platform="cuda") == DEFAULT_PIXELS_PER_CALL["cuda"] // 320
    assert patches_per_call(tc, 320, platform="cpu") == DEFAULT_PIXELS_PER_CALL["cpu"] // 320
    from differland_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="training.pixels_per_call"):
        load_config(None, ["training.pixels_per_call=0"])
    with pytest.raises(ConfigError, match="data.cache_bytes"):
        load_config(None, ["data.cache_bytes=-1"])


# -- bit-identity with 1 and 4 workers, balanced calls ---------------------------------------

@pytest.fixture(scope="module")
def one_worker(ray_local, store10, tmp_path_factory):
    return _run(_cfg(store10), tmp_path_factory.mktemp("w1"))


def test_four_workers_same_network_and_balanced_calls(one_worker, store10, tmp_path):
    state, cal = _run(_cfg(store10, **{"ray.workers": 4}), tmp_path / "w4")
    np.testing.assert_array_equal(state.flat, one_worker[0].flat)
    for m in (m for m in cal.metrics if m["split"] == "train"):
        # 7 patches in calls of 2: 4 calls, one per worker
        assert m["calls"] == 4 and sorted(m["worker_calls"]) == [1, 1, 1, 1]
    for m in (m for m in one_worker[1].metrics if m["split"] == "train"):
        assert m["worker_calls"] == [4]


# -- streamed patches, bounded cache ---------------------------------------------------------

def test_store_larger_than_the_cache_streams_with_bounded_memory(store10):
    """A shard whose cache holds a quarter of the store computes every train patch twice
    (two epochs): resident bytes never exceed the bound, patches are evicted and read again,
    and the results are the bits of a shard that holds everything."""
    import jax

    from differland_dist.data.store import open_store
    from differland_dist.distributed.shard import Shard
    from differland_dist.network.mlp import init_network

    cfg = _cfg(store10)
    ids = [int(p) for p in open_store(store10).train_patches]
    big = Shard(cfg, (), group=2, cache_bytes=1 << 40)
    one = big._read(ids[:1])[ids[0]].nbytes
    bound = one * len(ids) // 4
    small = Shard(cfg, (), group=2, cache_bytes=bound)
    net = init_network(jax.random.PRNGKey(2), 20, cfg.network)
    sums = big.predictor_sums(ids)
    n = sum(v[0] for v in sums.values())
    mean = sum(v[1] for v in sums.values()) / n
    std = np.sqrt(np.maximum(sum(v[2] for v in sums.values()) / n - mean**2, 1e-12))
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    ref = big.compute(net, ids, mean, std)
    for epoch in range(2):
        got = small.compute(net, ids, mean, std)
        assert small.cache.stats["bytes"] <= bound and small.cache.stats["peak_bytes"] <= bound + 2 * one
        for (p, t, g), (p0, t0, g0) in zip(got, ref):
            assert p == p0
            np.testing.assert_equal(t, t0)
            np.testing.assert_array_equal(g, g0)
    s = small.cache.stats
    assert s["evicted"] > 0 and s["loaded"] >= 2 * len(ids) - len(ids) // 4
    assert big.cache.stats["loaded"] == len(ids) and big.cache.stats["evicted"] == 0  # read once
    big.close(), small.close()


def test_prefetch_reads_the_next_patches_in_the_background(store10):
    from differland_dist.data.store import open_store
    from differland_dist.distributed.shard import Shard

    ids = [int(p) for p in open_store(store10).train_patches][:6]
    shard = Shard(_cfg(store10), (), group=2, cache_bytes=1 << 30)
    shard.prefetch(ids)
    shard.cache.get(ids)            # waits for the background read, reads nothing itself
    s = shard.cache.stats
    assert s["prefetched"] == 6 and s["loaded"] == 6
    shard.close()


def test_small_cache_run_is_identical_and_bounded(one_worker, store10, tmp_path):
    """A 2-worker run whose workers may keep two patches each trains the same network; the
    workers' caches stay within the bound."""
    from differland_dist.data.store import open_store
    from differland_dist.distributed.shard import Shard

    probe = Shard(_cfg(store10), (), group=1, cache_bytes=0)
    one = probe._read([int(open_store(store10).train_patches[0])])
    bound = 2 * next(iter(one.values())).nbytes
    probe.close()
    seen = []

    def watch(step, cal):
        seen.extend(cal.worker_info())

    state, cal = _run(_cfg(store10, **{"ray.workers": 2, "data.cache_bytes": bound}), tmp_path / "c",
                      hooks=[watch])
    np.testing.assert_array_equal(state.flat, one_worker[0].flat)
    assert seen and all(i["cache"]["bytes"] <= bound for i in seen)
    assert sum(i["cache"]["evicted"] for i in seen) > 0
