"""The one table from DifferLand's output series to CMOR / ILAMB variable names and units.

``differland export --cmor`` renames each series listed here, multiplies it by ``sign`` and
converts it with ``cf_units`` from the series' units to the CMOR units (fluxes: g m-2 d-1 ->
kg m-2 s-1, a factor 1e-3 / 86400; pools: g m-2 -> kg m-2). Series without a CMOR equivalent
(``sif``, ``vod``, ``pool_labile``) keep their names and units.

Sign conventions (CMIP6 Lmon, ILAMB):

* ``nee`` stays ``nee``, positive *upward* (carbon to the atmosphere), as ILAMB's FLUXNET
  confrontations compare it (ILAMB derives it as ra + rh - gpp);
* ``nbe`` (nee + fire, positive upward) becomes ``nbp`` = -nbe, net biome production,
  positive *downward* (carbon into the land), as CMIP6 defines it; DALEC has no land-use
  flux, so nbp here is -(nee + fire);
* every other flux keeps its sign (gpp, ra, rh, fFire, evspsbl, mrro are positive).
"""

from __future__ import annotations

from typing import NamedTuple


class CmorVar(NamedTuple):
    """How a stored series is written under CMOR conventions."""

    series: str         # the stored series (``vocabulary.series.SERIES`` name)
    name: str           # CMOR / ILAMB variable name
    units: str          # CMOR units (UDUNITS)
    standard_name: str  # CF standard name ("" where CF has none)
    long_name: str
    sign: float = 1.0   # multiplied before the unit conversion
    water: bool = False  # a depth of liquid water: 1 mm = 1 kg m-2 (density 1000 kg m-3)


_FLUX = "kg m-2 s-1"
_POOL = "kg m-2"

#: Stored series -> its CMOR variable.
CMOR_TABLE: dict[str, CmorVar] = {v.series: v for v in (
    CmorVar("gpp", "gpp", _FLUX, "gross_primary_productivity_of_biomass_expressed_as_carbon",
            "Carbon Mass Flux out of Atmosphere Due to Gross Primary Production on Land"),
    CmorVar("reco", "reco", _FLUX, "", "Ecosystem Respiration (ra + rh), as carbon"),
    CmorVar("ra", "ra", _FLUX,
            "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_plant_respiration",
            "Carbon Mass Flux into Atmosphere Due to Autotrophic (Plant) Respiration on Land"),
    CmorVar("rh", "rh", _FLUX,
            "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_heterotrophic_respiration",
            "Total Heterotrophic Respiration on Land as Carbon Mass Flux"),
    CmorVar("nee", "nee", _FLUX, "",
            "Net Ecosystem Exchange of carbon (ra + rh - gpp; positive upward, into the atmosphere)"),
    CmorVar("nbe", "nbp", _FLUX,
            "surface_net_downward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_all_land_processes",
            "Carbon Mass Flux out of Atmosphere Due to Net Biospheric Production on Land "
            "(-(nee + fire); positive downward)", -1.0),
    CmorVar("fire", "fFire", _FLUX,
            "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_emission_from_fires",
            "Carbon Mass Flux into Atmosphere Due to CO2 Emission from Fire"),
    CmorVar("et", "evspsbl", _FLUX, "water_evapotranspiration_flux",
            "Evaporation Including Sublimation and Transpiration"),
    CmorVar("lai", "lai", "1", "leaf_area_index", "Leaf Area Index"),
    CmorVar("runoff", "mrro", _FLUX, "runoff_flux", "Total Runoff"),
    CmorVar("pool_foliar", "cLeaf", _POOL, "leaf_mass_content_of_carbon", "Carbon Mass in Leaves"),
    CmorVar("pool_root", "cRoot", _POOL, "root_mass_content_of_carbon", "Carbon Mass in Roots"),
    # CMIP6 names cWood wood_mass_content_of_carbon, a name newer than the CF table the
    # compliance checker ships: left without one rather than flagged
    CmorVar("pool_wood", "cWood", _POOL, "", "Carbon Mass in Wood"),
    CmorVar("pool_litter", "cLitter", _POOL, "litter_mass_content_of_carbon", "Carbon Mass in Litter Pool"),
    CmorVar("pool_som", "cSoil", _POOL, "soil_mass_content_of_carbon", "Carbon Mass in Model Soil Pool"),
    CmorVar("pool_water", "mrso", _POOL, "mass_content_of_water_in_soil",
            "Total Soil Moisture Content (DALEC's plant-available water)", water=True),
)}


def cmor_factor(series_units: str, var: CmorVar) -> float:
    """The factor that takes values in ``series_units`` to ``var.units`` (sign included),
    by ``cf_units`` (raises ValueError when the units are not convertible)."""
    # imported here: cf_units loads the UDUNITS-2 library, needed only by CMOR exports
    import cf_units

    src, dst = cf_units.Unit(series_units), cf_units.Unit(var.units)
    if var.water and src.is_convertible(cf_units.Unit("mm")):
        src = cf_units.Unit("kg m-2") * src.convert(1.0, cf_units.Unit("mm"))
    if not src.is_convertible(dst):
        raise ValueError(f"{var.series}: units {series_units!r} cannot convert to {var.units!r}")
    return float(var.sign * src.convert(1.0, dst))
