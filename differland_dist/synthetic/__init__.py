"""The synthetic Earth: a deterministic pixel store whose true parameters and true
predictor→parameter relation are known (the embedded default of the demo and the tests, and
the reference every analysis is checked against).

It lives beside the demo, not in ``data/``: making it runs DALEC (JAX), which the data layer
does not need. ``earth`` holds the grid, predictors, forcing, the hidden relation and the
observations; this module is its public surface.
"""

from differland_dist.synthetic.earth import (
    DEFAULT_RESOLUTION, DEFAULT_START, DEFAULT_YEARS, FEATURE_SCALING, KEPT_OUTPUTS, LATENTS,
    PARAM_NAMES_ALL, PARAM_UNITS_ALL, STRUCTURE, TRUTH_DESIGNS, TRUTH_FEATURES, Grid, Truth,
    apply_truth, land_fraction, make_forcing, make_grid, make_observations, make_predictors,
    make_synthetic, make_truth, monthly_axis, patch_tile, run_dalec, smooth_fields,
    synth_to_store, toa_radiation)

__all__ = [
    "DEFAULT_RESOLUTION", "DEFAULT_START", "DEFAULT_YEARS", "FEATURE_SCALING", "KEPT_OUTPUTS",
    "LATENTS", "STRUCTURE", "TRUTH_DESIGNS",
    "PARAM_NAMES_ALL", "PARAM_UNITS_ALL", "TRUTH_FEATURES", "Grid", "Truth", "apply_truth",
    "land_fraction", "make_forcing", "make_grid", "make_observations", "make_predictors",
    "make_synthetic", "make_truth", "monthly_axis", "patch_tile", "run_dalec", "smooth_fields",
    "synth_to_store", "toa_radiation"]
