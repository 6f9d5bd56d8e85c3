"""Running an experiment grid on one Ray cluster: every member a calibration, packed by Ray.

Each member reserves its workers with a placement group (one bundle per worker) before it
starts, so a member runs whole or waits: a cluster of N GPUs runs N single-GPU members at once,
the rest queue, and an autoscaling cluster sees the pending groups and grows. Members share
nothing but the cluster; each writes its own run directory ``DIR/members/<set>/m<seed>/``.

The driver is thin: member state lives in :class:`MemberRun` records, appended to
``DIR/experiment.jsonl`` at every state change; :func:`next_action` decides what to do with a
member from its run directory (skip a finished one, resume one with checkpoints); the loop only
executes. A rerun after a killed driver, a lost node or Ctrl-C therefore finishes only what is
unfinished, and every member resumes from its own last checkpoint (bit-identical networks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from differland_dist.common import progress
from differland_dist.distributed.pool import check_ray_address, client_address, effective_address
from differland_dist.distributed.trainer import calibrate
from differland_dist.distributed.worker import worker_env
from differland_dist.experiment.grid import GridConfig, Member, member_config
from differland_dist.distributed.tracking import MLflowHook, TensorBoardHook
from differland_dist.runs.layout import latest_checkpoint, read_metrics
from differland_dist.storage.location import Location, as_location, join

log = logging.getLogger(__name__)

JOURNAL = "experiment.jsonl"
CONFIG_NAME = "experiment.yaml"
MEMBERS = "members"

#: Member states, in the order a member goes through them.
STATES = ("queued", "waiting", "running", "done", "failed")


@dataclass
class MemberRun:
    """What the driver knows of one member (one record per state change in the journal)."""

    key: str
    set: str
    seed: int
    state: str = "queued"
    step: int = 0
    steps: int = 0
    loss: float | None = None
    dev_loss: float | None = None
    pixel_months_per_s: float = 0.0
    error: str | None = None
    since: float = field(default_factory=time.time)

    def record(self) -> dict[str, Any]:
        return {"time": time.time(), **dataclasses.asdict(self)}


def member_dir(root: Location, member: Member | MemberRun) -> Location:
    """The member's run directory ``<root>/members/<set>/m<seed>``."""
    return root.join(MEMBERS, member.key)


def next_action(run_dir: Location, steps: int) -> str:
    """"skip" (finished: its final network is there at ``steps``), "resume" (checkpoints) or
    "start" (nothing yet): a policy over the run directory alone."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return "start"
    if run_dir.join("network.npz").exists():
        info = run_dir.join("checkpoints", "latest.json").read_json(default={}) or {}
        if int(info.get("step", -1)) >= steps:
            return "skip"
    return "resume"


def final_losses(run_dir: Location, keep: str = "last") -> tuple[float | None, float | None, int]:
    """(last training loss, dev loss of the kept network, last step) from a run's
    ``metrics.jsonl``: the last dev loss, or with ``keep="best_dev"`` (training.keep) the
    lowest finite one, the loss of the network that network.npz holds."""
    train = dev = None
    step = 0
    for m in read_metrics(run_dir):  # none yet: (None, None, 0)
        step = max(step, int(m.get("step", 0)))
        if m.get("split") == "train":
            train = m.get("loss")
        elif m.get("split") == "dev":
            v = m.get("loss")
            if keep == "last":
                dev = v
            elif v is not None and math.isfinite(v) and (dev is None or v < dev):
                dev = v
    return train, dev, step


class Journal:
    """``experiment.jsonl``: one JSON record per member state change, appended (locally with
    fsync; on object stores the whole file is rewritten atomically, as objects cannot grow)."""

    def __init__(self, loc: Location):
        self.loc = loc
        self._lock = threading.Lock()
        self._lines: list[str] = []
        if not loc.local:
            try:
                self._lines = loc.read_bytes().decode().splitlines(keepends=True)
            except FileNotFoundError:
                pass

    def append(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, allow_nan=False, default=str) + "\n"
        with self._lock:
            if self.loc.local:
                os.makedirs(os.path.dirname(self.loc.path) or ".", exist_ok=True)
                with open(self.loc.path, "a") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                self._lines.append(line)
                self.loc.write_atomic("".join(self._lines).encode())


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


class _Stop(Exception):
    """Raised in a member's step hook when the experiment is being stopped."""


@dataclass
class ExperimentRun:
    """The outcome of :func:`train_members`."""

    out: Location
    members: dict[str, MemberRun]
    wall_s: float

    def by_state(self, state: str) -> list[MemberRun]:
        return [m for m in self.members.values() if m.state == state]

    @property
    def failed(self) -> list[MemberRun]:
        return self.by_state("failed")


