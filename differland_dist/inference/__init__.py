"""Batch inference: the network and DALEC over every pixel of a store, into a zarr output.

See :mod:`differland_dist.inference.output` for the output store and
:mod:`differland_dist.inference.pipeline` for the Ray Data pipeline; the names the output
holds (series, parameters) are the shared vocabulary (``differland_dist.vocabulary``).
"""

from differland_dist.inference.pipeline import InferenceOptions, InferenceReport, run_inference

__all__ = ["InferenceOptions", "InferenceReport", "run_inference"]
