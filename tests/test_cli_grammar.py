"""One CLI grammar (docs/cli.md): --version, one list syntax, --executor, --progress/--no-progress,
--json and --address on the commands that need them, and the config arguments named apart."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

import numpy as np
import pytest

from differland_dist.common import progress
from differland_dist.cli import flags
from differland_dist.cli.main import build_parser, main
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

RAY_COMMANDS = {"analyze", "calibrate", "cv-sites", "evaluate", "experiment", "infer"}
# every command prints a result; each can print it as JSON
ALL_COMMANDS = {"analyze", "bench", "calibrate", "cv-sites", "demo", "evaluate", "experiment",
                "import-checkpoint", "import-netcdf", "import-sites", "infer", "synth",
                "validate", "verify"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in p._actions for o in a.option_strings}


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_version_names_the_package_version_and_commit(capsys):
    from differland_dist import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"differland {__version__}")
    # the tests run from a git checkout: the commit is found
    assert re.search(r"\(commit [0-9a-f]{40}(\+dirty)?\)$", line), line


def test_every_list_flag_takes_spaces_and_commas():
    """No command keeps a list flag of its own making: every nargs='+' flag is the shared one,
    and no help text asks for a comma-only list."""
    n = 0
    for name, p in _subparsers().items():
        for a in p._actions:
            if a.nargs in ("+", "*"):
                assert isinstance(a, flags._ListAction), (name, a.option_strings)
                n += 1
            assert "comma-separated" not in (a.help or "").replace("space- or comma-separated", ""), \
                (name, a.option_strings)
    assert n >= 11
    for form in (["gpp,nee", "lai"], ["gpp", "nee", "lai"], ["gpp, nee,lai"]):
        ns = _parse("infer", "--checkpoint", "c", "--out", "o", "--series", *form)
        assert ns.series == ["gpp", "nee", "lai"]
    ns = _parse("analyze", "EXP", "--sets", "PFT", "PFT+CLIM", "--params", "LCMA,Bday")
    assert (ns.experiment, ns.sets, ns.params) == ("EXP", ["PFT", "PFT+CLIM"], ["LCMA", "Bday"])
    ns = _parse("import-sites", "--sites", "d", "--out", "o", "--test-sites", "US-Ha1,DE-Tha")
    assert ns.test_sites == ["US-Ha1", "DE-Tha"] and ns.only is None
    with pytest.raises(SystemExit):  # an empty list is refused, not read as "all"
        _parse("infer", "--checkpoint", "c", "--out", "o", "--series", ",")


def test_one_executor_flag_and_the_deprecated_local(capsys):
    with_executor = {n for n, p in _subparsers().items() if "--executor" in _options(p)}
    assert with_executor == {"analyze", "evaluate", "infer"}
    for n in with_executor:
        assert tuple(_options(_subparsers()[n])["--executor"].choices) == ("ray", "local")
    assert _parse("analyze", "EXP").executor == "ray"
    assert _parse("analyze", "EXP", "--executor", "local").executor == "local"
    assert _parse("analyze", "EXP", "--local").executor == "local"
    assert "--local is deprecated; use --executor local" in capsys.readouterr().err


def test_one_progress_flag_with_the_old_spellings():
    for name, p in _subparsers().items():
        opts = _options(p)
        if "--progress" in opts:
            assert "--no-progress" in opts and opts["--progress"].default is True, name
        assert "--progress-bars" not in opts or name == "infer"
    assert {n for n, p in _subparsers().items() if "--progress" in _options(p)} >= {
        "calibrate", "demo", "infer", "evaluate", "analyze", "validate", "import-netcdf",
        "experiment"}
    assert _parse("calibrate", "c.yaml", "--out", "r", "--no-progress").progress is False
    assert _parse("calibrate", "c.yaml", "--out", "r").progress is True
    assert _parse("infer", "--checkpoint", "c", "--out", "o", "--no-progress").progress is False
    assert _parse("infer", "--checkpoint", "c", "--out", "o", "--progress-bars").progress is True


def test_json_everywhere_and_address_wherever_ray_runs():
    subs = _subparsers()
    assert set(subs) >= ALL_COMMANDS
    for name in subs:  # every command, including ones added later
        assert "--json" in _options(subs[name]), name
    assert {n for n, p in subs.items() if "--address" in _options(p)} == RAY_COMMANDS


def test_the_two_configs_are_named_apart():
    subs = _subparsers()
    cal = next(a for a in subs["calibrate"]._actions if a.dest == "config")
    exp = next(a for a in subs["experiment"]._actions if a.dest == "config")
    assert cal.metavar == "CALIBRATION_CONFIG" and exp.metavar == "EXPERIMENT_CONFIG"
    assert "calibration config" in cal.help and "experiment config" not in cal.help.split(";")[0]
    assert "experiment grid config" in exp.help


def test_calibrate_address_reaches_the_config(small_store_url, capsys):  # noqa: F811
    rc = main(["calibrate", "configs/demo.yaml", "--out", "unused", "--dry-run", "--json",
               "--set", f"data.url={small_store_url}", "--address", "ray://head.example:10001"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["address"] == "ray://head.example:10001" and d["store"] == small_store_url
    assert d["pixels"] == 67 and "test" in d["split"]


def test_validate_json_and_progress_lines(small_store_url, capsys, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    assert main(["validate", small_store_url, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["valid"] is True and d["problems"] == [] and d["summary"]["url"]
    done = [r.getMessage() for r in caplog.records if r.name == progress.__name__]
    assert any("blocks read and checked" in m and "(100 %)" in m for m in done), done
    caplog.clear()
    assert main(["validate", small_store_url, "--no-progress"]) == 0
    assert not [r for r in caplog.records if r.name == progress.__name__]
    assert progress.log.level == logging.NOTSET  # main() leaves the logger as it found it
    assert "valid" in capsys.readouterr().out


def test_progress_counts_and_reports_the_end(caplog):
    caplog.set_level(logging.INFO)
    p = progress.Progress("thing", 4, every_s=3600)
    for _ in range(3):
        p.add()
    assert not caplog.records  # nothing before every_s or the end
    p.add()
    assert caplog.records[-1].getMessage().startswith("thing: 4 / 4 (100 %)")


def test_bad_list_item_is_a_one_line_error(capsys, tmp_path):
    # a list flag's items still go through the command's own checks
    rc = main(["import-checkpoint", str(tmp_path / "x.pickle"), "--out", str(tmp_path / "o.npz"),
               "--predictors", "PFT", "NOPE"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --predictors") and "NOPE" in err


def test_mlflow_without_its_extra_is_a_one_line_error_before_work(monkeypatch, capsys, tmp_path):
    for name in ("mlflow", "mlflow.entities", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)  # as if the [mlflow] extra were missing
    rc = main(["calibrate", "configs/demo.yaml", "--out", str(tmp_path / "run"),
               "--mlflow", (tmp_path / "mlruns").as_uri()])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --mlflow needs the mlflow package: pip install 'differland-dist[mlflow]'"]
    assert not (tmp_path / "run").exists()


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == progress.__name__]


def test_import_netcdf_reports_its_reads_to_the_end(tmp_path, caplog):
    """The progress total is the number of (time, lat, lon) reads the import makes: its last
    line reaches 100 %, so the count of reads and the total agree."""
    from test_importers import make_global_files

    from differland_dist.data.importers import netcdf as nc

    make_global_files(tmp_path)
    caplog.set_level(logging.INFO)
    nc.import_netcdf(nc.Inputs.in_dir(tmp_path), max_patch_size=4, n_time=24)
    lines = [m for m in _progress_lines(caplog) if "variables read" in m]
    assert lines and "(100 %)" in lines[-1], lines
    done, total = map(int, re.search(r": (\d+) / (\d+) ", lines[-1]).groups())
    assert done == total > 10


def test_shap_tasks_report_progress(caplog):
    from differland_dist.analysis.shap_values import ShapOptions, explain

    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 3))
    caplog.set_level(logging.INFO)
    explain({"a": lambda X: X[:, :2], "b": lambda X: 2 * X[:, :2]}, features,
            ShapOptions(background=5, pixels=6, nsamples=16, chunk=2, executor="local"))
    lines = [m for m in _progress_lines(caplog) if m.startswith("shap: tasks")]
    assert lines and lines[-1].startswith("shap: tasks (function x pixel chunk): 6 / 6 (100 %)")