def _start_ray(address: str, runtime_env: dict) -> bool:
    """Connect to (or start) the cluster; True when this call started Ray. ``local`` starts
    one here (or joins ``RAY_ADDRESS`` when set), ``ray://host`` means port 10001."""
    # imported here: Ray loads only once the members train (a bad grid fails before Ray loads)
    import ray

    if ray.is_initialized():
        return False
    check_ray_address(address)  # a cluster that is not there fails now, with one line
    address = effective_address(address)
    kw: dict[str, Any] = {"runtime_env": runtime_env, "include_dashboard": False,
                          "log_to_driver": log.isEnabledFor(logging.DEBUG),
                          "address": client_address(address) if address.startswith("ray://") else address}
    ray.init(**kw)
    return True


def train_members(grid: GridConfig, out: str | Location, *, address: str | None = None,
                  progress_every_s: float = 15.0,
                  on_change: Callable[[MemberRun], None] | None = None,
                  tensorboard: str | None = None, mlflow: str | None = None) -> ExperimentRun:
    """Train every member of the grid that is not finished, concurrently on one Ray cluster.

    Args:
      grid: the experiment (see :mod:`differland_dist.experiment.grid`).
      out: experiment directory: a Location, or a local path / object-storage URL reached with
        the base config's ``data.storage_options``.
      address: Ray address (default: the base config's ``ray.address``).
      progress_every_s: seconds between progress lines (members and the grid).
      on_change: called with a member's record at every state change.
      tensorboard: a local directory: each member also logs its metrics to TensorBoard in
        ``<tensorboard>/<set>/m<seed>`` (the [tracking] extra).
      mlflow: an MLflow tracking URI: each member trained here logs its config and metrics to
        one MLflow run named ``<set>/m<seed>`` in the MLflow experiment ``grid.name`` (the
        [mlflow] extra); FINISHED when the member is done, FAILED when it failed or was
        stopped (a resumed member starts a new run holding its whole metrics history).

    Failed members (diverged, workers lost beyond the restart budget, bad checkpoints) are
    recorded with the reason and do not stop the others.
    """
    # imported here: Ray loads only once the members train (a bad grid fails before Ray loads)
    import ray

    t0 = time.time()
    root = as_location(out, grid.base.data.storage_options)
    journal = Journal(root.join(JOURNAL))
    runs, todo = _plan(grid, root, journal)
    if not todo:
        return ExperimentRun(root, runs, time.time() - t0)
    # every member's tracking runs are opened here, one after another, before any training:
    # a tracking store that cannot be reached fails the experiment in one line, and MLflow's
    # experiment is created once, not raced by the member threads
    trackers = _open_trackers(todo, tensorboard, mlflow, grid.name)
    started = _start_ray(address or grid.base.ray.address,
                         {"env_vars": worker_env(member_config(grid, todo[0]).ray)})
    try:
        _Driver(grid, root, runs, journal, on_change).run(todo, trackers, progress_every_s)
    finally:
        if started:
            ray.shutdown()
    _log_progress(runs)
    return ExperimentRun(root, runs, time.time() - t0)


def member_record(grid: GridConfig, root: Location, m: Member) -> MemberRun:
    """Member ``m``'s record as its run directory holds it: "done" with its final losses when
    it has trained all its steps, else a fresh (pending) record."""
    cfg = member_config(grid, m)
    rd = member_dir(root, m)
    rec = MemberRun(m.key, m.set.name, m.seed, steps=cfg.training.steps or 0)
    if next_action(rd, cfg.training.steps or 0) == "skip":
        rec.loss, rec.dev_loss, rec.step = final_losses(rd, cfg.training.keep)
        rec.state = "done"
    return rec


def _plan(grid: GridConfig, root: Location, journal: "Journal") -> tuple[dict[str, MemberRun], list[Member]]:
    """Every member's record (finished ones read from their run directories, journalled) and
    the members left to train."""
    runs: dict[str, MemberRun] = {}
    todo: list[Member] = []
    for m in grid.members:
        rec = runs[m.key] = member_record(grid, root, m)
        if rec.state != "done":
            todo.append(m)
        journal.append(rec.record())
    log.info("experiment %s: %d members (%d sets x %d), %d finished, %d to run",
             grid.name, len(runs), len(grid.predictor_sets), len(grid.seeds),
             len(runs) - len(todo), len(todo))
    return runs, todo


def _open_trackers(todo: list[Member], tensorboard: str | None, mlflow: str | None,
                   experiment: str) -> dict[str, list]:
    """member key -> its tracking hooks (TensorBoard, MLflow), opened now."""
    out: dict[str, list] = {}
    try:
        for m in todo:
            hooks = out[m.key] = []
            if tensorboard:
                hooks.append(TensorBoardHook(join(tensorboard, m.key)))
            if mlflow:
                hooks.append(MLflowHook(mlflow, experiment, run_name=m.key))
    except BaseException as e:
        for hooks in out.values():
            for h in hooks:
                h.__exit__(type(e), e, None)
        raise
    return out


