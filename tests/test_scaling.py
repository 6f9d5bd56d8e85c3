"""Training that scales (issue 15): balanced steps, the same network for 1 to 4 workers and
for any call split, streamed patches through a bounded cache with prefetch, and call sizes
from ``training.pixels_per_call``. Runs use the 10-degree synthetic Earth and few steps."""

from __future__ import annotations

import numpy as np
import pytest
from ray_session import ray_session

from differland_dist.config import load_config
from synth_fixtures import quick_config, run_calibration, store10  # noqa: F401 - fixture

CACHE = "/tmp/differland-test-jax-cache"


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(num_cpus=4, runtime_env={"env_vars": {"JAX_COMPILATION_CACHE_DIR": CACHE}}):
        yield


# calls of 16 pixels (the store's largest patch has 14): a step's 7 patches pack into 3-4 calls
BASE = {"training.steps": 3, "training.patches_per_step": 7,
        "training.pixels_per_call": 16, "training.eval_every": 0, "training.checkpoint_every": 0,
        "training.seed": 11, "ray.workers": 1}


def _cfg(url, **kw):
    return quick_config(url, BASE, **kw)


_run = run_calibration


# -- the split of a step ---------------------------------------------------------------------

@pytest.mark.parametrize("n,rows", [(7, 16), (32, 40), (5, 14), (3, 200), (64, 23)])
def test_calls_pack_in_order_and_are_dealt_evenly(n, rows):
    from differland_dist.distributed.policy import calls, deal

    rng = np.random.default_rng(n)
    patches = [int(p) for p in rng.permutation(1000)[:n]]
    sizes = {p: int(rng.integers(1, 15)) for p in patches}
    cl = calls(patches, sizes, rows)
    assert [p for c in cl for p in c] == patches                 # every patch once, in order
    for c, nxt in zip(cl, cl[1:] + [None]):
        used = sum(sizes[p] for p in c)
        assert used <= rows
        if nxt is not None:                                      # closed because the next did not fit
            assert used + sizes[nxt[0]] > rows
    for W in (1, 2, 3, 4, 5):
        dealt = deal(len(cl), W)
        per_worker = [len(dealt.get(w, [])) for w in range(W)]
        assert max(per_worker) - min(per_worker) <= 1, (W, per_worker)
        assert sorted(c for idx in dealt.values() for c in idx) == list(range(len(cl)))
    with pytest.raises(ValueError, match="more than a call"):
        calls([1], {1: 20}, 16)


def test_call_rows_fill_a_steps_calls_evenly():
    from differland_dist.distributed.policy import call_rows, calls

    # a step of 210 patches of 10 pixels (2,100) at most 1,024 a call: three calls either
    # way, but of 710 rows (2,130 rows in all) instead of 1,024 (3,072, a third padding)
    assert call_rows([10] * 1000, 210, 1024) == 710
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 21, 2000)
    rows = call_rows(sizes, 250, 1024)           # a step: ~3,180 pixels, 3.1 calls of 1,024
    assert rows < 1024
    steps = [rng.choice(len(sizes), 250, replace=False) for _ in range(200)]
    n_calls = [len(calls(list(st), dict(enumerate(sizes)), rows)) for st in steps]
    full = [len(calls(list(st), dict(enumerate(sizes)), 1024)) for st in steps]
    assert max(n_calls) == 4                     # the large step's calls, never one more
    # the rows computed (the cost) fall by more than a tenth
    assert sum(n * rows for n in n_calls) < 0.9 * sum(n * 1024 for n in full)
    fill = np.mean([sizes[st].sum() / (n * rows) for st, n in zip(steps, n_calls)])
    fill_cap = np.mean([sizes[st].sum() / (n * 1024) for st, n in zip(steps, full)])
    assert fill > 0.9 and fill > fill_cap + 0.1, (fill, fill_cap)
    assert call_rows([10] * 1000, 50, 1024) == 500          # a whole step fits one call
    assert call_rows([300, 5], 2, 100) == 300               # at least the largest patch


def test_call_shape_from_pixels_per_call():
    from differland_dist.distributed.shard import DEFAULT_PIXELS_PER_CALL, call_shape

    tc = load_config(None, ["training.pixels_per_call=1000"]).training
    assert call_shape(tc, [100] * 50, per_step=40) == (1000, 10, 0, 100)
    assert call_shape(tc, [100] * 50, n_devices=4, per_step=40) == (4000, 40, 0, 100)  # each device filled
    assert call_shape(tc, [100] * 50, per_step=7) == (700, 7, 0, 100)          # never more than a step
    assert call_shape(tc, [100] * 50, n_devices=3, per_step=7) == (702, 7, 0, 100)  # whole rows per device
    # mixed sizes: a step's largest 4 patches hold 206 pixels, more than a call's 150; the
    # most a call can hold is its three smallest (1 + 5 + 100)
    tc = load_config(None, ["training.pixels_per_call=150"]).training
    assert call_shape(tc, [1, 5, 100, 100], per_step=4) == (150, 3, 0, 100)
    assert call_shape(tc, [300, 5], per_step=4) == (300, 1, 0, 300)            # at least the largest patch
    tc = load_config(None, ["training.patches_per_call=3", "training.pixels_per_call=1000"]).training
    assert call_shape(tc, [100, 20], per_step=40) == (300, 3, 3, 100)          # count wins, old layout
    tc = load_config(None, []).training
    assert call_shape(tc, [256] * 2048, platform="cuda", per_step=2048).rows == DEFAULT_PIXELS_PER_CALL["cuda"]
    assert call_shape(tc, [256] * 64, platform="cpu", per_step=64).rows == DEFAULT_PIXELS_PER_CALL["cpu"]
    from differland_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="training.pixels_per_call"):
        load_config(None, ["training.pixels_per_call=0"])
    with pytest.raises(ConfigError, match="data.cache_bytes"):
        load_config(None, ["data.cache_bytes=-1"])


