"""The truth of the synthetic Earth: the hidden predictor -> parameter relation
(:mod:`~differland_dist.synthetic.truth_design`) drawn for a seed, and DALEC run under the true
parameters (its outputs are what the observations are made from).
"""

from __future__ import annotations

import numpy as np

from differland_dist.model import simulate
from differland_dist.vocabulary.dalec_io import OUTPUT_INDEX
from differland_dist.vocabulary.parameters import PHENOLOGY_PARAMETERS, PROCESS_PARAMETERS
from differland_dist.synthetic.truth_design import TruthDesign, build_truth, load_design


def make_truth(seed: int, design: "str | TruthDesign" = "random"):
    """The hidden relation of ``design`` (a shipped name such as "structured", a YAML file,
    "random-structured", or a :class:`TruthDesign`) drawn for ``seed``."""
    d = design if isinstance(design, TruthDesign) else load_design(design, seed, "truth design")
    return build_truth(d, seed)


#: DALEC outputs that :func:`run_dalec` returns (what the observations are made from).
KEPT_OUTPUTS = ("lai", "gpp", "ET", "SIF", "nee", "nbe", "total_fire_combust", "next_labile_pool",
         "next_foliar_pool", "next_root_pool", "next_wood_pool", "next_som_pool",
         "next_water_pool", "respiration_auto", "respiration_hetero_litter",
         "respiration_hetero_som")


def run_dalec(forcing: np.ndarray, params: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Run DALEC (differland_dist.model.simulate) on (P, T, 17) forcing and (P, 40) physical
    parameters, ``chunk`` pixels at a time (the last chunk padded: one compilation).
    Returns the outputs in ``KEPT_OUTPUTS`` as (P, T) float32."""
    P, T, _ = forcing.shape
    n_proc, n_ph = len(PROCESS_PARAMETERS), len(PHENOLOGY_PARAMETERS)
    chunk = max(1, min(chunk, P))
    out = {k: np.empty((P, T), np.float32) for k in KEPT_OUTPUTS}
    idx = [OUTPUT_INDEX[k] for k in KEPT_OUTPUTS]
    for s in range(0, P, chunk):
        e = min(s + chunk, P)
        sel = np.r_[np.arange(s, e), np.full(chunk - (e - s), s, dtype=np.int64)]
        p = params[sel].astype(np.float32)
        _, y = simulate(forcing[sel], p[:, :n_proc], p[:, n_proc:n_proc + n_ph],
                        p[:, n_proc + n_ph:])
        y = np.asarray(y)[: e - s]
        for k, i in zip(KEPT_OUTPUTS, idx):
            out[k][s:e] = y[:, :, i]
    return out
