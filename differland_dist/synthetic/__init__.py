"""The synthetic Earth: a deterministic pixel store whose true parameters and true
predictor→parameter relation are known (the embedded default of the demo and the tests, and
the reference every analysis is checked against).

It lives beside the demo, not in ``data/``: making it runs DALEC (JAX), which the data layer
does not need. ``earth`` holds the grid, predictors, forcing, the hidden relation and the
observations; this module is its public surface.
"""

from differland_dist.synthetic.earth import (
    DEFAULT_RESOLUTION, DEFAULT_START, DEFAULT_YEARS, KEPT_OUTPUTS, PFT_CLIMATE_COUPLING, Grid,
    check_coupling, land_fraction, make_forcing, make_grid, make_observations, make_predictors,
    make_synthetic, make_truth, monthly_axis, patch_tile, run_dalec, smooth_fields,
    synth_to_store, toa_radiation)
from differland_dist.synthetic.truth_design import (
    FEATURE_SCALING, GENERATED, PARAM_NAMES_ALL, PARAM_UNITS_ALL, TRUTH_FEATURES, Truth,
    TruthDesign, apply_truth, build_truth, design_from_dict, load_design,
    random_structured_design, shipped_designs)

#: The designs known by name: the shipped files (configs/truths) and the generators.
TRUTH_DESIGNS = shipped_designs() + GENERATED
_STRUCTURED = load_design("structured")
#: The structured design's latents {name: ({predictor: weight}, offset)} and drivers
#: {parameter: ({latent: loading}, log_sd)}, as read from configs/truths/structured.yaml.
LATENTS = {k: (dict(v.weights), v.offset) for k, v in _STRUCTURED.latents.items()}
STRUCTURE = {k: (dict(v.drivers), v.log_sd) for k, v in _STRUCTURED.parameters.items()}

__all__ = [
    "DEFAULT_RESOLUTION", "DEFAULT_START", "DEFAULT_YEARS", "FEATURE_SCALING", "KEPT_OUTPUTS",
    "LATENTS", "STRUCTURE", "TRUTH_DESIGNS", "PFT_CLIMATE_COUPLING", "GENERATED", "TruthDesign",
    "build_truth", "check_coupling", "design_from_dict", "load_design", "random_structured_design",
    "shipped_designs",
    "PARAM_NAMES_ALL", "PARAM_UNITS_ALL", "TRUTH_FEATURES", "Grid", "Truth", "apply_truth",
    "land_fraction", "make_forcing", "make_grid", "make_observations", "make_predictors",
    "make_synthetic", "make_truth", "monthly_axis", "patch_tile", "run_dalec", "smooth_fields",
    "synth_to_store", "toa_radiation"]
