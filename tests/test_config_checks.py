"""Every config value is type- and range-checked when the config is built (the full dotted key
in the message), YAML numbers such as ``1e-3`` are numbers, repeated keys are refused, values
that cannot fit the data fail before Ray starts, bad ``--*storage-options`` JSON is a one-line
error, and ``import-checkpoint`` refuses layers that do not fit together."""

import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from differland_dist.cli.main import main
from differland_dist.config import (ExperimentConfig, RayConfig, TrainingConfig,
                                    check_against_store, load_config)
from differland_dist.errors import CheckpointError, ConfigError
from differland_dist.loss.terms import TERMS, LossConfig
from differland_dist.model.config import ModelConfig
from differland_dist.network.mlp import NetworkConfig
from differland_dist.network.published import AllowListUnpickler, load_published_network

# (override, the key the message must start with) for every section
BAD = [
    # the values of the issue
    ("training.seed=-1", "training.seed"),
    ("ray.cpus_per_worker=-1", "ray.cpus_per_worker"),
    ("ray.cpus_per_worker=0", "ray.cpus_per_worker"),
    ("optimizer.learning_rate=.inf", "optimizer.learning_rate"),
    ("optimizer.warmup_steps=-3", "optimizer.warmup_steps"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay"),
    # data
    ("data.url=3", "data.url"),
    ("data.storage_options=[1, 2]", "data.storage_options"),
    ("data.predictors=[]", "data.predictors"),
    ("data.predictors=[PFT, PFT]", "data.predictors"),
    ("data.predictors=PFT,FOO", "data.predictors"),
    ("data.products.sif=3", "data.products.sif"),
    ("data.products.sif=''", "data.products.sif"),
    ("data.cache=gs://bucket/cache", "data.cache"),
    ("data.cache=''", "data.cache"),
    # network, model
    ("network.hidden_layers=0", "network.hidden_layers"),
    ("network.width=2.5", "network.width"),
    ("network.activation=sigmoidish", "network.activation"),
    ("network.head_init_scale=1.5", "network.head_init_scale"),
    ("network.head_init_scale=-0.1", "network.head_init_scale"),
    ("model.closed_budget=1", "model.closed_budget"),
    ("model.checkpoint_every=-2", "model.checkpoint_every"),
    ("model.unroll=0", "model.unroll"),
    ("model.pixel_block=-3", "model.pixel_block"),
    # loss
    ("loss.warm_up=-1", "loss.warm_up"),
    ("loss.warm_up=1.5", "loss.warm_up"),
    ("loss.steps_per_year=0", "loss.steps_per_year"),
    ("loss.epsilon=0", "loss.epsilon"),
    ("loss.epsilon=.nan", "loss.epsilon"),
    ("loss.parity=2", "loss.parity"),
    ("loss.weights.lai=-1", "loss.weights.lai"),
    ("loss.weights.lai=.inf", "loss.weights.lai"),
    ("loss.weights.lai=abc", "loss.weights.lai"),
    ("loss.enabled.lai=1", "loss.enabled.lai"),
    ("loss.enabled=[lai]", "loss.enabled"),
    # optimizer
    ("optimizer.name=rmsprop", "optimizer.name"),
    ("optimizer.learning_rate=0", "optimizer.learning_rate"),
    ("optimizer.learning_rate=-1e-3", "optimizer.learning_rate"),
    ("optimizer.schedule=linear", "optimizer.schedule"),
    ("optimizer.clip_norm=0", "optimizer.clip_norm"),
    ("optimizer.clip_norm=.inf", "optimizer.clip_norm"),
    ("optimizer.weight_decay=.nan", "optimizer.weight_decay"),
    # training
    ("training.steps=0", "training.steps"),
    ("training.steps=true", "training.steps"),
    ("training.patches_per_step=0", "training.patches_per_step"),
    ("training.eval_every=-1", "training.eval_every"),
    ("training.checkpoint_every=-1", "training.checkpoint_every"),
    ("training.seed=4294967296", "training.seed"),   # JAX keys would repeat seed 0
    ("training.seed=1.5", "training.seed"),
    ("training.on_nonfinite=ignore", "training.on_nonfinite"),
    ("training.max_nonfinite=0", "training.max_nonfinite"),
    ("training.lr_reduction=1", "training.lr_reduction"),
    ("training.lr_reduction=0", "training.lr_reduction"),
    ("training.patches_per_call=0", "training.patches_per_call"),
    # ray
    ("ray.address=somewhere", "ray.address"),
    ("ray.address=host:99999", "ray.address"),
    ("ray.workers=0", "ray.workers"),
    ("ray.cpus_per_worker=.inf", "ray.cpus_per_worker"),
    ("ray.cpus_per_worker=1e-5", "ray.cpus_per_worker"),   # below Ray's precision
    ("ray.gpus_per_worker=-1", "ray.gpus_per_worker"),
    ("ray.tpus_per_worker=3", "ray.tpus_per_worker"),
    ("ray.jax_platforms=cpu, cuda", "ray.jax_platforms"),
    ("ray.jax_platforms=quantum", "ray.jax_platforms"),
    ("ray.jax_threads_per_worker=-1", "ray.jax_threads_per_worker"),
    ("ray.runtime_env=[1]", "ray.runtime_env"),
    ("ray.runtime_env={env_vars: {OMP_NUM_THREADS: 1}}", "ray.runtime_env.env_vars.OMP_NUM_THREADS"),
    ("ray.max_worker_restarts=-1", "ray.max_worker_restarts"),
    ("name=[1]", "name"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[b for b, _ in BAD])
def test_bad_value_names_its_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("configs/demo.yaml", [override])
    msg = str(e.value)
    assert f": {key}: " in msg, msg
    assert "\n" not in msg


def test_the_issue_messages_are_exact():
    with pytest.raises(ConfigError, match=r"training\.seed: must be in \[0, 4294967295\], got -1$"):
        load_config(None, ["training.seed=-1"])
    with pytest.raises(ConfigError, match=r"ray\.cpus_per_worker: must be > 0, got 0$"):
        load_config(None, ["ray.cpus_per_worker=0"])
    with pytest.raises(ConfigError, match=r"optimizer\.learning_rate: must be a finite number, got inf$"):
        load_config(None, ["optimizer.learning_rate=.inf"])


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match="training.seed"):
        TrainingConfig(seed=-1)
    with pytest.raises(ConfigError, match="ray.cpus_per_worker"):
        RayConfig(cpus_per_worker=0)
    with pytest.raises(ConfigError, match="network.width"):
        NetworkConfig(width=0)
    with pytest.raises(ConfigError, match="model.unroll"):
        ModelConfig(unroll=0)
    with pytest.raises(ConfigError, match="loss.enabled: every term is off"):
        LossConfig(enabled={t: False for t in TERMS})
    with pytest.raises(ConfigError, match="name"):
        ExperimentConfig(name=None)


def test_valid_edge_values_are_accepted_and_canonical():
    c = load_config("configs/demo.yaml", [
        "ray.cpus_per_worker=0.5", "ray.gpus_per_worker=0.25", "ray.tpus_per_worker=4",
        "ray.address=ray://head:10001", "ray.jax_platforms=cuda,cpu", "training.seed=4294967295",
        "training.eval_every=0", "model.checkpoint_every=-1", "model.pixel_block=-1",
        "optimizer.clip_norm=null", "data.cache=memory", "ray.runtime_env={env_vars: {A: '1'}}"])
    assert (c.ray.cpus_per_worker, c.ray.gpus_per_worker, c.ray.tpus_per_worker) == (0.5, 0.25, 4.0)
    assert c.training.seed == 2**32 - 1 and c.optimizer.clip_norm is None
    assert load_config(None, ["ray.address=10.0.0.2:6379"]).ray.address == "10.0.0.2:6379"
    # ints given for reals become floats, integral floats for ints become ints
    c = load_config(None, ["ray.cpus_per_worker=2", "training.steps=1e2"])
    assert isinstance(c.ray.cpus_per_worker, float) and c.training.steps == 100
    assert isinstance(c.training.steps, int)


def test_exponent_numbers_are_numbers_in_files_and_set(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optimizer:\n  learning_rate: 1e-3\n  weight_decay: 5E-4\n  clip_norm: 2.5e+3\n"
                 "training:\n  steps: 1e2\nloss:\n  epsilon: 1.0e-6\n  weights:\n    lai: 2e1\n")
    c = load_config(p)
    assert c.optimizer.learning_rate == 1e-3 and c.optimizer.weight_decay == 5e-4
    assert c.optimizer.clip_norm == 2500.0 and c.training.steps == 100
    assert c.loss.epsilon == 1e-6 and c.loss.weights["lai"] == 20.0
    c = load_config(p, ["optimizer.learning_rate=3e-4", "loss.weights.sif=1E2"])
    assert c.optimizer.learning_rate == 3e-4 and c.loss.weights["sif"] == 100.0
    # strings stay strings, and what is saved loads back the same
    c = load_config(None, ["data.url=runs/1e3", "name=1e3x"])
    assert (c.data.url, c.name) == ("runs/1e3", "1e3x")
    p.write_text(load_config(p).to_yaml())
    assert load_config(p).optimizer.learning_rate == 1e-3


def test_set_predictors_single_name_is_a_list():
    assert load_config(None, ["data.predictors=PFT"]).data.predictors == ("PFT",)
    assert load_config(None, ["data.predictors=PFT,CLIM"]).data.predictors == ("PFT", "CLIM")
    assert load_config(None, ["data.predictors=[PFT, SOIL]"]).data.predictors == ("PFT", "SOIL")


def test_duplicate_keys_are_refused(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("training:\n  steps: 5\n  seed: 1\n  steps: 7\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: duplicate key 'training\.steps' \(lines 2 and 4\)"):
        load_config(p)
    p.write_text("loss:\n  warm_up: 12\nloss:\n  warm_up: 0\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'loss' \(lines 1 and 3\)"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"duplicate key 'lai'"):
        load_config(None, ["loss.weights={lai: 1, lai: 2}"])
    # a merge key with an override is not a duplicate
    p.write_text("training:\n  <<: {steps: 3, seed: 2}\n  steps: 4\n")
    c = load_config(p)
    assert (c.training.steps, c.training.seed) == (4, 2)


def test_empty_section_takes_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\ntraining:\n")
    assert load_config(p, ["loss.warm_up=3"]).loss.warm_up == 3


def test_check_against_store():
    c = load_config("configs/demo.yaml")                     # warm_up 12
    check_against_store(c, 60, 12)
    check_against_store(c, 24, 12)
    with pytest.raises(ConfigError, match=r"^loss\.warm_up: must be less than the store's 12 time steps, got 12$"):
        check_against_store(c, 12, 12)
    # the annual terms need one whole year after warm-up
    with pytest.raises(ConfigError, match=r"loss\.warm_up: 12 leaves 6 .*'biomass', 'nbe_iav'"):
        check_against_store(c, 18, 12)
    c0 = load_config(None, ["loss.enabled.biomass=false", "loss.enabled.nbe_iav=false"])
    check_against_store(c0, 18, 12)
    # ... also when the product that feeds them is off: then they are off and not checked
    cp = load_config(None, ["loss.warm_up=12", "data.products.biomass=null", "data.products.nbe=null"])
    check_against_store(cp, 18, 12)
    # the EDC term compares January pools: a series shorter than a year has none
    cs = load_config(None, ["loss.enabled.biomass=false", "loss.enabled.nbe_iav=false"])
    with pytest.raises(ConfigError, match=r"loss\.enabled\.edc: .*\(12 steps\), the store has 6"):
        check_against_store(cs, 6, 12)
    check_against_store(load_config(None, ["loss.enabled.biomass=false", "loss.enabled.nbe_iav=false",
                                           "loss.enabled.edc=false"]), 6, 12)
    # daily data: a year is the store's steps per year, in parity mode always 12
    with pytest.raises(ConfigError, match=r"\(365 steps\)"):
        check_against_store(c, 300, 365)
    check_against_store(load_config("configs/demo.yaml", ["loss.parity=true"]), 300, 365)


def test_check_against_store_matches_what_the_loss_does():
    """The boundary of the annual check is where the loss's whole-year count becomes 0."""
    from differland_dist.vocabulary.aggregation import whole_years

    for n_time, wu in ((24, 12), (23, 12), (13, 0), (11, 0)):
        years = whole_years(np.zeros((1, n_time - wu)), 12).shape[1]
        cfg = load_config(None, [f"loss.warm_up={wu}", "loss.enabled.edc=false"])
        if years >= 1:
            check_against_store(cfg, n_time, 12)
        else:
            with pytest.raises(ConfigError, match="loss.warm_up"):
                check_against_store(cfg, n_time, 12)


def test_calibrate_bad_value_fails_before_ray(tmp_path):
    out = tmp_path / "run"
    code = ("import sys; from differland_dist.cli.main import main; "
            f"rc = main(['calibrate', 'configs/demo.yaml', '--out', {str(out)!r}, "
            "'--set', 'training.seed=-1']); "
            "print('ray imported' if 'ray' in sys.modules else 'no ray'); sys.exit(rc)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["error: configs/demo.yaml: training.seed: must be in [0, 4294967295], got -1"], r.stderr
    assert r.stdout.strip() == "no ray"          # Ray was never imported, let alone started
    assert not out.exists()
    assert elapsed < 120, elapsed


# -- --storage-options JSON --------------------------------------------------------------------

STORAGE_OPTION_COMMANDS = [
    ["calibrate", "configs/demo.yaml", "--out", "{tmp}/o", "--out-storage-options"],
    ["import-checkpoint", "{tmp}/x.pickle", "--out", "{tmp}/x.npz", "--storage-options"],
    ["infer", "--checkpoint", "{tmp}/c.npz", "--out", "{tmp}/o.zarr", "--storage-options"],
    ["infer", "--checkpoint", "{tmp}/c.npz", "--out", "{tmp}/o.zarr", "--out-storage-options"],
    ["evaluate", "{tmp}/run", "--storage-options"],
    ["evaluate", "{tmp}/run", "--out-storage-options"],
    ["validate", "{tmp}/s.zarr", "--storage-options"],
    ["synth", "--out", "{tmp}/s.zarr", "--storage-options"],
    ["import-sites", "--sites", "{tmp}", "--out", "{tmp}/s.zarr", "--storage-options"],
    ["import-netcdf", "--out", "{tmp}/s.zarr", "--storage-options"],
]


@pytest.mark.parametrize("cmd", STORAGE_OPTION_COMMANDS, ids=lambda c: f"{c[0]} {c[-1]}")
@pytest.mark.parametrize("value,expected", [('{"key": "hunter2"', "not valid JSON"),
                                            ('{bad', "not valid JSON"),
                                            ('["hunter2"]', "expected a JSON object, got list")])
def test_bad_storage_options_json_is_a_one_line_error(cmd, value, expected, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in cmd] + [value]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {cmd[-1]}: {expected}"), err
    assert "hunter2" not in err                                  # options may hold secrets
    assert list(tmp_path.iterdir()) == []                        # nothing was started or written


# -- import-checkpoint ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published(shared_dir):
    src = shared_dir / "data/published_network/dalec993_PFT+CLIM+SOIL+AGE_run_1.pickle"
    return src, AllowListUnpickler(open(src, "rb")).load()


def _layer(n_in, n_out, n_bias=None):
    return {"weights": np.ones((n_in, n_out), np.float32), "biases": np.ones(n_bias or n_out, np.float32)}


def _variant(obj, part, i, layer):
    parts = [list(p) for p in obj]
    parts[part][i] = layer
    return pickle.dumps(tuple(parts))


@pytest.mark.parametrize("part,i,layer,match", [
    (0, 1, _layer(16, 32), r"embedding layer 1: weights \(16, 32\) take 16 inputs, but embedding "
                           r"layer 0 \(weights \(20, 32\)\) gives 32"),
    (0, 2, _layer(32, 32, 31), r"embedding layer 2: biases of shape \(31,\) do not fit weights \(32, 32\)"),
    (0, 2, _layer(32, 16), r"embedding layers have widths \[32, 32, 16\]"),
    (0, 0, {"weights": np.ones(20, np.float32), "biases": np.ones(32, np.float32)},
     r"embedding layer 0: weights must be a non-empty \(n_in, n_out\) matrix, got shape \(20,\)"),
    (1, 0, _layer(16, 31), r"process head: weights \(16, 31\) do not fit the embedding of width 32 "
                           r"\(expected \(32, 31\)\)"),
    (2, 0, _layer(33, 7), r"pool head: weights \(33, 7\) do not fit .*\(expected \(32, 7\)\)"),
    (3, 0, _layer(32, 2), r"phenology head: weights \(32, 2\) do not fit .*\(expected \(33, 2\)\)"),
    (3, 0, _layer(33, 3), r"phenology head: weights \(33, 3\) do not fit .*\(expected \(33, 2\)\)"),
    (1, 0, {"weights": np.full((32, 31), np.nan, np.float32), "biases": np.ones(31, np.float32)},
     r"process head: weights or biases hold non-finite values"),
    (0, 0, {"weights": np.array(["a"]), "biases": np.ones(32, np.float32)},
     r"embedding layer 0: weights/biases are not numeric"),
])
def test_layers_that_do_not_fit_are_refused(published, part, i, layer, match):
    _, obj = published
    with pytest.raises(CheckpointError, match=match):
        load_published_network(_variant(obj, part, i, layer), source="v.pickle")


def test_import_checkpoint_cli_refuses_bad_shapes_and_predictor_count(published, tmp_path, capsys):
    src, obj = published
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(_variant(obj, 0, 1, _layer(16, 32)))
    out = tmp_path / "net.npz"
    assert main(["import-checkpoint", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "embedding layer 1" in err and "(16, 32)" in err and "\n" not in err
    # the published network takes the 20 predictors of PFT, CLIM, SOIL and AGE
    assert main(["import-checkpoint", str(src), "--out", str(out), "--predictors", "PFT,CLIM"]) == 1
    err = capsys.readouterr().err.strip()
    assert "embedding layer 0 takes 20 predictors, but --predictors PFT,CLIM gives 13" in err
    assert main(["import-checkpoint", str(src), "--out", str(out), "--predictors", "PFT,FOO"]) == 1
    assert "--predictors: unknown predictor set(s) ['FOO']" in capsys.readouterr().err
    assert main(["import-checkpoint", str(tmp_path / "none.pickle"), "--out", str(out)]) == 1
    assert "none.pickle: not found" in capsys.readouterr().err
    assert not out.exists()
    assert main(["import-checkpoint", str(src), "--out", str(out)]) == 0
    assert out.exists()
