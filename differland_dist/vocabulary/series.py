"""The series catalogue: every monthly series an inference output can hold, as sums of DALEC
outputs, and the names of the stored per-pixel parameters.

An observation stream's model side (``vocabulary.streams.Stream.outputs``) is held by the
series :func:`stream_series` names (:data:`STREAM_SERIES`, checked at import: a new stream
needs its series). Units are UDUNITS-2; ``standard_name`` the CF name where one exists.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from differland_dist.errors import DifferlandError
from differland_dist.vocabulary import streams
from differland_dist.vocabulary.dalec_io import OUTPUT_UNITS
from differland_dist.vocabulary.parameters import POOLS
from differland_dist.vocabulary.units import udunits


class SeriesSpec(NamedTuple):
    """A stored monthly series: the sum of model outputs (``dalec_io.OUTPUTS`` names);
    ``units`` UDUNITS-2, ``standard_name`` the CF name where one exists (else "")."""

    name: str
    sources: tuple[str, ...]
    units: str
    long_name: str
    standard_name: str = ""
    flux: bool = True  # a mean rate over the step (cell_methods "time: mean"); False: a state


_POOL_LONG = {b.name: b.description for b in POOLS}

_UP_CO2 = "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_"
_POOL_STD = {"foliar": "leaf_mass_content_of_carbon", "root": "root_mass_content_of_carbon",
             "litter": "litter_mass_content_of_carbon", "som": "soil_mass_content_of_carbon"}

#: Every series the output can hold, in store order.
SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec("gpp", ("gpp",), udunits(OUTPUT_UNITS["gpp"]), "gross primary production, as carbon",
               "gross_primary_productivity_of_biomass_expressed_as_carbon"),
    SeriesSpec("reco", ("gpp", "nee"), udunits(OUTPUT_UNITS["nee"]),
               "ecosystem respiration (autotrophic + heterotrophic; gpp + nee), as carbon"),
    SeriesSpec("ra", ("respiration_auto",), udunits(OUTPUT_UNITS["respiration_auto"]),
               "autotrophic respiration, as carbon", _UP_CO2 + "plant_respiration"),
    SeriesSpec("rh", ("respiration_hetero_litter", "respiration_hetero_som"),
               udunits(OUTPUT_UNITS["respiration_hetero_som"]),
               "heterotrophic respiration (litter + SOM), as carbon", _UP_CO2 + "heterotrophic_respiration"),
    SeriesSpec("nee", ("nee",), udunits(OUTPUT_UNITS["nee"]),
               "net ecosystem exchange (positive: carbon to the atmosphere), as carbon"),
    SeriesSpec("nbe", ("nbe",), udunits(OUTPUT_UNITS["nbe"]),
               "net biosphere exchange (nee + fire; positive: carbon to the atmosphere), as carbon"),
    SeriesSpec("fire", ("total_fire_combust",), udunits(OUTPUT_UNITS["total_fire_combust"]),
               "carbon emitted by fire (total combustion), as carbon", _UP_CO2 + "emission_from_fires"),
    SeriesSpec("et", ("ET",), "kg m-2 d-1", "evapotranspiration (1 kg m-2 = 1 mm of water)",
               "water_evapotranspiration_flux"),
    SeriesSpec("lai", ("lai",), OUTPUT_UNITS["lai"], "leaf area index", "leaf_area_index", False),
    SeriesSpec("sif", ("SIF",), udunits(OUTPUT_UNITS["SIF"]),
               "solar-induced chlorophyll fluorescence proxy (linear in gpp)"),
    SeriesSpec("vod", ("vod",), OUTPUT_UNITS["vod"], "vegetation optical depth proxy", "", False),
    SeriesSpec("runoff", ("runoff",), "kg m-2 d-1", "runoff (1 kg m-2 = 1 mm of water)", "runoff_flux"),
    *(SeriesSpec(f"pool_{b.name}", (f"next_{b.name}_pool",), udunits(b.units),
                 f"{_POOL_LONG[b.name]} at the end of the step"
                 + (", as carbon" if b.units == "gC m-2" else ""), _POOL_STD.get(b.name, ""), False)
      for b in POOLS),
)
SERIES_BY_NAME = {s.name: s for s in SERIES}
DEFAULT_SERIES = tuple(s.name for s in SERIES)


def stream_series(outputs: Sequence[str]) -> tuple[str, ...]:
    """The stored series whose sum is the sum of these model outputs (an observation stream's
    model side, ``vocabulary.streams.Stream.outputs``): the one series with exactly these
    sources, else one single-source series per output, in order."""
    outputs = tuple(outputs)
    for s in SERIES:
        if s.sources == outputs:
            return (s.name,)
    names = []
    for o in outputs:
        match = [s.name for s in SERIES if s.sources == (o,)]
        if not match:
            raise ValueError(f"no stored series holds model output {o!r} alone: add one to SERIES")
        names.append(match[0])
    return tuple(names)


#: Every stream's model side is stored (checked at import: a new stream needs its series).
STREAM_SERIES = {st.name: stream_series(st.outputs) for st in streams.STREAMS}


def param_var(name: str) -> str:
    """Store variable of a per-pixel parameter, e.g. ``param_f_gpp``."""
    return f"param_{name}"


def map_var(name: str) -> str:
    """Store variable of a gridded parameter map, e.g. ``map_f_gpp``."""
    return f"map_{name}"


def check_series(names: Sequence[str]) -> tuple[str, ...]:
    """Validated series names in store order (raises DifferlandError naming unknown ones)."""
    unknown = [n for n in names if n not in SERIES_BY_NAME]
    if unknown:
        raise DifferlandError(f"unknown output series {unknown}; known: {', '.join(DEFAULT_SERIES)}")
    chosen = set(names)
    return tuple(s.name for s in SERIES if s.name in chosen)


def model_outputs_for(series: Sequence[str]) -> tuple[str, ...]:
    """The model outputs (``dalec_io.OUTPUTS`` names) the series need, de-duplicated."""
    return tuple(dict.fromkeys(src for n in series for src in SERIES_BY_NAME[n].sources))