class _Driver:
    """The members' threads, their state changes (journalled under one lock) and the stop."""

    def __init__(self, grid: GridConfig, root: Location, runs: dict[str, MemberRun],
                 journal: Journal, on_change: Callable[[MemberRun], None] | None):
        self.grid, self.root, self.runs, self.journal = grid, root, runs, journal
        self.on_change = on_change
        self.stop = threading.Event()
        self.lock = threading.Lock()
        r = grid.resources
        self.bundle = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.gpus_per_worker else {})}

    def change(self, rec: MemberRun, state: str, **kw) -> None:
        with self.lock:
            rec.state, rec.since = state, time.time()
            for k, v in kw.items():
                setattr(rec, k, v)
            self.journal.append(rec.record())
        log.info("member %s: %s%s", rec.key, state, f" ({rec.error})" if rec.error else "")
        if self.on_change is not None:
            self.on_change(rec)

    def run(self, todo: list[Member], trackers: dict[str, list], progress_every_s: float) -> None:
        """One thread per member; progress lines until all are done; Ctrl-C stops them all."""
        threads = [threading.Thread(target=self.run_member, args=(m, trackers[m.key]),
                                    name=f"member-{m.key}", daemon=True) for m in todo]
        for t in threads:
            t.start()
        try:
            last = 0.0
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
                if time.time() - last >= progress_every_s:
                    last = time.time()
                    _log_progress(self.runs)
        except KeyboardInterrupt:
            log.warning("interrupted: stopping members (finished members and checkpoints are "
                        "kept; rerun to continue)")
            self.stop.set()
            for t in threads:
                t.join(timeout=60)
            raise

    def run_member(self, member: Member, trackers: list) -> None:
        """Reserve the member's workers, calibrate it (resuming from its checkpoints), record
        the outcome; never raises (one member's failure must not stop the others)."""
        # imported here: Ray loads only once the members train
        from ray.util.placement_group import placement_group, remove_placement_group

        rec = self.runs[member.key]
        pg = None
        try:
            with contextlib.ExitStack() as stack:
                for h in trackers:  # closed with the member's outcome (MLflow: FAILED on error)
                    stack.enter_context(h)
                pg = placement_group([dict(self.bundle) for _ in range(self.grid.resources.workers)],
                                     strategy="PACK")
                self.change(rec, "waiting")
                self._wait_ready(pg)
                self.change(rec, "running")
                self._calibrate(member, rec, pg, trackers)
            loss, dev, step = final_losses(member_dir(self.root, member),
                                           member_config(self.grid, member).training.keep)
            self.change(rec, "done", loss=_finite(loss), dev_loss=_finite(dev), step=step,
                        pixel_months_per_s=0.0)
        except _Stop:
            self.change(rec, "queued")
        except Exception as e:  # noqa: BLE001 - one member's failure must not stop the others
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.debug("member %s failed", member.key, exc_info=True)
            self.change(rec, "failed", error=f"{type(e).__name__}: {msg}"[:500],
                        pixel_months_per_s=0.0)
        finally:
            if pg is not None:
                try:
                    remove_placement_group(pg)
                except Exception:  # noqa: BLE001 - the cluster may be gone
                    pass

    def _wait_ready(self, pg) -> None:
        """Until the member's placement group is ready (its workers reserved); _Stop if the
        experiment is stopped first."""
        import ray

        while not self.stop.is_set():
            ready, _ = ray.wait([pg.ready()], timeout=1.0)
            if ready:
                return
        raise _Stop()

    def _calibrate(self, member: Member, rec: MemberRun, pg, trackers: list) -> None:
        def hook(step: int, cal) -> None:
            if self.stop.is_set():
                raise _Stop()
            last = cal.metrics[-1] if cal.metrics else {}
            rec.step = step
            rec.loss = _finite(last.get("loss")) if last.get("split") == "train" else rec.loss
            rec.pixel_months_per_s = float(last.get("pixel_months_per_s", 0.0) or 0.0)

        # resume=True also starts a member with no checkpoints from step 0; force: the
        # experiment's lease is held, so a member lease left by a killed driver is stale
        # and ours to take (a live one is still refused)
        rd = member_dir(self.root, member)
        calibrate(member_config(self.grid, member), rd, resume=True, hooks=[hook, *trackers],
                  placement_group=pg, force=True)


def _log_progress(runs: dict[str, MemberRun]) -> None:
    counts = {s: sum(1 for m in runs.values() if m.state == s) for s in STATES}
    rate = sum(m.pixel_months_per_s for m in runs.values() if m.state == "running")
    # through the progress logger: the CLI's --no-progress hides these lines
    progress.log.info("grid: %d done / %d running / %d waiting / %d queued / %d failed; "
                      "%.3g pixel-months/s",
                      counts["done"], counts["running"], counts["waiting"], counts["queued"],
                      counts["failed"], rate)
    for m in runs.values():
        if m.state == "running":
            loss = "" if m.loss is None else f" loss {m.loss:.4g}"
            progress.log.info("  %s step %d/%d%s (%.3g pixel-months/s)", m.key, m.step, m.steps,
                              loss, m.pixel_months_per_s)
