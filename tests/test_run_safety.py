"""Run directories, checkpoints and inference outputs: nothing lost, nothing leaked (issue 11,
items 2, 3 and 7; issue 15's appended metrics).

Every test here failed before its fix. Runs are tiny: the 15-degree synthetic Earth, 1 worker,
2 to 4 steps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from ray_session import ray_session
import yaml

from storage_servers import gcs_emulator, s3_server  # noqa: F401 - fixtures
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.config import load_config
from differland_dist.errors import CheckpointError, ConfigError, DifferlandError
from differland_dist.errors import LeaseHeld, LeaseLost
from differland_dist.storage.lease import LEASE_FILE, Lease
from differland_dist.storage.location import Location

CACHE = "/tmp/differland-test-jax-cache"
SECRETS = ("sekrit-GCS-token-1", "sekrit-AWS-2", "sekrit-ENV-3")


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(num_cpus=2, runtime_env={"env_vars": {"JAX_COMPILATION_CACHE_DIR": CACHE}}):
        yield


def _sets(url, **kw):
    sets = [f"data.url={url}", "training.steps=2", "training.patches_per_step=3",
            "training.eval_every=2", "training.checkpoint_every=2", "training.seed=5",
            "ray.workers=1", "ray.runtime_env={env_vars: {JAX_COMPILATION_CACHE_DIR: %s}}" % CACHE]
    return sets + [f"{k}={v}" for k, v in kw.items()]


def _cfg(url, **kw):
    return load_config(None, _sets(url, **kw))


def _run(cfg, out, **kw):
    from differland_dist.distributed.trainer import calibrate

    return calibrate(cfg, str(out), **kw)


def _main(*argv):
    from differland_dist.cli.main import main

    return main(list(argv))


def _cli_config(tmp_path, url, **kw) -> str:
    """A config file equal to ``_cfg(url, **kw)`` for the CLI."""
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(_cfg(url, **kw).to_dict(), sort_keys=False))
    return str(p)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [x for x in err.strip().splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _train_steps(metrics, split="train"):
    return [m["step"] for m in metrics if m["split"] == split]


def _file_metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- 2. credentials never reach a file -------------------------------------------------------------
def test_scrub_drops_known_credentials_and_refuses_unknown_ones():
    from differland_dist.storage.secrets import scrub

    opts = {"token": {"type": "service_account", "private_key": "k"}, "project": "p",
            "endpoint_url": "http://127.0.0.1:9000", "key": "AKIA", "secret": "s",
            "client_kwargs": {"region_name": "x", "aws_session_token": "t"}, "anon": False}
    assert scrub(opts, "data.storage_options") == {
        "project": "p", "endpoint_url": "http://127.0.0.1:9000",
        "client_kwargs": {"region_name": "x"}, "anon": False}
    # a token that names a method is not a credential, and is what lets a reader reconnect
    assert scrub({"token": "anon"}, "o") == {"token": "anon"}
    with pytest.raises(ConfigError, match=r"data.storage_options.client_kwargs.my_api_password") as e:
        scrub({"client_kwargs": {"my_api_password": "hunter2"}}, "data.storage_options")
    assert "hunter2" not in str(e.value)
    with pytest.raises(ConfigError, match="URL with a password"):
        scrub({"endpoint_url": "https://me:hunter2@host"}, "o")
    assert scrub({"MY_TOKEN": "x", "XLA_FLAGS": "y"}, "env", strict=False) == {"XLA_FLAGS": "y"}


def test_no_credential_reaches_run_directory_or_inference_output(ray_local, small_store_url,
                                                                 tmp_path):
    """data.storage_options and runtime_env credentials are used, but config.yaml, every
    checkpoint, network.npz and the inference output's attributes hold none of them."""
    from differland_dist.inference.pipeline import InferenceOptions, run_inference
    from differland_dist.runs.trained import load_trained

    so = ("{token: %s, client_kwargs: {aws_secret_access_key: %s}, auto_mkdir: false}"
          % SECRETS[:2])
    env = "{env_vars: {JAX_COMPILATION_CACHE_DIR: %s, AWS_SECRET_ACCESS_KEY: %s}}" % (CACHE, SECRETS[2])
    cfg = _cfg(small_store_url, **{"data.storage_options": so, "ray.runtime_env": env,
                                   "training.checkpoint_every": 1})
    assert cfg.data.storage_options["token"] == SECRETS[0]
    run = tmp_path / "run"
    _run(cfg, run)
    out = tmp_path / "out.zarr"
    run_inference(str(run), str(out), Location(small_store_url, {}),
                  options=InferenceOptions(chunk_pixels=8, pixels_per_task=64, executor="local"))
    files = [p for d in (run, out) for p in d.rglob("*") if p.is_file()]
    assert any(p.name == "step_00000002.npz" for p in files) and (out / "zarr.json").exists()
    for p in files:
        data = p.read_bytes()
        for s in SECRETS:
            assert s.encode() not in data, f"{s} in {p}"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["storage_options"] == {"client_kwargs": {}, "auto_mkdir": False}
    assert saved["ray"]["runtime_env"]["env_vars"] == {"JAX_COMPILATION_CACHE_DIR": CACHE}
    assert load_trained(Location(str(run))).config.data.url == small_store_url
    # a resume with other (rotated) credentials is the same run
    cfg2 = _cfg(small_store_url, **{"data.storage_options": "{token: sekrit-rotated}",
                                    "training.steps": 3})
    state, _ = _run(cfg2, run, resume=True)
    assert state.step == 3


