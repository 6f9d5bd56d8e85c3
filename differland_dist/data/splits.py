"""The three splits, by patch: train (fit), dev (model selection, early stopping) and test
(never used in training or selection; only scored).

A store's ``split`` variable holds 0 = train, 1 = dev, 2 = test per pixel (constant within a
patch). Stores written before the three-split convention hold 0 = train, 1 = held out; they
open with 1 read as dev (and a warning), since their held-out patches were used to watch the
training loss, which is what dev is for.

A member of an experiment may draw its own train/dev partition from the store's non-test
patches with a seed, keeping the test patches fixed. A store imported from the paper's driver
also holds every published run's batch index (``run_simulation_idx_runs``, (pixel, run)):
``data.run`` = r then takes run r's own partition at open time (:func:`of_published_run`), as
the published calibration does: index < 0 test, 0..round(0.9 x max) train, above dev.
"""

from __future__ import annotations

import logging
from typing import Mapping, NamedTuple

import numpy as np

from differland_dist.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

TRAIN, DEV, TEST = 0, 1, 2
#: Split names by code.
NAMES = ("train", "dev", "test")
#: The store attribute that marks the three-split convention.
CONVENTION_ATTR = "split_convention"
CONVENTION = "train=0,dev=1,test=2"
#: The store variable with every published run's batch index, (pixel, run); column r-1 = run r.
RUN_TABLE_VAR = "run_simulation_idx_runs"
#: Share of the largest non-negative index that trains (the published rule).
TRAIN_FRACTION = 0.9


class PatchSplit(NamedTuple):
    """Sorted patch ids of each split."""

    train: np.ndarray
    dev: np.ndarray
    test: np.ndarray

    def of(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def counts(self) -> str:
        return f"{len(self.train)} train / {len(self.dev)} dev / {len(self.test)} test patches"


def check_fractions(dev_fraction: float, test_fraction: float) -> None:
    """ConfigError unless both fractions are in [0, 1) and leave room for training."""
    for name, f in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(f, (int, float)) and 0.0 <= f < 1.0):
            raise ConfigError(f"{name}: must be in [0, 1), got {f}")
    if dev_fraction + test_fraction >= 1.0:
        raise ConfigError(f"dev_fraction + test_fraction must be < 1, got {dev_fraction + test_fraction}")


def assign(n_patches: int, dev_fraction: float, test_fraction: float,
           rng: np.random.Generator) -> np.ndarray:
    """(n_patches,) int8 split codes: round(fraction × n) patches (at least one for a fraction
    > 0) drawn for test, then for dev; at least one training patch is always kept."""
    check_fractions(dev_fraction, test_fraction)
    codes = np.zeros(n_patches, np.int8)
    if n_patches < 2:
        return codes
    # a fraction > 0 gives at least one patch, as long as one training patch remains
    n_test = min(max(int(round(test_fraction * n_patches)), int(test_fraction > 0)), n_patches - 1)
    n_dev = min(max(int(round(dev_fraction * n_patches)), int(dev_fraction > 0)),
                n_patches - 1 - n_test)
    order = rng.permutation(n_patches)
    codes[order[:n_test]] = TEST
    codes[order[n_test:n_test + n_dev]] = DEV
    return codes


def patch_codes(patch_slices: Mapping[int, slice], split: np.ndarray) -> dict[int, int]:
    """patch id -> split code (the code of the patch's first pixel; validation checks that a
    patch's pixels share one code)."""
    return {int(p): int(split[s.start]) for p, s in patch_slices.items()}


def from_store(patch_slices: Mapping[int, slice], split: np.ndarray, attrs: Mapping,
               source: str = "store") -> PatchSplit:
    """The store's split as written (old two-split stores: 1 read as dev, with a warning)."""
    codes = patch_codes(patch_slices, split)
    if CONVENTION_ATTR not in attrs and any(c == DEV for c in codes.values()) \
            and not any(c == TEST for c in codes.values()):
        log.warning("%s: written before the train/dev/test convention (split 0/1): its held-out "
                    "patches (1) are read as dev; it has no test patches", source)
    by = {c: np.array(sorted(p for p, k in codes.items() if k == c), np.int64) for c in (TRAIN, DEV, TEST)}
    return PatchSplit(by[TRAIN], by[DEV], by[TEST])


def redraw(written: PatchSplit, seed: int, dev_fraction: float | None = None) -> PatchSplit:
    """A member's own train/dev partition of the store's non-test patches, drawn with ``seed``
    (test patches fixed). ``dev_fraction`` of the non-test patches go to dev (default: the
    store's own dev share of them)."""
    pool = np.sort(np.concatenate([written.train, written.dev]))
    if dev_fraction is None:
        dev_fraction = len(written.dev) / max(1, len(pool))
    if not 0.0 <= dev_fraction < 1.0:
        raise ConfigError(f"data.dev_fraction: must be in [0, 1), got {dev_fraction}")
    n_dev = min(int(round(dev_fraction * len(pool))), max(0, len(pool) - 1))
    rng = np.random.default_rng([int(seed), 0x5E7])
    dev = np.sort(rng.choice(pool, size=n_dev, replace=False)) if n_dev else np.array([], np.int64)
    train = np.setdiff1d(pool, dev)
    return PatchSplit(train.astype(np.int64), dev.astype(np.int64), written.test)


