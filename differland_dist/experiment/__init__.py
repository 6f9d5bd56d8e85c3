"""Experiments: predictor-set × ensemble-member grids of calibrations on one Ray cluster, the
ensemble output of the kept members and their scores on train, dev and test patches."""

from differland_dist.experiment.grid import (
    PAPER_SETS, GridConfig, Member, PredictorSet, Resources, grid_from_dict, load_grid, member_config)
from differland_dist.experiment.pipeline import ExperimentResult, load_experiment, run_experiment
from differland_dist.experiment.runner import MemberRun, train_members

__all__ = ["PAPER_SETS", "GridConfig", "Member", "PredictorSet", "Resources", "grid_from_dict",
           "load_grid", "member_config", "ExperimentResult", "load_experiment", "run_experiment",
           "MemberRun", "train_members"]
