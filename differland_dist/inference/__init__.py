"""Batch inference: the network and DALEC over every pixel of a store, into a zarr output.

See :mod:`differland_dist.inference.output` for the output layout and
:mod:`differland_dist.inference.pipeline` for the Ray Data pipeline.
"""

from differland_dist.inference.output import DEFAULT_SERIES, PARAM_NAMES, SERIES
from differland_dist.inference.pipeline import InferenceOptions, InferenceReport, run_inference

__all__ = ["DEFAULT_SERIES", "PARAM_NAMES", "SERIES", "InferenceOptions", "InferenceReport",
           "run_inference"]