def for_training(split: PatchSplit, train_on: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(patches that train, patches whose loss is evaluated) under ``data.train_on``:
    ``"train"``: the split's train and dev; ``"train+dev"``: train and dev together, sorted,
    and nothing evaluated (the paper's final runs for SHAP, ``compute_shap.py -d``, whose
    standardisation is over train + dev too: row 100 of its CSVs). Test never trains."""
    if train_on == "train":
        return split.train, split.dev
    if train_on == "train+dev":
        both = np.sort(np.concatenate([split.train, split.dev])).astype(np.int64)
        return both, np.array([], np.int64)
    raise ConfigError(f"data.train_on: expected train or train+dev, got {train_on!r}")


def published_order(patch_slices: Mapping[int, slice], run_table: np.ndarray, run: int,
                    patches: np.ndarray) -> np.ndarray:
    """``patches`` in published run ``run``'s batch order: by the run's index value (the
    order in which ``calibration.py`` visits its batches every epoch), ties by patch id."""
    col = np.asarray(run_table)[:, int(run) - 1]
    key = np.array([col[patch_slices[int(p)].start] for p in patches], np.float64)
    return np.asarray(patches, np.int64)[np.lexsort((np.asarray(patches), key))]


def pixel_codes(patch: np.ndarray, split: PatchSplit) -> np.ndarray:
    """(pixel,) int8 split code of every pixel under a (possibly redrawn) patch split."""
    codes = np.full(int(np.max(patch)) + 1 if patch.size else 0, -1, np.int8)
    for c, ids in enumerate(split):
        codes[np.asarray(ids, np.int64)] = c
    return codes[np.asarray(patch, np.int64)]


def run_split_codes(index: np.ndarray, threshold: int) -> np.ndarray:
    """int8 split codes of published batch indices: < 0 test, <= ``threshold`` train, else dev."""
    index = np.asarray(index)
    return np.where(index < 0, TEST, np.where(index <= threshold, TRAIN, DEV)).astype(np.int8)


def of_published_run(patch_slices: Mapping[int, slice], run_table: np.ndarray | None, run: int,
                     train_fraction: float = TRAIN_FRACTION, source: str = "store") -> PatchSplit:
    """The patch split of published run ``run`` (1-based) from the store's (pixel, run) table.

    Every store patch must be one batch of that run (one index value per patch; the paper's
    runs renumber the same cells, so this holds for all 100 runs): otherwise
    DataValidationError names the patches and says to import with ``--run``.
    """
    if run_table is None:
        raise ConfigError(f"data.run={run}: {source} holds no per-run batch index ({RUN_TABLE_VAR}); "
                          "only stores imported with `differland import-netcdf` have one (use "
                          "data.split_seed to redraw train/dev instead)")
    run_table = np.asarray(run_table)
    n_runs = run_table.shape[1]
    if not 1 <= int(run) <= n_runs:
        raise ConfigError(f"data.run: {source} holds runs 1..{n_runs}, got {run}")
    col = np.asarray(run_table[:, int(run) - 1], np.float64)
    missing = np.flatnonzero(~np.isfinite(col))
    if missing.size:
        raise DataValidationError([f"{RUN_TABLE_VAR}: run {run} has no index at {missing.size} "
                                   f"pixel(s) of the store (first pixel {int(missing[0])}): the run "
                                   "leaves out pixels the store holds; import with --run "
                                   f"{run} to train on its pixels"], source=source)
    mixed = [p for p, s in patch_slices.items() if col[s].min() != col[s].max()]
    if mixed:
        listed = ", ".join(f"patch {p} (pixels {patch_slices[p].start}..{patch_slices[p].stop - 1})"
                           for p in sorted(mixed)[:8])
        raise DataValidationError([f"{RUN_TABLE_VAR}: run {run} splits {len(mixed)} store "
                                   f"patch(es) over several batches: {listed}; its batches are not "
                                   f"the store's patches: import with --run {run}"], source=source)
    first = {int(p): col[s.start] for p, s in patch_slices.items()}
    fit = [v for v in first.values() if v >= 0]
    if not fit:
        raise DataValidationError([f"{RUN_TABLE_VAR}: run {run} has no index >= 0 (no training "
                                   "pixels)"], source=source)
    threshold = int(np.round(max(fit) * float(train_fraction)))
    by = {c: [] for c in (TRAIN, DEV, TEST)}
    for p, v in first.items():
        by[int(run_split_codes(np.array([v]), threshold)[0])].append(p)
    out = PatchSplit(*(np.array(sorted(by[c]), np.int64) for c in (TRAIN, DEV, TEST)))
    log.info("%s: run %d's split (train index <= %d): %s", source, run, threshold, out.counts())
    return out


def of_run(patch_slices: Mapping[int, slice], split: np.ndarray, attrs: Mapping,
           split_seed: int | None, dev_fraction: float | None = None, source: str = "store",
           run: int | None = None, run_table: np.ndarray | None = None) -> PatchSplit:
    """The patch split a run trained with: the store's, published run ``run``'s (``data.run``,
    from ``run_table``), or the one ``data.split_seed`` drew from either."""
    if run is not None:
        written = of_published_run(patch_slices, run_table, run,
                                   float(attrs.get("train_fraction", TRAIN_FRACTION)), source)
    else:
        written = from_store(patch_slices, split, attrs, source)
    return written if split_seed is None else redraw(written, split_seed, dev_fraction)


def of_data(store, data) -> PatchSplit:
    """The patch split a :class:`~differland_dist.config.DataConfig` asks of an opened
    :class:`~differland_dist.data.store.PixelStore`: ``data.run`` (a published run), then
    ``data.split_seed`` (a redraw of train/dev)."""
    run = getattr(data, "run", None)
    return of_run(store.patch_slices, store.split, store.attrs, data.split_seed, data.dev_fraction,
                  store.url, run=run, run_table=store.run_table if run is not None else None)
