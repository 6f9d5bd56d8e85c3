"""What ``differland evaluate`` is asked to do: :class:`EvaluationOptions`."""

from __future__ import annotations

from dataclasses import dataclass

from differland_dist.errors import DifferlandError
from differland_dist.vocabulary.parameters import PARAM_NAMES

DEFAULT_MAP_PARAMS = ("canopy_efficiency", "f_gpp", "LCMA", "field_capacity", "tor_wood",
                      "init_som")


@dataclass(frozen=True)
class EvaluationOptions:
    """block_pixels: pixels read per block (rounded to whole chunks); map_params: parameters
    mapped; n_series_pixels: held-out pixels whose series are plotted; scatter_points: pairs
    kept per stream and split for the density plots; min_obs_temporal: observations a unit
    needs for the temporal view; figures: write the PNG figures."""

    block_pixels: int = 4096
    map_params: tuple[str, ...] = DEFAULT_MAP_PARAMS
    n_series_pixels: int = 4
    scatter_points: int = 50_000
    min_obs_temporal: int = 3
    figures: bool = True
    #: "paper": also score as the paper's evaluate_performance.py does
    #: (:func:`differland_dist.evaluation.paper.paper_conventions`)
    conventions: str | None = None
    #: the paper conventions' warm-up in steps (the reference's 24 months)
    paper_warm_up: int = 24

    def __post_init__(self):
        bad = [p for p in self.map_params if p not in PARAM_NAMES]
        if bad:
            raise DifferlandError(f"unknown parameter(s) to map {bad}; known: "
                                  f"{', '.join(PARAM_NAMES)}")
        if self.conventions not in (None, "paper"):
            raise DifferlandError(f"conventions: {self.conventions!r}, expected 'paper' or none")
        if self.block_pixels < 1 or self.n_series_pixels < 0 or self.scatter_points < 1:
            raise DifferlandError("block_pixels and scatter_points must be >= 1, n_series_pixels >= 0")
