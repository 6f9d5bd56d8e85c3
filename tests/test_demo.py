"""The main job end to end, small (7.5 deg: enough held-out dev and test patches that the
comparison is not one patch): synth -> calibrate on 2 Ray workers -> infer -> evaluate -> report;
then every ```python block of docs/python.md, run on that demo's output as a notebook would."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["demo", "--resolution", "7.5", "--years", "3", "--steps", "80", "--no-progress"]


def _demo(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "differland_dist.cli.main", *DEMO, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(output dir, completed process) of one demo run, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    return out, _demo(out)


def test_demo_cli_end_to_end(demo):
    out, r = demo
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "LAI RMSE" in r.stdout and "GPP RMSE" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    h = s["held_out"]
    assert h["lai_trained"]["rmse"] < 0.8 * h["lai_untrained"]["rmse"]
    assert h["gpp_trained"]["rmse"] < 0.8 * h["gpp_untrained"]["rmse"]
    assert "Held-out pixels" in (out / "report.md").read_text()
    for f in ("loss_curves.png", "map_field_capacity.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG" and (out / f).stat().st_size > 5000
    assert (out / "run" / "network.npz").exists()
    # a rerun resumes: the store is reused and the finished run is not recomputed
    r2 = _demo(out)
    assert r2.returncode == 0
    assert "reusing the synthetic Earth" in r2.stderr and "complete at step 80" in r2.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 80


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of a Markdown text."""
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text[: m.start()].count("\n") + 1, m.group(1)))
    return blocks


def test_docs_python_blocks_run_after_a_demo(demo, tmp_path):
    """Every ```python block of docs/python.md, in order and in one process (as notebook cells),
    in a directory holding a copy of the demo's output (`demo_out/`)."""
    out, r = demo
    assert r.returncode == 0, r.stderr[-3000:]
    blocks = python_blocks((ROOT / "docs" / "python.md").read_text())
    assert len(blocks) >= 8
    shutil.copytree(out, tmp_path / "demo_out")
    parts = [f"print('=== docs/python.md block at line {line}', flush=True)\n{code}" for line, code in blocks]
    script = tmp_path / "docs_python.py"
    script.write_text("\n".join(parts))
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-4000:]
    assert r.stdout.count("=== docs/python.md block") == len(blocks)
    d = tmp_path / "demo_out"
    for f in ("notebook_maps.png", "notebook_run/network.npz",
              "notebook_run/inference_evaluation/evaluation.json"):
        assert (d / f).exists(), f
    assert "error: the batch lacks variable(s) ['t_max']" in r.stdout
