"""Units strings of the tables (parameters, model outputs, observation streams) as UDUNITS-2.

Kept free of JAX and of every other module, so the store schema and the stream table can use it
without importing the model.
"""

from __future__ import annotations

#: Table units that UDUNITS-2 spells differently. Carbon masses are grams (the "carbon" goes
#: into ``long_name``/``standard_name``, as CF does); the SIF proxy is in the units of its
#: calibration target LCSPP (mW m-2 nm-1 sr-1).
_UDUNITS = {
    "SIF units": "mW m-2 nm-1 sr-1",
    "gC m-2 d-1 per SIF unit": "g m-2 d-1 (mW m-2 nm-1 sr-1)-1",
    "gC hPa kgH2O-1": "g hPa kg-1",
    # sqrt(hPa) has no UDUNITS form (integer powers only): kept readable and deliberately
    # unparseable, so no CF tool converts it wrongly
    "gC hPa^0.5 kgH2O-1": "g hPa^(1/2) kg-1",
}


def udunits(units: str) -> str:
    """A units string of the tables (parameters, outputs, observation streams) as a UDUNITS-2
    string (``gC`` -> ``g``)."""
    if units in _UDUNITS:
        return _UDUNITS[units]
    return " ".join("g" if t == "gC" else "g-1" if t == "gC-1" else t for t in units.split())
