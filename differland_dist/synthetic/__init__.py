"""The synthetic Earth: a deterministic pixel store whose true parameters and true
predictor→parameter relation are known (the embedded default of the demo and the tests, and
the reference every analysis is checked against).

It lives beside the demo, not in ``data/``: making it runs DALEC (JAX), which the data layer
does not need. ``geography`` holds the grid and predictors, ``forcing`` the monthly climate,
``truth`` the hidden relation and DALEC's run under it, ``observations`` the noisy products,
``fields`` the seeded random streams, and ``earth`` draws them in order and assembles the
store; this module is its public surface.
"""

from differland_dist.data.tiling import monthly_axis, patch_tile
from differland_dist.synthetic.earth import (
    DEFAULT_RESOLUTION, DEFAULT_START, DEFAULT_YEARS, Earth, EarthSettings, draw_earth, make_synthetic,
    synth_to_store)
from differland_dist.synthetic.fields import smooth_fields
from differland_dist.synthetic.forcing import make_forcing, toa_radiation
from differland_dist.synthetic.geography import (
    PFT_CLIMATE_COUPLING, LandPixels, check_coupling, land_fraction, make_grid, make_predictors)
from differland_dist.synthetic.observations import make_observations
from differland_dist.synthetic.truth import KEPT_OUTPUTS, make_truth, run_dalec
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
    "DEFAULT_RESOLUTION", "DEFAULT_START", "DEFAULT_YEARS", "Earth", "EarthSettings", "FEATURE_SCALING", "KEPT_OUTPUTS",
    "LATENTS", "STRUCTURE", "TRUTH_DESIGNS", "PFT_CLIMATE_COUPLING", "GENERATED", "TruthDesign",
    "build_truth", "check_coupling", "draw_earth", "design_from_dict", "load_design", "random_structured_design",
    "shipped_designs",
    "PARAM_NAMES_ALL", "PARAM_UNITS_ALL", "TRUTH_FEATURES", "LandPixels", "Truth", "apply_truth",
    "land_fraction", "make_forcing", "make_grid", "make_observations", "make_predictors",
    "make_synthetic", "make_truth", "monthly_axis", "patch_tile", "run_dalec", "smooth_fields",
    "synth_to_store", "toa_radiation"]
