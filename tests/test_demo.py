"""The main job end to end, small (7.5 deg: enough held-out dev and test patches that the
comparison is not one patch): synth -> calibrate on 2 Ray workers -> infer -> evaluate -> report."""

import json
import subprocess
import sys


def test_demo_cli_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "differland_dist.cli.main", "demo", "--out", str(out),
                        "--resolution", "7.5", "--years", "3", "--steps", "80", "--no-progress"],
                       capture_output=True, text=True, timeout=600)
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
    r2 = subprocess.run([sys.executable, "-m", "differland_dist.cli.main", "demo", "--out", str(out),
                         "--resolution", "7.5", "--years", "3", "--steps", "80", "--no-progress"],
                        capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0
    assert "reusing the synthetic Earth" in r2.stderr and "complete at step 80" in r2.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 80