def test_credential_like_option_that_is_not_known_is_refused_up_front(small_store_url, tmp_path):
    cfg = _cfg(small_store_url, **{"data.storage_options": "{bearer_header: abc}"})
    with pytest.raises(ConfigError, match="data.storage_options.bearer_header"):
        _run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- 3. one run per run directory / output: the lease ---------------------------------------------
_HOLDER = """
import sys, time
from differland_dist.storage.lease import Lease
from differland_dist.storage.location import Location
target, file, owner = sys.argv[1:4]
Lease(Location(target), owner=owner, file=Location(file), heartbeat_s=0.5, stale_s=5).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold(target, owner, file=None):
    """Another process holding ``target``'s lease (a real Lease, heartbeating)."""
    file = file or f"{target}/{LEASE_FILE}"
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target), str(file), owner],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_calibrate_into_a_held_run_directory_is_refused(ray_local, small_store_url,
                                                               tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _cli_config(tmp_path, small_store_url)
    holder = _hold(run, "calibrate")
    try:
        time.sleep(1.2)  # a heartbeat or two
        assert _main("calibrate", cfg, "--out", str(run), "--no-progress") == 1
        err = _error_line(capsys)
        assert f"in use by calibrate on host {socket.gethostname()} (pid {holder.pid})" in err
        assert "last heartbeat" in err and "s ago" in err
        # --force never takes a live lease
        assert _main("calibrate", cfg, "--out", str(run), "--no-progress", "--force") == 1
        assert "in use by" in _error_line(capsys)
        assert [p.name for p in run.iterdir() if ".tmp-" not in p.name] == [LEASE_FILE]
    finally:
        holder.kill()
        holder.wait()
    # its holder is dead now: stale, but only --force takes it over
    assert _main("calibrate", cfg, "--out", str(run), "--no-progress") == 1
    err = _error_line(capsys)
    assert f"pid {holder.pid}, no longer running" in err and "pass --force" in err
    assert _main("calibrate", cfg, "--out", str(run), "--no-progress", "--force") == 0
    assert (run / "network.npz").exists() and not (run / LEASE_FILE).exists()


def test_second_infer_into_a_held_output_is_refused(small_store_url, tmp_path):
    from random_checkpoint import random_checkpoint
    from differland_dist.inference.pipeline import InferenceOptions, run_inference

    ckpt = random_checkpoint(small_store_url, str(tmp_path / "net.npz"))
    out = tmp_path / "out.zarr"
    opts = InferenceOptions(chunk_pixels=8, pixels_per_task=64, executor="local")
    holder = _hold(out, "infer", file=f"{out}{LEASE_FILE}")
    try:
        with pytest.raises(LeaseHeld, match=rf"in use by infer on host .* \(pid {holder.pid}\)"):
            run_inference(ckpt, str(out), small_store_url, options=opts)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(LeaseHeld, match="pass --force"):
        run_inference(ckpt, str(out), small_store_url, options=opts)
    r = run_inference(ckpt, str(out), small_store_url, options=opts, force=True)
    assert r.complete and not (tmp_path / f"out.zarr{LEASE_FILE}").exists()


@pytest.mark.parametrize("where", ["local", "gs", "s3"])
def test_lease_heartbeat_staleness_takeover_and_loss(where, tmp_path, request):
    if where == "local":
        loc = Location(str(tmp_path / "d"))
    else:
        srv = request.getfixturevalue("gcs_emulator" if where == "gs" else "s3_server")
        loc = Location(f"{srv['url_prefix']}/lease-{os.getpid()}-{time.time_ns()}",
                       srv["storage_options"])
    a = Lease(loc, owner="calibrate", heartbeat_s=0.3, stale_s=30).acquire()
    try:
        first = a.holder()["heartbeat"]
        time.sleep(1.0)
        assert a.holder()["heartbeat"] > first  # the heartbeat thread renews it
        with pytest.raises(LeaseHeld, match="in use by calibrate"):
            Lease(loc, owner="experiment", force=True).acquire()
    finally:
        a.release()
    assert not loc.join(LEASE_FILE).exists()

    # a lease whose heartbeat is older than its stale_s, from another host
    old = {"writer": "differland_dist", "owner": "calibrate", "host": "elsewhere", "pid": 1,
           "token": "x", "started": 0, "heartbeat": time.time() - 7200, "stale_s": 300}
    loc.join(LEASE_FILE).write_json(old)
    with pytest.raises(LeaseHeld, match=r"host elsewhere \(pid 1\), last heartbeat 2.0 h ago.*--force"):
        Lease(loc, owner="calibrate").acquire()
    b = Lease(loc, owner="calibrate", force=True, heartbeat_s=600, stale_s=1200).acquire()
    try:
        assert b.holder()["token"] == b.token
        b.check()
        # someone else takes it over: the holder finds out at its next heartbeat
        loc.join(LEASE_FILE).write_json({**old, "heartbeat": time.time(), "token": "thief"})
        b.renew()
        with pytest.raises(LeaseLost, match="elsewhere"):
            b.check()
    finally:
        b.release()
    assert loc.join(LEASE_FILE).read_json()["token"] == "thief"  # not ours: left alone
    loc.join(LEASE_FILE).remove()


# -- 7. smaller losses -----------------------------------------------------------------------------
class _Killed(BaseException):
    """Stands for SIGKILL of the driver at a chosen point."""


def test_metrics_survive_a_kill_right_after_latest_json_and_are_appended(
        ray_local, small_store_url, tmp_path, monkeypatch):
    """Metrics are written before latest.json commits a checkpoint (and appended, not
    rewritten: the file keeps its inode)."""
    run = tmp_path / "run"
    cfg = _cfg(small_store_url, **{"training.steps": 4, "training.eval_every": 2})
    real_replace = os.replace
    inodes = []

    def replace(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        if str(dst).endswith("latest.json") and json.loads(open(dst).read())["step"] == 2:
            raise _Killed()

    def watch(step, cal):
        if (run / "metrics.jsonl").exists():
            inodes.append(os.stat(run / "metrics.jsonl").st_ino)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        _run(cfg, run, hooks=[watch])
    monkeypatch.setattr(os, "replace", real_replace)
    state, cal = _run(cfg, run, resume=True, hooks=[watch])
    assert state.step == 4
    assert _train_steps(cal.metrics) == [1, 2, 3, 4] and _train_steps(cal.metrics, "dev") == [2, 4]
    assert _file_metrics(run) == json.loads(json.dumps(cal.metrics))
    assert len(inodes) >= 3 and len(set(inodes[-2:])) == 1  # steps 3 and 4 appended in place


def test_resume_falls_back_past_a_corrupt_checkpoint_and_cleans_temp_files(
        ray_local, small_store_url, tmp_path, caplog):
    run = tmp_path / "run"
    cfg = _cfg(small_store_url, **{"training.checkpoint_every": 1})
    _run(cfg, run)
    ck = run / "checkpoints"
    good = (ck / "step_00000002.npz").read_bytes()
    (ck / "step_00000002.npz").write_bytes(good[: len(good) // 2])  # torn by a bad disk
    (run / "network.npz").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "spl')  # a record cut short by a kill
    ours = ["checkpoints/step_00000003.npz.tmp-0a1b2c3d", "metrics.jsonl.tmp-deadbeef",
            "config.yaml.tmp-12345678", "checkpoints/latest.json.tmp-89abcdef"]
    foreign = ["notes.txt.tmp-12345678", "checkpoints/mine.bin.tmp-abcdef12", "keep.tmp"]
    for k in ours + foreign:
        (run / k).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        state, cal = _run(_cfg(small_store_url, **{"training.checkpoint_every": 1,
                                                   "training.steps": 3}), run, resume=True)
    assert state.step == 3
    assert "step_00000002.npz" in caplog.text and "previous checkpoint" in caplog.text
    assert _train_steps(cal.metrics) == [1, 2, 3]
    assert _train_steps(_file_metrics(run)) == [1, 2, 3]
    assert json.loads((ck / "latest.json").read_text())["step"] == 3
    from differland_dist.storage import checkpoint

    assert checkpoint.load(Location(str(ck / "step_00000002.npz")))[1]["step"] == 2  # rewritten whole
    assert not any((run / k).exists() for k in ours)
    assert all((run / k).exists() for k in foreign)

    # a corrupt latest.json: --resume uses the newest readable checkpoint ...
    (ck / "latest.json").write_text('{"step": 3, "pa')
    state, _ = _run(_cfg(small_store_url, **{"training.checkpoint_every": 1,
                                             "training.steps": 3}), run, resume=True)
    assert state.step == 3
    # ... and everything else gives one line naming the file
    (ck / "latest.json").write_text('{"step": 3, "pa')
    (run / "network.npz").unlink()
    with pytest.raises(CheckpointError, match="latest.json: not valid JSON"):
        from differland_dist.runs.trained import load_trained

        load_trained(Location(str(run)))
    with pytest.raises(DifferlandError, match="already holds checkpoints"):
        _run(_cfg(small_store_url), run)


def test_corrupt_latest_json_is_one_line_for_infer(small_store_url, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.json").write_text("{")
    assert _main("infer", "--checkpoint", str(run), "--store", small_store_url, "--out",
                 str(tmp_path / "o.zarr"), "--executor", "local") == 1
    assert "latest.json: not valid JSON" in _error_line(capsys)


def test_run_directory_inside_the_store_is_refused(small_store_url, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(small_store_url, store)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    for out in (store, store / "run"):
        with pytest.raises(DifferlandError, match="the store .* itself"):
            _run(_cfg(str(store)), out)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_unwritable_run_directory_is_one_line(small_store_url, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    cfg = _cli_config(tmp_path, small_store_url)
    assert _main("calibrate", cfg, "--out", str(tmp_path / "afile" / "run"), "--no-progress") == 1
    err = _error_line(capsys)
    assert "afile/run: cannot write there" in err


def test_config_that_does_not_fit_the_store_fails_before_ray(small_store_url, tmp_path):
    with pytest.raises(ConfigError, match="loss.warm_up"):
        _run(_cfg(small_store_url, **{"loss.warm_up": 10000}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_nonfinite_steps_say_which_values(small_store_url, tmp_path, monkeypatch, caplog):
    import jax
    from jax.flatten_util import ravel_pytree

    from differland_dist.distributed import trainer as tr
    from differland_dist.distributed.optim import make_optimizer
    from differland_dist.network.mlp import init_network

    assert tr.describe_nonfinite(float("inf"), np.zeros(3)) == "loss is +inf"
    assert tr.describe_nonfinite(1.0, np.array([np.nan, np.inf, -np.inf, np.inf])) == \
        "gradient has 1 NaN, 2 +inf, 1 -inf of 4 values"
    cfg = _cfg(small_store_url, **{"training.max_nonfinite": 1})
    cal = tr.Calibration(cfg, str(tmp_path / "r"))
    net = init_network(jax.random.PRNGKey(0), 20, cfg.network)
    flat, cal.unravel = ravel_pytree(net)
    tx = make_optimizer(cfg.optimizer, 2)
    losses = iter([float("inf"), 1.0])

    def fake_gather(patches, flat, with_grad, test):
        loss = next(losses)
        g = np.zeros(flat.shape, np.float32)
        if loss == 1.0:
            g[:2] = np.nan
        return [({"loss": loss}, g) for _ in patches], 0.0, 0.0, 10

    monkeypatch.setattr(cal, "_gather", fake_gather)
    state = tr.TrainState(np.asarray(flat), tx.init(net), 0)
    with caplog.at_level(logging.WARNING):
        state = cal._train_step(state, None, None)
    assert cal.metrics[-1]["nonfinite"] == "loss is +inf" and "loss is +inf" in caplog.text
    assert "NaN" not in caplog.text
    with pytest.raises(tr.TrainingDiverged, match=r"gradient has \d+ NaN of"):
        cal._train_step(state, None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_address_auto_without_a_cluster_fails_fast(small_store_url, tmp_path):
    cfg = _cli_config(tmp_path, small_store_url, **{"ray.address": "auto"})
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{_free_port()}"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "differland_dist.cli.main", "calibrate", cfg,
                        "--out", str(tmp_path / "run"), "--no-progress"],
                       capture_output=True, text=True, timeout=300, env=env)
    elapsed = time.time() - t0
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: ray.address=auto: no Ray cluster "
                                                        "answers at ")
    assert elapsed < 60, elapsed
    assert not (tmp_path / "run").exists()


def test_run_killed_before_its_final_network_writes_it_on_resume(ray_local, small_store_url, tmp_path):
    """A writer killed after the last checkpoint's latest.json but before network.npz: the
    resumed run writes network.npz from that checkpoint (no step recomputed) and keeps its
    metrics."""
    from differland_dist.storage import checkpoint

    run = tmp_path / "run"
    _run(_cfg(small_store_url), run)
    want = checkpoint.load(Location(str(run / "network.npz")))[0]
    metrics = (run / "metrics.jsonl").read_text()
    (run / "network.npz").unlink()
    state, cal = _run(_cfg(small_store_url), run, resume=True)
    assert state.step == 2 and cal.pool is None             # nothing recomputed, no workers
    got = checkpoint.load(Location(str(run / "network.npz")))[0]
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert (run / "metrics.jsonl").read_text() == metrics
