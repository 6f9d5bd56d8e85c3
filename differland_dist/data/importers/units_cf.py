"""Unit conversion of imported variables to the store's units, by ``cf_units`` (UDUNITS-2).

A variable must say its units: a missing ``units`` attribute is an error naming it, never an
assumption. Besides what UDUNITS converts (K -> degC, W m-2 -> MJ m-2 d-1, Pa -> hPa, % -> 1),
a mass of liquid water per area converts to a depth (1 kg m-2 = 1 mm, density 1000 kg m-3), so
a precipitation flux in kg m-2 s-1 becomes mm d-1.
"""

from __future__ import annotations

from differland_dist.errors import DataValidationError
from differland_dist.vocabulary.units import udunits

#: Water: a mass per area and a depth (1 kg m-2 = 1 mm).
_WATER = ("kg m-2", "mm")


def _unit(text: str, what: str, source: str):
    # imported here: cf_units loads the UDUNITS-2 library, needed only by these importers
    import cf_units

    try:
        return cf_units.Unit(text)
    except ValueError:
        raise DataValidationError([f"{what}: units {text!r} are not UDUNITS-2 units"],
                                  source=source) from None


def conversion(attrs: dict, store_units: str, what: str, source: str) -> tuple[float, float]:
    """(scale, offset) with ``store = scale * value + offset`` for a variable with attributes
    ``attrs`` (its ``units``) going to ``store_units`` (the schema's, e.g. ``gC m-2 d-1``).

    Raises DataValidationError naming ``what`` (e.g. ``"era5.nc: t2m"``) when the units are
    missing, not UDUNITS or not convertible."""
    if "units" not in attrs or str(attrs["units"]).strip() == "":
        raise DataValidationError([f"{what}: no units attribute; expected units convertible to "
                                   f"{store_units!r} (add one: nothing is assumed)"], source=source)
    src = _unit(str(attrs["units"]), what, source)
    dst = _unit(udunits(store_units), f"store units of {what}", source)
    if not src.is_convertible(dst):
        for mass, depth in (_WATER, _WATER[::-1]):
            m, d = _unit(mass, what, source), _unit(depth, what, source)
            # per unit of water mass (or depth) on one side, of depth (or mass) on the other
            if (src / m).is_convertible(dst / d):
                return float((src / m).convert(1.0, dst / d)), 0.0
        raise DataValidationError([f"{what}: units {attrs['units']!r} cannot be converted to "
                                   f"{store_units!r}"], source=source)
    offset = float(src.convert(0.0, dst))
    scale = float(src.convert(1.0, dst)) - offset
    return scale, offset
