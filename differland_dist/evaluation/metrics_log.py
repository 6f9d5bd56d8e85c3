"""A run's training log (``RUN_DIR/metrics.jsonl``) as training curves: the training and
held-out records and the loss terms they carry. The lines are parsed by the run directory's
one reader (:func:`differland_dist.runs.layout.parse_metrics`)."""

from __future__ import annotations

from typing import NamedTuple

from differland_dist.runs.layout import METRICS, parse_metrics
from differland_dist.storage.location import Location
from differland_dist.vocabulary import streams


class TrainingLog(NamedTuple):
    """train, held_out: the records (dicts with ``step``, ``loss`` and the terms, flattened);
    terms: the loss term names present, in the loss's order."""

    train: list[dict]
    held_out: list[dict]
    terms: list[str]


def training_log(text: str, source: str = METRICS) -> TrainingLog:
    """The training curves of ``metrics.jsonl`` text.

    Each line is a JSON object with ``step`` and ``loss``; held-out lines have
    ``"split": "dev"`` (``"test"`` in runs made before the three splits). Terms are the loss
    terms (``differland_dist.vocabulary.streams.terms`` names, the loss's order) present, at
    the top level or inside a ``terms`` object."""
    train, held_out = [], []
    for rec in parse_metrics(text, source):
        if "step" not in rec:
            continue
        if isinstance(rec.get("terms"), dict):
            rec = {**{k: v for k, v in rec.items() if k != "terms"}, **rec["terms"]}
        (held_out if rec.get("split") in ("dev", "test") else train).append(rec)
    present = {k for r in train + held_out for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    terms = [t.name for _, t in streams.terms() if t.name in present]
    return TrainingLog(train, held_out, terms)


def read_training_log(run_dir: Location) -> TrainingLog | None:
    """The training curves of ``RUN_DIR/metrics.jsonl``; None if the run has none."""
    loc = run_dir.join(METRICS)
    try:
        text = loc.read_bytes().decode()
    except FileNotFoundError:
        return None
    return training_log(text, loc.url)
