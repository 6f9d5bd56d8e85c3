"""The paper's protocol as configs (configs/experiment_paper.yaml on paper_global.yaml): the
resolved member configs hold the reference's settings, and the options that express them
(fixed patch order, epochs, re-initialisation on NaN, train+dev, selection by training loss)
do what they say.

The reference values are literals copied from the argument defaults and code of
experiments/calibration.py in JianingFang/DifferLand_Global (commit 02f4668), with the line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from differland_dist.config import load_config, resolve_epochs
from differland_dist.data import splits
from differland_dist.distributed.policy import NonFiniteDecision, on_nonfinite, step_patches
from differland_dist.errors import ConfigError
from differland_dist.experiment.grid import load_grid, member_config
from differland_dist.experiment.selection import last_epoch_train_loss

from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]

# experiments/calibration.py, argument defaults and constants (commit 02f4668)
REF_NEURONS = 32            # line 48: parser.add_argument("-n", "--neurons", default=32)
REF_HIDDEN_LAYERS = 3       # line 49: "-x", "--hidden_layers", default=3
REF_ITERATIONS = 199        # line 50: "-i", "--iterations", default=199 (epochs: line 405)
REF_LEARNING_RATE = 5e-5    # line 51: "-l", "--learning_rate", default=5e-5
REF_RUN_RANGE = (1, 100)    # lines 43, 102: "-r" must be in 1..100
REF_EVAL_EVERY_EPOCHS = 10  # line 418: dev loss and a checkpoint when j % 10 == 0
REF_OPTIMIZER = "adam"      # line 384: optax.adam(learning_rate=LEARNING_RATE), no schedule
REF_UPDATES_PER_BATCH = 1   # lines 408-409: one update per batch (= one index value = a patch)
# the paper's text: runs 1..20 per predictor set, the 10 best on training loss kept
PAPER_RUNS = tuple(range(1, 21))
PAPER_KEEP = 10


def test_paper_grid_resolves_to_the_reference_settings():
    grid = load_grid(ROOT / "configs" / "experiment_paper.yaml", ["base.data.url=x.zarr"])
    assert len(grid.predictor_sets) == 7 and grid.keep_best == PAPER_KEEP
    assert grid.keep_by == "train_loss"
    for s in grid.predictor_sets:
        ms = [m for m in grid.members if m.set == s]
        cfgs = [member_config(grid, m) for m in ms]
        assert tuple(c.data.run for c in cfgs) == PAPER_RUNS
        assert all(REF_RUN_RANGE[0] <= c.data.run <= REF_RUN_RANGE[1] for c in cfgs)
        assert len({c.training.seed for c in cfgs}) == len(cfgs)   # a network seed each
        for c in cfgs:
            assert c.data.predictors == s.predictors and c.data.split_seed is None
            assert c.network.width == REF_NEURONS and c.network.hidden_layers == REF_HIDDEN_LAYERS
            assert c.network.activation == "leaky_relu"
            assert c.optimizer.name == REF_OPTIMIZER and c.optimizer.schedule == "constant"
            assert c.optimizer.learning_rate == REF_LEARNING_RATE
            assert c.optimizer.clip_norm is None and c.optimizer.weight_decay == 0
            assert c.training.epochs == REF_ITERATIONS and c.training.steps is None
            assert c.training.patches_per_step == REF_UPDATES_PER_BATCH
            assert c.training.patch_order == "fixed"
            assert c.training.on_nonfinite == "reinitialise"
            assert c.training.eval_every == c.training.checkpoint_every == REF_EVAL_EVERY_EPOCHS
            # resolved for a run of 970 training patches: one update per patch per epoch
            r = resolve_epochs(c, 970).training
            assert r.steps == REF_ITERATIONS * 970 and r.eval_every == REF_EVAL_EVERY_EPOCHS * 970
            assert c.loss.parity and c.loss.warm_up == 0 and not c.model.closed_budget
            assert c.data.train_on == "train"
            assert c.ray.gpus_per_worker == 1


def test_fast_variant_lists_its_differences_and_is_not_the_paper():
    text = (ROOT / "configs" / "experiment_paper_fast.yaml").read_text()
    head = text.split("name:")[0]
    for what in ("optimiser", "schedule", "model and loss", "members", "NaN"):
        assert what in head
    fast = load_grid(ROOT / "configs" / "experiment_paper_fast.yaml")
    c = member_config(fast, fast.members[0])
    assert c.optimizer.learning_rate != REF_LEARNING_RATE and fast.keep_by == "dev_loss"


def test_a_schedule_in_epochs_resolves_per_run():
    cfg = load_config(None, ["training.epochs=3", "training.steps=null", "training.patches_per_step=1",
                             "training.eval_every=2", "training.checkpoint_every=1"])
    r = resolve_epochs(cfg, 12).training
    assert (r.steps, r.eval_every, r.checkpoint_every, r.epochs) == (36, 24, 12, None)
    assert resolve_epochs(cfg, 5).training.steps == 15       # another run, its own patches
    # several patches a step: whole steps of an epoch, as step_patches deals them
    cfg = load_config(None, ["training.epochs=2", "training.steps=null", "training.patches_per_step=4"])
    assert resolve_epochs(cfg, 13).training.steps == 6
    plain = load_config(None, ["training.steps=7"])
    assert resolve_epochs(plain, 13) is plain
    with pytest.raises(ConfigError, match="both"):
        load_config(None, ["training.epochs=3", "training.steps=30"])
    with pytest.raises(ConfigError, match="needs training.epochs"):
        load_config(None, ["training.steps=null"])
    with pytest.raises(ConfigError, match="training.epochs"):
        load_config(None, ["training.epochs=0", "training.steps=null"])


def test_fixed_order_repeats_the_split_order_every_epoch():
    train = np.array([4, 9, 2, 7])
    got = [step_patches(train, s, 1, seed=5, fixed=True)[0] for s in range(8)]
    assert got == [4, 9, 2, 7, 4, 9, 2, 7]
    shuffled = [step_patches(train, s, 1, seed=5)[0] for s in range(8)]
    assert sorted(shuffled[:4]) == [2, 4, 7, 9] and shuffled[:4] != shuffled[4:]
    with pytest.raises(ConfigError, match="training.patch_order"):
        load_config(None, ["training.patch_order=random"])


def test_fixed_order_of_a_published_run_is_its_index_order():
    # 4 patches of 2 pixels; run 2 numbers them 7, 3, 9, 5 (run 1: in patch order)
    slices = {p: slice(2 * p, 2 * p + 2) for p in range(4)}
    table = np.array([[0, 7], [0, 7], [1, 3], [1, 3], [2, 9], [2, 9], [3, 5], [3, 5]], float)
    assert splits.published_order(slices, table, 2, np.array([0, 1, 2, 3])).tolist() == [1, 3, 0, 2]
    assert splits.published_order(slices, table, 1, np.array([3, 1, 0])).tolist() == [0, 1, 3]


def test_reinitialise_policy_and_train_on():
    assert on_nonfinite("reinitialise", 0, 3, 0.5, 1.0, 0.5) == NonFiniteDecision("reinitialise", 1, 1.0)
    assert on_nonfinite("reinitialise", 3, 3, 1.0, 1.0, 0.5).action == "stop"
    split = splits.PatchSplit(np.array([1, 5]), np.array([3]), np.array([0]))
    tr, dev = splits.for_training(split, "train+dev")
    assert tr.tolist() == [1, 3, 5] and dev.size == 0
    tr, dev = splits.for_training(split, "train")
    assert tr.tolist() == [1, 5] and dev.tolist() == [3]
    with pytest.raises(ConfigError, match="data.train_on"):
        load_config(None, ["data.train_on=all"])
    # a grid without dev cannot select by dev loss
    with pytest.raises(ConfigError, match="keep_by"):
        load_grid(ROOT / "configs" / "experiment_paper.yaml",
                  ["base.data.url=x.zarr", "base.data.train_on=train+dev", "keep_by=dev_loss"])


def test_last_epoch_train_loss_is_the_published_epoch_sum():
    recs = [{"step": s + 1, "split": "train", "epoch": s // 3 + 1, "loss": float(s)} for s in range(7)]
    recs.insert(3, {"step": 3, "split": "dev", "loss": 99.0})
    text = "\n".join(json.dumps(r) for r in recs)
    # epochs 1 (0+1+2) and 2 (3+4+5) complete, epoch 3 partial: the sum of epoch 2
    assert last_epoch_train_loss(text) == 12.0
    # after a fresh start (step 1 again) only the new start counts
    again = [{"step": s + 1, "split": "train", "epoch": s // 3 + 1, "loss": 1.0} for s in range(3)]
    assert last_epoch_train_loss(text + "\n" + "\n".join(json.dumps(r) for r in again)) == 3.0
    assert last_epoch_train_loss(json.dumps({"step": 1, "split": "train", "loss": 1.0})) is None


def test_trainer_reinitialises_and_trains_on_train_and_dev(small_store_url, tmp_path, monkeypatch):
    """A NaN step gives a fresh network (not the first one) from step 0; data.train_on:
    train+dev trains on both and evaluates nothing; epoch numbers go into the records."""
    import jax
    from jax.flatten_util import ravel_pytree

    from differland_dist.distributed import trainer as tr
    from differland_dist.distributed.optim import make_optimizer
    from differland_dist.network.mlp import init_network

    cfg = load_config(None, [f"data.url={small_store_url}", "training.steps=4",
                             "training.patches_per_step=2", "training.on_nonfinite=reinitialise",
                             "training.patch_order=fixed", "data.train_on=train+dev", "ray.workers=1"])
    cal = tr.Calibration(cfg, str(tmp_path / "run"))
    written = splits.of_data(cal.store, cfg.data)
    assert sorted(cal.train_patches.tolist()) == sorted(written.train.tolist() + written.dev.tolist())
    assert len(cal.dev_patches) == 0 and len(written.dev) > 0
    net = init_network(jax.random.PRNGKey(0), 20, cfg.network)
    flat, cal.unravel = ravel_pytree(net)
    tx = make_optimizer(cfg.optimizer, 4)
    n = {"calls": 0}

    def fake_gather(patches, flat, with_grad, test):
        n["calls"] += 1
        bad = n["calls"] == 2
        g = np.full(flat.shape, np.nan if bad else 0.1, np.float32)
        return [({"loss": float("nan") if bad else 1.0}, g) for _ in patches], 0.0, 0.0, 10

    monkeypatch.setattr(cal, "_gather", fake_gather)

    @jax.jit
    def apply(f, g, o, s):
        import optax
        u, o = tx.update(cal.unravel(g), o, cal.unravel(f))
        return ravel_pytree(optax.apply_updates(cal.unravel(f), u))[0], o

    s0 = tr.TrainState(np.asarray(flat), tx.init(net), 0)
    cal.checkpoints.start(s0)
    s1 = cal._train_step(s0, apply, None)
    s2 = cal._train_step(s1, apply, None)
    assert s2.step == 0 and s2.reinitialised == 1 and s2.nonfinite_in_a_row == 1
    assert not np.array_equal(s2.flat, s0.flat) and not np.array_equal(s2.flat, s1.flat)
    assert np.all(np.isfinite(s2.flat))
    s3 = cal._train_step(s2, apply, None)
    assert s3.step == 1 and s3.nonfinite_in_a_row == 0
    assert [m["epoch"] for m in cal.metrics] == [1, 1, 1]
    assert cal._evaluate(s3) is None   # no dev patches: no dev loss


def test_calibrate_dry_run_prints_the_epochs_as_steps_of_the_split(small_store_url, tmp_path, capsys):
    from differland_dist.cli.main import main
    from differland_dist.data.store import open_store

    n_train = len(splits.of_data(open_store(small_store_url), load_config(None).data).train)
    assert main(["calibrate", str(ROOT / "configs" / "demo.yaml"), "--dry-run", "--out", str(tmp_path / "r"),
                 "--set", f"data.url={small_store_url}", "--set", "training.steps=null",
                 "--set", "training.epochs=2", "--set", "training.patches_per_step=1"]) == 0
    assert f"plan: 2 epochs ({2 * n_train} steps)" in capsys.readouterr().out
