"""deploy/slurm/differland-ray.sbatch: valid bash, sbatch directives first, and, run against
stand-ins for Slurm's srun/scontrol, it starts the Ray head on the first node, a worker on
every other node joining it, then the differland command with --address; every `ray start`
option it uses is one the installed Ray accepts."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "slurm" / "differland-ray.sbatch"

FAKE_SRUN = """#!/bin/bash
echo "srun $*" >> "$LOG"
# the step's command follows srun's own options
while [ "$#" -gt 0 ] && [[ "$1" == -* ]]; do
  case "$1" in -w|--nodelist) shift 2 ;; *) shift ;; esac
done
if [ "$1" = hostname ]; then echo "10.0.0.1 fe80::1"; fi
"""
FAKE_SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && printf 'node1\\nnode2\\nnode3\\n'
"""
FAKE_DIFFERLAND = """#!/bin/bash
echo "differland $* RAY_ADDRESS=$RAY_ADDRESS" >> "$LOG"
"""


def _bin(tmp: Path) -> Path:
    d = tmp / "bin"
    d.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL),
                       ("differland", FAKE_DIFFERLAND)):
        (d / name).write_text(text)
        (d / name).chmod((d / name).stat().st_mode | stat.S_IEXEC)
    return d


def _run(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp / "log"
    env = {**os.environ, "PATH": f"{_bin(tmp)}:{os.environ['PATH']}", "LOG": str(log),
           "SLURM_JOB_NODELIST": "node[1-3]", "SLURM_CPUS_PER_TASK": "8",
           "SLURM_GPUS_PER_TASK": "1", "RAY_START_WAIT": "0"}
    env.pop("DIFFERLAND_VENV", None)
    r = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                       timeout=60)
    return r, (log.read_text().splitlines() if log.exists() else [])


def test_script_is_valid_bash_with_directives_first():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    lines = SCRIPT.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert directives and max(directives) < first_command  # sbatch stops reading at a command
    for i in directives:
        assert re.fullmatch(r"#SBATCH --[a-z-]+(=\S+)?", lines[i]), lines[i]
    opts = {lines[i].split()[1].split("=")[0] for i in directives}
    assert {"--nodes", "--ntasks-per-node", "--cpus-per-task", "--gpus-per-task"} <= opts


def test_head_then_workers_then_the_command(tmp_path):
    r, log = _run(tmp_path, "experiment", "configs/experiment_demo.yaml", "--out", "/scratch/exp")
    assert r.returncode == 0, r.stderr
    ray_steps = [line for line in log if " ray start " in f" {line} "]
    head = [line for line in ray_steps if "--head" in line]
    assert len(head) == 1 and "-w node1" in head[0]
    assert "--node-ip-address=10.0.0.1" in head[0] and "--port=6379" in head[0]
    assert "--num-cpus=8" in head[0] and "--num-gpus=1" in head[0] and "--block" in head[0]
    workers = [line for line in ray_steps if "--head" not in line]
    assert sorted(re.search(r"-w (\S+)", w).group(1) for w in workers) == ["node2", "node3"]
    assert all("--address=10.0.0.1:6379" in w and "--block" in w for w in workers)
    assert log.index(head[0]) < min(log.index(w) for w in workers)
    assert log[-1] == ("differland experiment configs/experiment_demo.yaml --out /scratch/exp "
                       "--address 10.0.0.1:6379 RAY_ADDRESS=10.0.0.1:6379")


def test_without_a_command_it_says_how_to_call_it(tmp_path):
    r, log = _run(tmp_path)
    assert r.returncode == 2 and "usage: sbatch" in r.stderr and log == []


def test_ray_start_options_exist_in_the_installed_ray():
    from ray.scripts.scripts import start

    known = {o for p in start.params for o in p.opts}
    used = set()
    for line in SCRIPT.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if "ray start" in line or (used and line.strip().startswith("--")):
            used |= {t.split("=")[0] for t in shlex.split(line.replace("\\", "")) if t.startswith("--")}
    used -= {"--nodes", "--ntasks", "--overlap"}  # srun's own, on the same lines
    assert used >= {"--head", "--address", "--port", "--num-cpus", "--num-gpus", "--block"}
    assert used <= known, used - known


def test_commands_run_through_it_take_address():
    from differland_dist.cli.main import build_parser

    for cmd in (["experiment", "c.yaml", "--out", "d"], ["calibrate", "c.yaml", "--out", "d"],
                ["infer", "--checkpoint", "c", "--out", "o"], ["analyze", "d"]):
        assert build_parser().parse_args([*cmd, "--address", "10.0.0.1:6379"]).address == "10.0.0.1:6379"
