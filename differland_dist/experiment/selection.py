"""Which members of a set are kept: the criterion (``keep_by`` of the experiment config) and
the loss each member is ranked by.

* ``dev_loss``: the dev loss of the network the member keeps (the project's default:
  selection on data the member did not fit);
* ``train_loss``: the summed training loss of the member's last complete epoch, the
  published ``batch_loss`` of ``calibration.py`` (the sum over one epoch's batches), by which
  the paper keeps the 10 of 20 runs that converged best on the training set.
"""

from __future__ import annotations

import math

from differland_dist.runs.layout import parse_metrics

#: The criteria ``keep_by`` may name.
KEEP_BY = ("dev_loss", "train_loss")


def last_epoch_train_loss(metrics_jsonl: str) -> float | None:
    """The sum of the ``loss`` of the train records of the last complete epoch in a run's
    ``metrics.jsonl`` text (records carry their ``epoch``, 1-based); None without epoch
    records. Epochs hold equal step counts, so the last epoch with the most records is the
    last complete one (a stopped run's partial epoch is passed over). After a fresh start
    (``on_nonfinite: reinitialise``) only the records after the last step-1 record count."""
    recs = parse_metrics(metrics_jsonl)
    train = [r for r in recs if r.get("split") == "train" and "epoch" in r]
    starts = [i for i, r in enumerate(train) if int(r.get("step", 0)) == 1]
    if starts:
        train = train[starts[-1]:]
    if not train:
        return None
    by: dict[int, list[float]] = {}
    for r in train:
        by.setdefault(int(r["epoch"]), []).append(r.get("loss"))
    # epochs have equal step counts: the last one with the most records is the last complete
    n = max(len(v) for v in by.values())
    e = max(k for k, v in by.items() if len(v) == n)
    vals = [v if v is not None else math.nan for v in by[e]]
    return float(sum(vals))


def rank_key(keep_by: str, dev_loss: float | None, train_loss: float | None, seed: int):
    """Sort key of one member: lower is better; missing or non-finite losses last, then seed."""
    if keep_by not in KEEP_BY:
        raise ValueError(f"keep_by: expected one of {KEEP_BY}, got {keep_by!r}")
    v = dev_loss if keep_by == "dev_loss" else train_loss
    return (v if v is not None and math.isfinite(v) else math.inf, seed)
