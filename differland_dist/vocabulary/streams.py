"""The observation streams: one row per stream, the single source of what a stream is.

Adding a stream is one :class:`Stream` row here plus its physics (the model outputs it compares
with). Everything else derives from :data:`STREAMS`:

* the loss (``loss/terms.py``): one term per row (``Stream.term``) plus its ``extra_terms``,
  dispatched on ``aggregation`` and ``level``, then the two physical penalties;
* the store schema (``data.schema.STREAMS``: label order, default product, units, range,
  level) and validation's per-stream ranges;
* evaluation's comparison rules (``evaluation.streams.RULES``; both aggregate with
  ``vocabulary.aggregation``) and the inference output series that hold each stream's model
  side (``vocabulary.series.stream_series``).

The row order is the published loss's term order (the order terms are computed and summed);
``Stream.label`` is the stream's place in the published label layout, where the golden files'
labels (P, T, 24) hold the value then the weight of each stream in :func:`label_order`. A
batch carries them by stream name (``differland_dist.vocabulary.labels.Labels``, which alone converts
to and from that layout).

Aggregations (how the model side meets the observations, after warm-up):

* ``monthly``: every observed step;
* ``annual``: means over whole years, where every step of the year is observed;
* ``static``: one value per pixel (the observation at step 0) vs the model's time mean;
* ``anomaly``: the model series minus its mean over the pixel's observed steps.

Levels: ``pixel`` compares pixels; ``patch`` compares patch means (over valid pixels).
"""

from __future__ import annotations

from typing import NamedTuple

from differland_dist.vocabulary.units import udunits

AGGREGATIONS = ("monthly", "annual", "static", "anomaly")
LEVELS = ("pixel", "patch")


class Term(NamedTuple):
    """A loss term on a stream: its name, aggregation and paper weight."""

    name: str
    aggregation: str
    weight: float


class Stream(NamedTuple):
    """One observation stream.

    Attributes:
      name: the stream (and its main loss term's) name.
      label: its value/weight pair in the published label layout (columns ``2 * label`` and
        ``2 * label + 1``, see ``Labels.from_published``); the next free number for a new stream.
      units: the units its observations are stored in (the store's ``units`` attribute; see
        :attr:`cf_units` for the UDUNITS-2 spelling).
      lo, hi: the physically plausible range of its values, in ``units``.
      level: ``pixel`` or ``patch``.
      outputs: DALEC outputs (``vocabulary.dalec_io.OUTPUTS`` names) summed, in this order, for
        the model side (this module does not import the model, so the store layer needs no
        JAX: the series catalogue, ``vocabulary.series``, checks them at import, as
        ``tests/test_streams.py`` does).
      aggregation: one of :data:`AGGREGATIONS` (the main term's and evaluation's).
      weight: the main term's paper weight.
      products: store products of the stream, the default first (``obs_<product>``).
      assimilated: whether the main term is on by default (the paper does not assimilate VOD;
        such a stream's default product is then off too).
      extra_terms: further loss terms on the same observations (NBE's interannual term).
      edc_gate: the one stream whose weight at the first step switches the EDC penalty on or
        off per pixel (LAI, as published).
    """

    name: str
    label: int
    units: str
    lo: float
    hi: float
    level: str
    outputs: tuple[str, ...]
    aggregation: str
    weight: float
    products: tuple[str, ...]
    assimilated: bool = True
    extra_terms: tuple[Term, ...] = ()
    edc_gate: bool = False

    @property
    def default_product(self) -> str:
        return self.products[0]

    @property
    def cf_units(self) -> str:
        """``units`` as a UDUNITS-2 string (as the inference outputs spell it)."""
        return udunits(self.units)

    @property
    def term(self) -> Term:
        """The main loss term."""
        return Term(self.name, self.aggregation, self.weight)

    @property
    def terms(self) -> tuple[Term, ...]:
        return (self.term, *self.extra_terms)


_FLUX_ALT = ("10percent", "50percent")  # FLUXNET cells by the site PFT's cover

