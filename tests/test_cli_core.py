"""Every subcommand has --help; verify and bench behave as documented; the config loader."""

import json
import subprocess
import sys

import numpy as np
import pytest

from differland_dist.cli.main import _discover, main
from differland_dist.config import from_dict, load_config
from differland_dist.errors import ConfigError


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "differland_dist.cli.main", *args],
                          capture_output=True, text=True, timeout=600)


def test_every_subcommand_has_help(capsys):
    names = [m.NAME for m in _discover()]
    assert {"calibrate", "demo", "infer", "evaluate", "synth", "validate", "verify", "bench",
            "import-sites", "import-netcdf", "import-checkpoint"} <= set(names)
    for n in names:
        with pytest.raises(SystemExit) as e:
            main([n, "--help"])
        assert e.value.code == 0
        assert "usage: differland " + n in capsys.readouterr().out


def test_verify_passes_on_embedded_and_fails_on_a_corrupted_golden(golden_monthly, tmp_path):
    r = _cli("verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dalec993_monthly.npz" in r.stdout and "all within tolerance" in r.stdout
    bad = dict(golden_monthly)
    bad["outputs"] = bad["outputs"].copy()
    gpp = bad["outputs"][..., 1]
    idx = np.unravel_index(np.argmax(gpp), gpp.shape)
    bad["outputs"][idx + (1,)] *= 1.01  # the largest GPP value off by 1 % (100x the rtol)
    np.savez(tmp_path / "bad.npz", **bad)
    r = _cli("verify", "--golden", str(tmp_path / "bad.npz"))
    assert r.returncode == 1 and "FAIL" in r.stdout and "gpp" in r.stdout


def test_bench_json_keys():
    r = _cli("bench", "--pixels", "64", "--months", "24", "--repeats", "1", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["forward_pixel_months_per_s"] > 0 and d["grad_pixel_months_per_s"] > 0
    assert d["device"].startswith("cpu")


def test_config_roundtrip_overrides_and_errors(tmp_path):
    c = load_config("configs/demo.yaml", ["training.steps=7", "optimizer.learning_rate=0.01",
                                          "data.products.vod=vod", "loss.weights.lai=3"])
    assert (c.training.steps, c.optimizer.learning_rate, c.data.products["vod"]) == (7, 0.01, "vod")
    assert c.loss.weights["lai"] == 3.0 and c.loss.weights["sif"] == 400.0
    assert from_dict(c.to_dict()) == c
    for bad, key in ((["training.stepz=3"], "stepz"), (["training.steps=abc"], "training.steps"),
                     (["data.predictors=[FOO]"], "data.predictors"), (["ray.workers=0"], "ray.workers"),
                     (["optimizer.name=rmsprop"], "optimizer.name"), (["zzz.a=1"], "zzz")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, bad)
    p = tmp_path / "c.yaml"
    p.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    # a stream whose product is off switches its terms off
    c = load_config(None, ["data.products.nbe=null"])
    active = c.loss_for_store(12).active
    assert "nbe" not in active and "nbe_iav" not in active and "sif" in active


def test_shipped_configs_load():
    for f in ("configs/demo.yaml", "configs/fluxnet_sites.yaml", "configs/global_gpu.yaml",
              "configs/global_tpu.yaml"):
        load_config(f)
