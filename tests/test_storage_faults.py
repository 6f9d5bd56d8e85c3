"""Object storage as it really behaves: the commands survive its faults, bit for bit (issue 30).

A fault-injecting proxy (tests/fault_proxy.py) stands in front of the real GCS emulator and
answers a seeded few percent of requests with 503 or 429, drops the connection after the
server did the work, or cuts the response body short. ``synth``, ``validate``, ``infer``, the
netCDF export, ``calibrate`` and ``experiment`` run through it and must give exactly what they
give without faults. Faults that do not go away give one line naming the object, leave nothing
marked complete, and a rerun resumes. The requests one transient fault costs are counted.

In this process and the Ray workers the storage client's backoff (gcsfs's 1, 2, 4 ... s) and
ours run 100 times faster (tests/quick_backoff.py): the tries are the real ones, only the waits
are shortened.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from ray_session import ray_session
import xarray as xr

from fault_proxy import Faults, faults_through
from storage_servers import gcs_emulator, gcs_emulator_server, s3_server  # noqa: F401 - fixtures
from synth_fixtures import SMALL, small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.storage import retries
from differland_dist.cli.main import main
from differland_dist.storage.location import OWNER_MARKER, Location

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
ROOT = Path(__file__).resolve().parents[1]

#: Each request: 4 % 503, 3 % 429, 3 % dropped after the server acted, 3 % body cut short.
FAULTS = Faults(p_503=0.04, p_429=0.03, p_drop=0.03, p_truncate=0.03, latency_s=0.001, seed=30)
SYNTH_ARGS = ["--resolution", str(SMALL["resolution"]), "--years", str(SMALL["years"]),
              "--seed", str(SMALL["seed"]), "--max-patch-size", str(SMALL["max_patch_size"])]


@pytest.fixture(scope="module")
def quick_backoff():
    """gcsfs's and our waits between tries, 100 times shorter, in this process (and in the
    Ray workers of :func:`ray_local`)."""
    import quick_backoff as qb

    undo = qb.install()
    yield
    undo()


@pytest.fixture(scope="module")
def flaky(gcs_emulator, quick_backoff):  # noqa: F811
    """(proxy, the emulator's dict as seen through it); tests set the proxy's faults."""
    with faults_through(gcs_emulator, FAULTS) as (proxy, info):
        yield proxy, info


def _url(info, name):
    return f"{info['url_prefix']}/{uuid.uuid4().hex}/{name}"


def _objects(url, so) -> dict[str, bytes]:
    loc = Location(url, so)
    return {k: loc.join(k).read_bytes() for k in loc.list_objects()}


def _local_objects(path) -> dict[str, bytes]:
    loc = Location(str(path))
    return {k: loc.join(k).read_bytes() for k in loc.list_objects()}


def _all_kinds_injected(proxy):
    assert all(proxy.injected[k] > 0 for k in ("503", "429", "drop", "truncate")), proxy.injected


# -- synth and validate ------------------------------------------------------------------------
def test_synth_and_validate_through_faults(flaky, gcs_emulator, small_store_url, capsys):  # noqa: F811
    proxy, info = flaky
    proxy.reset(FAULTS)
    url = _url(info, "s.zarr")
    so = json.dumps(info["storage_options"])
    assert main(["synth", "--out", url, *SYNTH_ARGS, "--storage-options", so]) == 0
    assert main(["validate", url, "--storage-options", so]) == 0
    _all_kinds_injected(proxy)
    # every object, read without faults, is the byte of the same store written locally
    assert _objects(url, gcs_emulator["storage_options"]) == _local_objects(small_store_url)


def test_a_write_fault_that_stays_names_the_object_and_a_rerun_completes(flaky, gcs_emulator,  # noqa: F811
                                                                        small_store_url, capsys):  # noqa: F811
    proxy, info = flaky
    proxy.reset(Faults(always=("/t_min/c/1/0",)))
    url = _url(info, "s.zarr")
    so = json.dumps(info["storage_options"])
    assert main(["synth", "--out", url, *SYNTH_ARGS, "--storage-options", so]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error:") and f"{url}/t_min/c/1/0" in err and "503" in err
    # 6 tries of gcsfs, each of our 3 tries: the bound of retries.py
    assert proxy.requests[("POST", url.removeprefix("gs://") + "/t_min/c/1/0")] == 18
    clean = Location(url, gcs_emulator["storage_options"])
    assert clean.join(OWNER_MARKER).exists() and not clean.join("zarr.json").exists()
    assert main(["validate", url, "--storage-options", so]) == 1  # not a complete store
    capsys.readouterr()
    proxy.reset(FAULTS)  # the fault went away: the rerun replaces what the first one left
    assert main(["synth", "--out", url, *SYNTH_ARGS, "--storage-options", so, "--overwrite"]) == 0
    assert _objects(url, gcs_emulator["storage_options"]) == _local_objects(small_store_url)


def test_s3_write_and_read_through_faults(s3_server, small_ds, small_store_url,  # noqa: F811
                                          quick_backoff):
    """The S3 server behind the proxy (S3's SlowDown/429 bodies): a store written through
    faults is the local store's bytes, each upload checked against its ETag (read back), and
    reads through faults give the local rows."""
    from differland_dist.data.rows import RowReader
    from differland_dist.data.store import open_store, write_store

    faults = Faults(p_503=0.02, p_429=0.01, p_drop=0.02, p_truncate=0.02, seed=31)
    with faults_through(s3_server, faults, flavour="s3") as (proxy, info):
        url = _url(info, "s.zarr")
        write_store(small_ds, Location(url, info["storage_options"]))
        assert _objects(url, s3_server["storage_options"]) == _local_objects(small_store_url)
        heads = sum(n for (method, _), n in proxy.requests.items() if method == "HEAD")
        assert heads >= len(_local_objects(small_store_url))  # every upload read back
        with RowReader(open_store(Location(url, info["storage_options"]))) as rows:
            got = rows.read(["t_min", "lai"] if "lai" in small_ds else ["t_min"])
        ref = RowReader(open_store(small_store_url)).read(list(got))
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k])
        assert sum(proxy.injected.values()) > 0


@pytest.mark.parametrize("kind", ["503", "drop"])
def test_s3_retries_are_botocores_times_ours(s3_server, small_ds, quick_backoff, kind):  # noqa: F811
    """On s3:// one chunk that always fails costs botocore's 6 tries times our 3 (s3fs's own
    loop cut to one try by retries.tune_client; before, a dropped connection cost 5 times
    more), then one error naming the chunk."""
    from differland_dist.data.rows import RowReader
    from differland_dist.data.store import open_store, write_store
    from differland_dist.errors import StorageReadError

    with faults_through(s3_server, Faults(), flavour="s3") as (proxy, info):
        url = _url(info, "r.zarr")
        write_store(small_ds, Location(url, info["storage_options"]))
        store = open_store(Location(url, info["storage_options"]))
        key = url.removeprefix("s3://") + "/t_min/c/1/0"

        class Always(Faults):
            def decide(self, method, obj, n):
                return kind if obj == key else None

        proxy.reset(Always())
        with RowReader(store) as rows:
            with pytest.raises(StorageReadError, match=r"t_min pixels 8\.\.15 of s3://"):
                rows.read(["t_min"], slice(8, 16))
        # aiohttp itself re-sends a request once when a reused keep-alive connection is
        # dropped before the answer (below botocore), so a drop costs twice a 503
        per_try = {"503": 1, "drop": 2}[kind]
        assert proxy.requests[("GET", key)] == per_try * 6 * 3 == per_try * \
            retries.CLIENT_ATTEMPTS["s3"] * retries.BEHIND_RETRYING_CLIENT.attempts


def test_a_stored_object_is_compared_with_what_was_sent(tmp_path):
    """What the read-back compares: size, GCS's base64 MD5, S3's hex ETag (not a multipart
    one, which is no MD5)."""
    import base64
    import hashlib

    from differland_dist.storage.uploads import file_md5, mismatch

    data = b"abc\r"
    md5 = hashlib.md5(data)
    sent = len(data), md5.digest()
    assert mismatch({"size": 4, "ETag": f'"{md5.hexdigest()}"'}, *sent) is None
    assert mismatch({"size": 3}, *sent) == "stored 3 bytes, sent 4"
    assert "ETag" in mismatch({"size": 4, "ETag": '"' + "0" * 32 + '"'}, *sent)
    assert mismatch({"size": 4, "ETag": '"' + "0" * 32 + '-2"'}, *sent) is None
    assert mismatch({"size": 4, "md5Hash": base64.b64encode(md5.digest()).decode()}, *sent) is None
    assert "MD5" in mismatch({"size": 4, "md5Hash": base64.b64encode(b"x" * 16).decode()}, *sent)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert file_md5(str(path)) == sent


def test_a_large_file_is_streamed_and_verified(gcs_emulator, tmp_path, monkeypatch):  # noqa: F811
    """Files above INLINE_MAX go up with put_file (not read into memory), checked too."""
    import os

    from differland_dist.storage import uploads
    from differland_dist.storage.location import filesystem

    monkeypatch.setattr(uploads, "INLINE_MAX", 1000)
    url = _url(gcs_emulator, "big")
    fs, root = filesystem(url, {**gcs_emulator["storage_options"], "consistency": "none"})
    blobs = {"a": os.urandom(5000) + b"\r", "b": os.urandom(10)}
    for k, v in blobs.items():
        (tmp_path / k).write_bytes(v)
    uploads.upload(fs, [(str(tmp_path / k), f"{root}/{k}") for k in blobs], url)
    fs.invalidate_cache()
    assert {k: fs.cat_file(f"{root}/{k}") for k in blobs} == blobs


# -- reads: bounded, named ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def gs_store(gcs_emulator, small_store_url):  # noqa: F811
    """The small store on the emulator (uploaded without faults)."""
    from differland_dist.storage.location import filesystem

    url = _url(gcs_emulator, "small.zarr")
    fs, root = filesystem(url, gcs_emulator["storage_options"])
    fs.put(small_store_url, root, recursive=True)
    return url


def test_reads_through_faults_are_bit_identical(flaky, gs_store, small_store_url):  # noqa: F811
    from differland_dist.data.reader import PatchReader
    from differland_dist.data.store import open_store

    proxy, info = flaky
    proxy.reset(FAULTS)
    remote, local = open_store(Location(gs_store, info["storage_options"])), open_store(small_store_url)
    ids = [int(p) for p in local.patch_ids]
    preds = ["MAT", "SAND", "lat"]
    with PatchReader(remote, preds, {}) as r, PatchReader(local, preds, {}) as l:
        got, ref = r.read(ids), l.read(ids)
    lab_got, lab_ref = got.labels, ref.labels
    for a, b in ((got.pixel_index, ref.pixel_index), (got.forcing, ref.forcing),
                 (got.predictors, ref.predictors),
                 *zip((x for st in lab_got.streams for x in lab_got.stream(st)),
                      (x for st in lab_ref.streams for x in lab_ref.stream(st)))):
        np.testing.assert_array_equal(a, b)
    assert sum(proxy.injected.values()) > 0


def test_a_transient_read_error_is_retried_a_bounded_number_of_times(flaky, gs_store):
    """A chunk that always answers 503: 6 requests per try (gcsfs), 3 tries (ours), then one
    error naming the chunk; a chunk that fails 7 times in a row (one try of ours spent) is
    read on the 8th request."""
    from differland_dist.data.rows import RowReader
    from differland_dist.data.store import open_store
    from differland_dist.errors import StorageReadError

    proxy, info = flaky
    key = gs_store.removeprefix("gs://") + "/t_min/c/1/0"
    proxy.reset(FAULTS)
    store = open_store(Location(gs_store, info["storage_options"]))  # validated here, faults survived
    proxy.reset(Faults(always=(key,)))
    with RowReader(store) as rows:
        with pytest.raises(StorageReadError, match=r"reading t_min pixels 8\.\.15 of gs://.*"
                                                   r"failed after 3 attempt\(s\)"):
            rows.read(["t_min"], slice(8, 16))
    assert proxy.requests[("GET", key)] == 6 * 3 == retries.CLIENT_ATTEMPTS["gs"] * \
        retries.BEHIND_RETRYING_CLIENT.attempts

    class FirstSeven(Faults):
        def decide(self, method, obj, n):
            return "503" if obj == key and n < 7 else None

    proxy.reset(FirstSeven())
    with RowReader(store) as rows:
        got = rows.read(["t_min"], slice(8, 16))["t_min"]
    assert proxy.requests[("GET", key)] == 8 and np.isfinite(got).all()


def test_readers_of_a_process_share_a_bounded_pool_of_requests(gcs_emulator, gs_store,  # noqa: F811
                                                               small_store_url, monkeypatch):  # noqa: F811
    """Six readers of 8 requests each, in six threads, under a pool of 4 slots: never more
    than 4 requests in flight, and the rows read are the local store's."""
    import threading

    from differland_dist.data.rows import RowReader
    from differland_dist.data.store import open_store
    from differland_dist.errors import DifferlandError
    from differland_dist.storage.throttle import ENV, reset_storage_slots, slots_from_env

    store = open_store(Location(gs_store, gcs_emulator["storage_options"]))
    ref = RowReader(open_store(small_store_url)).read(["t_min", "swrad"])
    pool = reset_storage_slots(4)
    got, errors = [], []

    def read():
        try:
            with RowReader(store, max_workers=8) as rows:
                got.append(rows.read(["t_min", "swrad"]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=read) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        reset_storage_slots()
    assert not errors and len(got) == 6
    assert 1 <= pool.peak <= 4 and pool.in_flight == 0
    for g in got:
        for k in ref:
            np.testing.assert_array_equal(g[k], ref[k])
    monkeypatch.setenv(ENV, "0")
    with pytest.raises(DifferlandError, match=f"{ENV}='0': expected an integer >= 1"):
        slots_from_env()


# -- inference and its netCDF export -----------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(small_store_url, tmp_path_factory):  # noqa: F811
    from random_checkpoint import random_checkpoint

    path = str(tmp_path_factory.mktemp("ckpt") / "network.npz")
    return random_checkpoint(small_store_url, path, config={"loss": {"warm_up": 3}})


def _inference_options():
    from differland_dist.inference.pipeline import InferenceOptions

    return InferenceOptions(chunk_pixels=8, executor="local", pixels_per_task=16)


def _zarr_values(url, so=None) -> dict[str, np.ndarray]:
    from differland_dist.data.store import zarr_store
    from differland_dist.inference.output import DONE, WRITTEN_AT

    ds = xr.open_zarr(zarr_store(Location(url, so)), zarr_format=3, consolidated=True)
    return {k: np.asarray(ds[k].values) for k in ds.data_vars
            if k not in (DONE, WRITTEN_AT)}


@pytest.fixture(scope="module")
def local_inference(checkpoint, small_store_url, tmp_path_factory):  # noqa: F811
    from differland_dist.inference.pipeline import run_inference

    out = str(tmp_path_factory.mktemp("inf") / "out")
    run_inference(checkpoint, out, small_store_url, options=_inference_options(), netcdf=True)
    return out


def test_infer_and_export_through_faults(flaky, gcs_emulator, gs_store, checkpoint,  # noqa: F811
                                         local_inference, tmp_path):
    """gs:// to gs://, zarr and netCDF: the values of a fault-free local run, bit for bit."""
    from differland_dist.inference.pipeline import run_inference

    proxy, info = flaky
    proxy.reset(FAULTS)
    so = info["storage_options"]
    out = _url(info, "out")
    r = run_inference(Location(checkpoint, so), Location(out, so), Location(gs_store, so),
                      options=_inference_options(), netcdf=True)
    assert r.complete
    _all_kinds_injected(proxy)
    ref, got = _zarr_values(f"{local_inference}/inference.zarr"), \
        _zarr_values(f"{out}/inference.zarr", gcs_emulator["storage_options"])
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    _same_netcdf(out, local_inference, gcs_emulator["storage_options"], tmp_path)


def _same_netcdf(url, local_dir, so, tmp_path):
    import os

    from differland_dist.inference.export import NETCDF_FILES

    loc = Location(url, so)
    names = [n for n in NETCDF_FILES if os.path.exists(os.path.join(local_dir, n))]
    assert names and all(loc.join(n).exists() for n in names)
    for n in names:
        copy = tmp_path / n
        copy.write_bytes(loc.join(n).read_bytes())
        with xr.open_dataset(copy) as got, xr.open_dataset(os.path.join(local_dir, n)) as ref:
            xr.testing.assert_equal(got.load(), ref.load())  # values; global attrs name sources
            for k in ref.variables:  # attrs may hold arrays (flag_values): compare as JSON text
                assert json.dumps(got[k].attrs, sort_keys=True, default=repr) == \
                    json.dumps(ref[k].attrs, sort_keys=True, default=repr), k


def test_an_output_fault_that_stays_is_named_and_the_rerun_resumes(flaky, gcs_emulator, gs_store,  # noqa: F811
                                                                   checkpoint, local_inference):
    from differland_dist.errors import StorageWriteError
    from differland_dist.inference.output import read_attrs
    from differland_dist.inference.pipeline import run_inference

    proxy, info = flaky
    so = info["storage_options"]
    out = _url(info, "out.zarr")
    bad = out.removeprefix("gs://") + "/gpp/c/3/0"
    proxy.reset(Faults(always=(bad,)))
    with pytest.raises(StorageWriteError, match=f"writing gs://{bad} failed after 3 attempt"):
        run_inference(Location(checkpoint, so), Location(out, so), Location(gs_store, so),
                      options=_inference_options())
    attrs = read_attrs(Location(out, gcs_emulator["storage_options"]))
    assert attrs is not None and not attrs["complete"]
    proxy.reset(FAULTS)
    r = run_inference(Location(checkpoint, so), Location(out, so), Location(gs_store, so),
                      options=_inference_options())
    assert r.complete and 0 < r.pixels_computed < 67  # only what was not committed
    ref, got = _zarr_values(f"{local_inference}/inference.zarr"), \
        _zarr_values(out, gcs_emulator["storage_options"])
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


# -- writes verified when they happen: the emulator's own carriage-return defect ---------------
@pytest.fixture(scope="module")
def cr_emulator():
    """gcp-storage-emulator with its own upload parser, which drops an object's final byte
    when it is a carriage return."""
    with gcs_emulator_server("crbug", exact_multipart=False) as info:
        yield info


def test_the_emulator_defect_is_real_and_the_shim_mends_it(cr_emulator, gcs_emulator):  # noqa: F811
    """Regression test of tests/storage_servers.py's multipart shim: without it the emulator
    stores b"abc" for b"abc\\r" (so the test below shows a real defect); with it, the bytes."""
    import fsspec

    raw = fsspec.filesystem("gs", skip_instance_cache=True, **cr_emulator["storage_options"])
    raw.pipe_file("crbug/plain/x", b"abc\r")  # no verification (consistency none)
    assert raw.cat_file("crbug/plain/x") == b"abc"
    fixed = fsspec.filesystem("gs", skip_instance_cache=True, **gcs_emulator["storage_options"])
    key = f"{gcs_emulator['bucket']}/{uuid.uuid4().hex}/x"
    for data in (b"abc\r", b"abc\r\n", b"\rabc", b"x" * 300_000 + b"\r"):
        fixed.pipe_file(key, data)
        assert fixed.cat_file(key) == data


def test_an_upload_stored_differently_is_caught_when_written(cr_emulator, small_ds,  # noqa: F811
                                                             quick_backoff, tmp_path):
    """write_store onto the defective emulator: the chunk whose last byte is CR is named at
    write time, the store is never marked complete; other writes verify too."""
    from differland_dist.data.store import write_store
    from differland_dist.errors import StorageWriteError
    from differland_dist.storage.location import filesystem

    local = tmp_path / "s.zarr"
    write_store(small_ds, str(local))
    cr = sorted(k for k, v in _local_objects(local).items() if v.endswith(b"\r"))
    assert cr, "the small store has no object ending in CR"
    url = _url(cr_emulator, "s.zarr")
    so = cr_emulator["storage_options"]
    with pytest.raises(StorageWriteError) as e:
        write_store(small_ds, Location(url, so))
    msg = str(e.value)
    assert any(f"{url}/{k}" in msg for k in cr) and "MD5" in msg, msg
    assert "\n" not in msg
    assert not Location(url, so).join("zarr.json").exists()  # never marked complete
    with pytest.raises(StorageWriteError, match=r"writing gs://crbug/.*/note\.json failed"):
        Location(_url(cr_emulator, "note.json"), so).write_atomic(b'{"a": 1}\r')
    fs, _ = filesystem(url, so)
    assert fs.consistency == "md5"  # the default this package gives gcsfs


# -- calibrate and experiment: Ray workers reading gs:// through the proxy ------------------------
# (the workers run quick_backoff.install at start-up; the runs are kept to two steps)
CACHE = "/tmp/differland-test-jax-cache"
@pytest.fixture(scope="module")
def ray_local(quick_backoff):
    import os

    import ray

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([os.path.dirname(here), here, os.environ.get("PYTHONPATH", "")])
    with ray_session(runtime_env={"env_vars": {"JAX_COMPILATION_CACHE_DIR": CACHE, "PYTHONPATH": path},
                                  "worker_process_setup_hook": "quick_backoff.install"}):
        yield


def _network(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        # the arrays; "__meta_json__" names the store and the run, which differ by design
        return {k: z[k] for k in z.files if not k.startswith("__")}


def _grid(url, extra=()):
    """One predictor set, one member, two steps (configs/experiment_demo.yaml made small)."""
    from differland_dist.experiment import load_grid

    over = [f"base.data.url={url}", "base.training.steps=2",
            "base.training.patches_per_step=4", "base.training.patches_per_call=4",
            "base.training.eval_every=2", "base.training.checkpoint_every=2",
            "base.optimizer.warmup_steps=1",
            "base.ray.runtime_env={env_vars: {JAX_COMPILATION_CACHE_DIR: %s}}" % CACHE,
            "members=1", "keep_best=1", "predictor_sets=[[PFT]]",
            "ensemble_series=[gpp, lai]", *extra]
    return load_grid(ROOT / "configs" / "experiment_demo.yaml", over)


def _run_experiment(grid, out, so):
    from differland_dist.experiment.pipeline import prepare_dir, run_experiment
    from differland_dist.inference.pipeline import InferenceOptions

    from differland_dist.storage.location import Location

    out = Location(out, so)
    prepare_dir(grid, out, False)
    return run_experiment(grid, out, resume=True,
                          inference_options=InferenceOptions(executor="local"))


MEMBER = "members/PFT/m000"


@pytest.fixture(scope="module")
def local_experiment(ray_local, small_store_url, tmp_path_factory):  # noqa: F811
    """The fault-free experiment on the local store: the reference of both tests below."""
    out = str(tmp_path_factory.mktemp("exp") / "ref")
    _run_experiment(_grid(small_store_url), out, {})
    return out


def _same_network(url, so, ref_path, tmp_path):
    copy = tmp_path / "network.npz"
    copy.write_bytes(Location(url, so).read_bytes())
    ref, got = _network(ref_path), _network(copy)
    assert ref and set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_experiment_through_faults(flaky, gcs_emulator, gs_store, local_experiment, tmp_path):  # noqa: F811
    """The store and the experiment directory on gs:// through faults: the member's network
    and the ensemble of the local run, bit for bit."""
    proxy, info = flaky
    so = info["storage_options"]
    proxy.reset(FAULTS)
    out = _url(info, "exp")
    _run_experiment(_grid(gs_store, [f"base.data.storage_options={json.dumps(so)}"]), out, so)
    assert sum(proxy.injected.values()) > 0
    clean = gcs_emulator["storage_options"]
    _same_network(f"{out}/{MEMBER}/network.npz", clean,
                  f"{local_experiment}/{MEMBER}/network.npz", tmp_path)
    ref_e = _zarr_values(f"{local_experiment}/ensemble.zarr")
    got_e = _zarr_values(f"{out}/ensemble.zarr", clean)
    assert ref_e and set(got_e) == set(ref_e)
    for k in ref_e:
        np.testing.assert_array_equal(got_e[k], ref_e[k], err_msg=k)


def test_calibrate_through_faults(flaky, gcs_emulator, gs_store, local_experiment, tmp_path):  # noqa: F811
    """`calibrate` of the reference member's own config: the worker reads the store and the
    driver writes the run directory, both on gs:// through faults; the member's network, bit
    for bit."""
    from differland_dist.config import load_config
    from synth_fixtures import run_calibration

    proxy, info = flaky
    so = info["storage_options"]
    cfg = load_config(f"{local_experiment}/{MEMBER}/config.yaml",
                      [f"data.url={gs_store}", f"data.storage_options={json.dumps(so)}"])
    proxy.reset(FAULTS)
    out = _url(info, "run")
    run_calibration(cfg, out, out_storage_options=so)
    assert sum(proxy.injected.values()) > 0
    _same_network(f"{out}/network.npz", gcs_emulator["storage_options"],
                  f"{local_experiment}/{MEMBER}/network.npz", tmp_path)