#: The 12 streams, in the published loss's term order (``label``: the label layout).
STREAMS: tuple[Stream, ...] = (
    Stream("sif", 0, "SIF units", -5, 10, "pixel", ("SIF",), "monthly", 400.0, ("sif",)),
    Stream("lai", 2, "m2 m-2", 0, 15, "pixel", ("lai",), "monthly", 10.0, ("lai", "lai_copernicus"),
           edc_gate=True),
    Stream("biomass", 4, "gC m-2", 0, 1e5, "pixel",
           ("next_labile_pool", "next_foliar_pool", "next_wood_pool", "next_root_pool"),
           "annual", 5e-5, ("biomass", "biomass_ib")),
    Stream("som", 6, "gC m-2", 0, 2e5, "pixel", ("next_som_pool",), "static", 3e-6, ("som",)),
    Stream("nbe", 1, "gC m-2 d-1", -50, 50, "patch", ("nbe",), "monthly", 3000.0,
           ("nbe", "nbe_cams"), extra_terms=(Term("nbe_iav", "annual", 3000.0 * 3.46),)),
    Stream("fire", 5, "gC m-2 d-1", 0, 100, "patch", ("total_fire_combust",), "monthly", 1000.0,
           ("fire", "fire_cms")),
    Stream("ewt", 3, "mm", -5000, 5000, "patch", ("next_water_pool",), "anomaly", 0.2, ("ewt",)),
    Stream("vod", 7, "1", 0, 5, "pixel", ("vod",), "annual", 100.0, ("vod",), assimilated=False),
    Stream("gpp_flux", 8, "gC m-2 d-1", -5, 50, "pixel", ("gpp",), "monthly", 100.0,
           ("gpp_flux", *(f"gpp_flux_{a}" for a in _FLUX_ALT))),
    Stream("reco_flux", 9, "gC m-2 d-1", -5, 50, "pixel", ("gpp", "nee"), "monthly", 100.0,
           ("reco_flux", *(f"reco_flux_{a}" for a in _FLUX_ALT))),
    Stream("et_flux", 10, "mm d-1", -5, 30, "pixel", ("ET",), "monthly", 100.0,
           ("et_flux", *(f"et_flux_{a}" for a in _FLUX_ALT))),
    Stream("et_gleam", 11, "mm d-1", -5, 30, "pixel", ("ET",), "monthly", 1.0, ("et_gleam",)),
)

#: The physical penalties (no stream): the water-balance violation and the ecological
#: dynamics constraints (EDC; switched per pixel by the LAI weight at the first step).
PENALTIES: tuple[Term, ...] = (Term("violation", "penalty", 400.0), Term("edc", "penalty", 10.0))


def check(streams: tuple[Stream, ...] = STREAMS) -> None:
    """Raise ValueError for an inconsistent table (a programming error, checked at import)."""
    seen: set[str] = set()
    for s in streams:
        for t in s.terms:
            if t.name in seen:
                raise ValueError(f"streams: term name {t.name!r} used twice")
            seen.add(t.name)
            if t.aggregation not in AGGREGATIONS:
                raise ValueError(f"streams: {t.name}: aggregation {t.aggregation!r}, expected "
                                 f"one of {AGGREGATIONS}")
            if t.aggregation == "static" and s.level != "pixel":
                raise ValueError(f"streams: {t.name}: static terms are pixel-level")
            if t.aggregation == "anomaly" and s.level != "patch":
                raise ValueError(f"streams: {t.name}: anomaly terms are patch-level")
        if s.level not in LEVELS:
            raise ValueError(f"streams: {s.name}: level {s.level!r}, expected one of {LEVELS}")
        if not s.outputs:
            raise ValueError(f"streams: {s.name}: no model outputs")
        if not s.products or not s.lo < s.hi:
            raise ValueError(f"streams: {s.name}: needs a product and lo < hi")
    if sum(s.edc_gate for s in streams) != 1:
        raise ValueError(f"streams: {sum(s.edc_gate for s in streams)} rows with edc_gate, expected one")
    if sorted(s.label for s in streams) != list(range(len(streams))):
        raise ValueError(f"streams: labels {[s.label for s in streams]} are not 0..{len(streams) - 1}")
    if seen & {p.name for p in PENALTIES}:
        raise ValueError("streams: a term is named like a physical penalty")


check()


def label_order(streams: tuple[Stream, ...] | None = None) -> tuple[Stream, ...]:
    """The streams in label-layout order (``STREAMS`` when not given, read at call time)."""
    return tuple(sorted(STREAMS if streams is None else streams, key=lambda s: s.label))


def edc_gate(streams: tuple[Stream, ...] | None = None) -> Stream:
    """The stream whose first-step weight switches the EDC penalty per pixel (``STREAMS`` when
    not given, read at call time)."""
    return next(s for s in (STREAMS if streams is None else streams) if s.edc_gate)


def terms(streams: tuple[Stream, ...] | None = None) -> tuple[tuple[Stream | None, Term], ...]:
    """Every loss term in order: (its stream, the term) per stream row, then (None, penalty)."""
    rows = STREAMS if streams is None else streams
    return (*((s, t) for s in rows for t in s.terms), *((None, p) for p in PENALTIES))


STREAM_NAMES = tuple(s.name for s in label_order())
STREAM_INDEX = {s.name: s.label for s in STREAMS}
BY_NAME = {s.name: s for s in STREAMS}