def test_a_packed_call_equals_its_patches_alone(store10):
    """Packing patches into one call (no padding per patch) gives the loss terms and the
    gradient of the patches computed one by one, summed (to float rounding)."""
    import jax

    from differland_dist.data.store import open_store
    from differland_dist.distributed.shard import CallShape, Shard
    from differland_dist.network.mlp import init_network

    cfg = _cfg(store10)
    ids = [int(p) for p in open_store(store10).train_patches][:5]
    shard = Shard(cfg, ids)
    alone = Shard(cfg, ids, shape=CallShape(16, 1, 0, 14))
    net = init_network(jax.random.PRNGKey(1), 20, cfg.network)
    mean, std = np.zeros(21, np.float32), np.ones(21, np.float32)
    ((_, packed, g),) = shard.compute(net, [ids[:3]], mean, std)
    parts = alone.compute(net, [[p] for p in ids[:3]], mean, std)
    for k, v in packed.items():
        assert v == pytest.approx(sum(t[k] for _, t, _ in parts), rel=1e-5, abs=1e-6), k
    np.testing.assert_allclose(g, sum(x for _, _, x in parts), rtol=2e-4, atol=1e-6)
    shard.close(), alone.close()


# -- bit-identity with 1 and 4 workers, balanced calls ---------------------------------------

@pytest.fixture(scope="module")
def one_worker(ray_local, store10, tmp_path_factory):
    return _run(_cfg(store10), tmp_path_factory.mktemp("w1"))


def test_four_workers_same_network_and_balanced_calls(one_worker, store10, tmp_path):
    state, cal = _run(_cfg(store10, **{"ray.workers": 4}), tmp_path / "w4")
    np.testing.assert_array_equal(state.flat, one_worker[0].flat)
    for m in (m for m in cal.metrics if m["split"] == "train"):
        # 7 patches packed into calls of 16 pixels, dealt evenly
        w = m["worker_calls"]
        assert m["calls"] >= 3 and sum(w) == m["calls"] and max(w) - min(w) <= 1
    for m in (m for m in one_worker[1].metrics if m["split"] == "train"):
        assert m["worker_calls"] == [m["calls"]]


# -- streamed patches, bounded cache ---------------------------------------------------------

def test_store_larger_than_the_cache_streams_with_bounded_memory(store10):
    """A shard whose cache holds a quarter of the store computes every train patch twice
    (two epochs): resident bytes never exceed the bound, patches are evicted and read again,
    and the results are the bits of a shard that holds everything."""
    import jax

    from differland_dist.data.store import open_store
    from differland_dist.distributed.shard import Shard
    from differland_dist.network.mlp import init_network

    from differland_dist.distributed.policy import calls

    cfg = _cfg(store10)
    ids = [int(p) for p in open_store(store10).train_patches]
    big = Shard(cfg, (), cache_bytes=1 << 40)
    each = {p: a.nbytes for p, a in big._read(ids).items()}
    one = max(each.values())
    bound = sum(each.values()) // 4
    small = Shard(cfg, (), cache_bytes=bound)
    cl = calls(ids, {p: big.patch_pixels(p) for p in ids}, big.shape.rows)
    net = init_network(jax.random.PRNGKey(2), 20, cfg.network)
    sums = big.predictor_sums(ids)
    n = sum(v[0] for v in sums.values())
    mean = sum(v[1] for v in sums.values()) / n
    std = np.sqrt(np.maximum(sum(v[2] for v in sums.values()) / n - mean**2, 1e-12))
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    ref = big.compute(net, cl, mean, std)
    for epoch in range(2):
        got = small.compute(net, cl, mean, std)
        assert small.cache.stats["bytes"] <= bound and small.cache.stats["peak_bytes"] <= bound + 3 * one
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
    shard = Shard(_cfg(store10), (), cache_bytes=1 << 30)
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

    probe = Shard(_cfg(store10), (), cache_bytes=0)
    sizes = probe._read([int(p) for p in open_store(store10).train_patches])
    bound = 2 * max(a.nbytes for a in sizes.values())
    probe.close()
    seen = []

    def watch(step, cal):
        seen.extend(cal.worker_info())

    state, cal = _run(_cfg(store10, **{"ray.workers": 2, "data.cache_bytes": bound}), tmp_path / "c",
                      hooks=[watch])
    np.testing.assert_array_equal(state.flat, one_worker[0].flat)
    assert seen and all(i["cache"]["bytes"] <= bound for i in seen)
    assert sum(i["cache"]["evicted"] for i in seen) > 0
