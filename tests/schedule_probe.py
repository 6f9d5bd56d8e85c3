"""The experiment's scheduler on many members whose training is a fixed hold of their
placement group (issue 28, item 3): what ``train_members`` costs per member, apart from
training, on a cluster that declares GPUs (no real GPU needed).

Only the member's ``calibrate`` is replaced (140 real trainings cannot run on a 2-core test
machine): the grid, the placement groups, the member threads, the journal and the waiting
are the experiment's own. The hold is a Ray task in the member's placement group that takes
its bundle (CPU and GPU) for ``hold_s`` seconds, as a member's worker would.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def paper_grid(out_members: int, gpus_per_member: float = 1.0, sets: int = 7):
    """The paper's grid shape (``sets`` predictor sets × seeds) cut to ``out_members``."""
    from differland_dist.experiment import load_grid

    names = ["PFT", "CLIM", "SOIL", "AGE", "GEO", "PFT+CLIM", "ALL"][:sets]
    groups = {"PFT": ["PFT"], "CLIM": ["CLIM"], "SOIL": ["SOIL"], "AGE": ["AGE"],
              "GEO": ["CLIM", "SOIL"], "PFT+CLIM": ["PFT", "CLIM"], "ALL": ["PFT", "CLIM", "SOIL", "AGE"]}
    per_set = math.ceil(out_members / sets)
    sets_ = "[" + ", ".join("[" + ", ".join(groups[n]) + "]" for n in names) + "]"
    grid = load_grid(ROOT / "configs" / "experiment_demo.yaml",
                     ["base.data.url=unused.zarr", f"members={per_set}", f"predictor_sets={sets_}",
                      "keep_best=1", "resources={workers: 1, cpus_per_worker: 1, gpus_per_worker: %s}"
                      % gpus_per_member])
    return grid, per_set * sets


def run_schedule(grid, out: str, hold_s: float) -> dict:
    """Train ``grid``'s members with each member's training a hold of ``hold_s`` seconds on
    the connected Ray cluster; the makespan, the driver's CPU seconds, how many members held
    resources at once (at most), each member's wait from the start to its placement."""
    import threading

    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from differland_dist.experiment import runner

    res = grid.resources

    @ray.remote
    def hold(seconds):
        time.sleep(seconds)
        return time.time()

    lock = threading.Lock()
    live = {"now": 0, "most": 0}
    started: list[float] = []

    def fake_calibrate(cfg, out_dir, *, placement_group=None, **kw):
        with lock:
            live["now"] += 1
            live["most"] = max(live["most"], live["now"])
            started.append(time.time())
        try:
            ray.get(hold.options(num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker,
                                 scheduling_strategy=PlacementGroupSchedulingStrategy(
                                     placement_group, placement_group_bundle_index=0)).remote(hold_s))
        finally:
            with lock:
                live["now"] -= 1

    original = runner.calibrate
    runner.calibrate = fake_calibrate
    try:
        t0, c0 = time.time(), time.process_time()
        result = runner.train_members(grid, out, progress_every_s=1e9)
        wall, cpu = time.time() - t0, time.process_time() - c0
    finally:
        runner.calibrate = original
    states = [m.state for m in result.members.values()]
    return {"members": len(grid.members), "makespan_s": wall, "driver_cpu_s": cpu,
            "most_at_once": live["most"], "states": states,
            "start_offsets_s": sorted(s - t0 for s in started)}


def ideal_makespan(members: int, slots: int, hold_s: float) -> float:
    """Waves of ``slots`` members, each ``hold_s`` long."""
    return math.ceil(members / slots) * hold_s
