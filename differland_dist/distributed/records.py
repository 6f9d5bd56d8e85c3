"""The records the calibration loop appends to ``metrics.jsonl`` and the lines it logs: one
per step (``split = "train"``: loss terms, patches, pixel-months, timings, whether the update
was applied) and per dev evaluation (``split = "dev"``)."""

from __future__ import annotations

import logging
import time

import numpy as np

from differland_dist.distributed.gather import Gathered
from differland_dist.distributed.state import TrainState, describe_nonfinite

log = logging.getLogger(__name__)


def step_record(state: TrainState, terms: dict, got: Gathered, *, patches: int, epoch: int,
                workers: int, grad: np.ndarray, finite: bool) -> dict:
    """The record of the step after ``state`` (one round of calls, ``got``); ``workers``: 0
    for the driver alone (no per-worker timings)."""
    rec = {"step": state.step + 1, "split": "train", **terms, "patches": patches, "epoch": epoch,
           "pixel_months": got.pixel_months, "lr_scale": state.lr_scale, "applied": finite,
           "workers": workers, "calls": len(got.by_call),
           "time_compute_s": got.compute_s, "time_comm_s": max(got.wall - got.compute_s, 0.0)}
    if workers:
        rec["time_compute_min_s"] = min(got.worker_seconds) if got.worker_seconds else 0.0
        rec["worker_calls"] = list(got.worker_calls)
    if not finite:
        rec["nonfinite"] = describe_nonfinite(terms.get("loss", float("nan")), grad)
    return rec


def update_records(state: TrainState, plan, res, step_terms: list[dict], good: int, n: int,
                   wall: float, pixel_months: list[int]) -> list[dict]:
    """The records of ``n`` updates in one call (:mod:`.multistep`) up to the first not
    finite (``good``: how many were)."""
    out = []
    for i, terms in enumerate(step_terms[:good + 1]):
        rec = {"step": state.step + i + 1, "split": "train", **terms, "patches": len(plan.patches[i]),
               "pixel_months": pixel_months[i], "lr_scale": state.lr_scale, "applied": i < good,
               "workers": 1, "calls": plan.n_calls[i], "time_compute_s": res.seconds / n,
               "time_comm_s": max(wall - res.seconds, 0.0) / n, "updates_per_call": n}
        if i == good:
            rec["nonfinite"] = describe_nonfinite(terms.get("loss", float("nan")), res.bad_grad)
        out.append(rec)
    return out


def timed(rec: dict, t_step: float, t_driver: float, n: int = 1) -> dict:
    """``rec`` with the driver's and the whole step's seconds (per update of ``n``) since
    ``t_driver`` and ``t_step`` (``time.perf_counter``), and its pixel-months per second."""
    rec["time_driver_s"] = (time.perf_counter() - t_driver) / n
    rec["time_step_s"] = (time.perf_counter() - t_step) / n
    rec["pixel_months_per_s"] = rec["pixel_months"] / max(rec["time_step_s"], 1e-9)
    return rec


def log_step(rec: dict, steps: int, finite: bool) -> None:
    """One line per step: INFO for the first, every 20th of the run and every non-finite one."""
    every = max(1, steps // 20)
    log.log(logging.INFO if rec["step"] % every == 0 or rec["step"] == 1 or not finite else logging.DEBUG,
            "step %d/%d loss %.6g (%d patches, %.3g pixel-months/s)%s", rec["step"], steps,
            rec.get("loss", float("nan")), rec["patches"], rec["pixel_months_per_s"],
            "" if finite else " NOT APPLIED")


def log_plan(training, workers: int, seconds: float, train: int, dev: int, n_calls: int, shape) -> None:
    """What the run will do, once the workers are up; a warning when a step leaves workers idle."""
    steps, per_step = training.steps, min(training.patches_per_step, train)
    log.info("%d workers ready in %.1fs: %d train / %d dev patches, %d steps of %d patches "
             "in ~%d calls of %d pixels (up to %d patches each)", workers, seconds, train, dev, steps,
             per_step, n_calls, shape.rows, shape.segments)
    if n_calls < workers:
        log.warning("a step has %d call(s) of %d pixels for %d workers: %d worker(s) idle; "
                    "raise training.patches_per_step or lower training.pixels_per_call",
                    n_calls, shape.rows, workers, workers - n_calls)
