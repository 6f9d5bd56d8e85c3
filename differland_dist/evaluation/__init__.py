"""Evaluation of inference outputs against the observation streams, parameter recovery on
synthetic stores, and figures. Metrics are pure numpy (:mod:`.metrics`)."""

from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate
from differland_dist.evaluation.recovery import parameter_recovery
from differland_dist.evaluation.metrics import METRICS, Moments, flat, scores, spatial, temporal

__all__ = ["EvaluationOptions", "evaluate", "parameter_recovery", "METRICS", "Moments", "flat",
           "scores", "spatial", "temporal"]
