"""Import the paper's published network pickle through an allow-listed unpickler.

A pickle can run arbitrary code when loaded. The published file needs exactly four globals
(numpy.ndarray, numpy.dtype, numpy's array reconstructor, and JAX's array reconstructor);
anything else is refused before it is called. JAX's reconstructor is replaced by a local
function that rebuilds a plain numpy array, so no JAX internals run either.
"""

from __future__ import annotations

import io
import pickle  # only the Unpickler class, restricted below; we never write pickles
from typing import Any

import numpy as np
import pandas as pd

from differland_dist.errors import CheckpointError
from differland_dist.network.mlp import Dense, NetworkParams
from differland_dist.network.standardize import Standardizer

_np_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's multiarray._reconstruct


def _reconstruct_array(fun, args, arr_state, aval_state):
    if fun is not _np_reconstruct:
        raise CheckpointError(f"refused: array reconstructor calls {fun!r}")
    arr = fun(*args)
    arr.__setstate__(arr_state)
    return np.asarray(arr)


ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,  # same, numpy < 2 spelling
    ("jax._src.array", "_reconstruct_array"): _reconstruct_array,
}


class AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused to unpickle {module}.{name}: only "
                + ", ".join(f"{m}.{n}" for m, n in ALLOWED) + " are allowed") from None


def load_published_network(data: bytes, source: str = "<pickle>") -> NetworkParams:
    """Network parameters from the bytes of a published ``*.pickle`` (4-tuple of layer lists)."""
    try:
        obj = AllowListUnpickler(io.BytesIO(data)).load()
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    except Exception as e:
        raise CheckpointError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e
    if not (isinstance(obj, (tuple, list)) and len(obj) == 4):
        raise CheckpointError(f"{source}: expected a 4-tuple (embedding, process head, pool head, "
                              f"phenology head), got {type(obj).__name__}")

    def layers(part, what):
        if not isinstance(part, (list, tuple)) or not part:
            raise CheckpointError(f"{source}: {what} is not a list of layers")
        out = []
        for i, d in enumerate(part):
            if not (isinstance(d, dict) and {"weights", "biases"} <= set(d)):
                raise CheckpointError(f"{source}: {what} layer {i} lacks 'weights'/'biases'")
            try:
                out.append(Dense(np.asarray(d["weights"], np.float32), np.asarray(d["biases"], np.float32)))
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{source}: {what} layer {i}: weights/biases are not numeric "
                                      f"arrays ({e})") from None
        return out

    embed, dalec, pools, pheno = (layers(p, w) for p, w in zip(obj, ("embedding", "process head", "pool head", "phenology head")))
    for head, n_out, what in ((dalec, 31, "process head"), (pools, 7, "pool head"), (pheno, 2, "phenology head")):
        if len(head) != 1:
            raise CheckpointError(f"{source}: {what} must be one linear layer with {n_out} outputs, "
                                  f"got {len(head)} layers")
    check_shapes(embed, dalec[0], pools[0], pheno[0], source)
    return NetworkParams(tuple(embed), dalec[0], pools[0], pheno[0])


def check_shapes(embed: list[Dense], dalec: Dense, pools: Dense, pheno: Dense, source: str) -> None:
    """CheckpointError naming the layer and the shapes unless the layers fit together.

    Each layer is weights (n_in, n_out) with finite values and biases (n_out,); each embedding
    layer takes the previous one's outputs and all have one width W (what NetworkConfig
    records); the process and pool heads take (W, 31) and (W, 7), the phenology head
    (W + 1, 2) (the embedding plus the hemisphere feature).
    """
    named = [(f"embedding layer {i}", d) for i, d in enumerate(embed)]
    named += [("process head", dalec), ("pool head", pools), ("phenology head", pheno)]
    for what, d in named:
        w, b = d.weights, d.biases
        if w.ndim != 2 or 0 in w.shape:
            raise CheckpointError(f"{source}: {what}: weights must be a non-empty (n_in, n_out) "
                                  f"matrix, got shape {tuple(w.shape)}")
        if b.shape != (w.shape[1],):
            raise CheckpointError(f"{source}: {what}: biases of shape {tuple(b.shape)} do not fit "
                                  f"weights {tuple(w.shape)} (expected ({w.shape[1]},))")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise CheckpointError(f"{source}: {what}: weights or biases hold non-finite values")
    for i in range(1, len(embed)):
        prev, cur = embed[i - 1].weights.shape, embed[i].weights.shape
        if cur[0] != prev[1]:
            raise CheckpointError(f"{source}: embedding layer {i}: weights {tuple(cur)} take {cur[0]} "
                                  f"inputs, but embedding layer {i - 1} (weights {tuple(prev)}) "
                                  f"gives {prev[1]}")
    widths = [d.weights.shape[1] for d in embed]
    if len(set(widths)) > 1:
        raise CheckpointError(f"{source}: embedding layers have widths {widths}; the network "
                              "config records one width for every layer")
    width = widths[-1]
    for what, d, expected in (("process head", dalec, (width, 31)), ("pool head", pools, (width, 7)),
                              ("phenology head", pheno, (width + 1, 2))):
        if tuple(d.weights.shape) != expected:
            raise CheckpointError(f"{source}: {what}: weights {tuple(d.weights.shape)} do not fit the "
                                  f"embedding of width {width} (expected {expected})")


# -- the published predictor standardisation (predictor_mean_df_v6.csv / predictor_std_df_v6.csv)
#: CSV column (the driver's variable name) of each of our predictor names, where they differ.
CSV_COLUMNS = {"forest_age": "tree_age_000_filled", "lat": "lat_deg", "lon": "lon_deg"}
#: The CSV column of the hemisphere feature, sigmoid(latitude), when the CSVs hold it.
HEMISPHERE_COLUMN = "LAT_SIGMOID"
#: Rows of the CSVs: row r-1 holds run r's training-pixel statistics; this row the train+dev ones.
TRAIN_AND_DEV_ROW = 100
#: The vegetation-type predictors (percent in the published driver, fractions in our stores).
PFT_NAMES = ("NF", "DBF", "EBF", "MF", "SH", "SAV", "GRA", "WET", "CRO", "NVG")


def read_stat_csv(text: str, source: str):
    """A published statistics CSV (one row per run, one column per predictor) as a DataFrame;
    CheckpointError naming the file when it is not a CSV."""
    try:
        df = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as e:
        raise CheckpointError(f"{source}: cannot parse as CSV: {e}") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def published_standardisation(mean_df, std_df, names, row: int, *, pft_percent: bool = True,
                              hemisphere: tuple[float, float] | None = None,
                              sources: tuple[str, str] = ("mean CSV", "std CSV")):
    """The :class:`~differland_dist.network.standardize.Standardizer` of a published network.

    Args:
      mean_df, std_df: the published per-run statistics (``predictor_mean_df_v6.csv`` and
        ``predictor_std_df_v6.csv``): row ``row`` (run r: r - 1; train+dev: 100), columns
        named as the driver's variables.
      names: our predictor names in network order (without the hemisphere feature).
      pft_percent: the CSVs' PFT statistics are in percent (the published driver's units)
        while our stores hold fractions: their mean and std are divided by 100, so the network
        sees the same standardised inputs.
      hemisphere: (mean, std) of sigmoid(lat) when the CSVs have no ``LAT_SIGMOID`` column
        (e.g. computed from the run's training pixels, as the published calibration does).

    Returns a Standardizer over ``["hemisphere", *names]`` (float64).
    """
    for df, src in ((mean_df, sources[0]), (std_df, sources[1])):
        if not 0 <= int(row) < len(df):
            raise CheckpointError(f"{src}: row {row} asked for (run {int(row) + 1}, or "
                                  f"{TRAIN_AND_DEV_ROW} for train+dev), the file has rows "
                                  f"0..{len(df) - 1}")
    columns = [CSV_COLUMNS.get(n, n) for n in names]
    mean, std = [], []
    for df, src, out in ((mean_df, sources[0], mean), (std_df, sources[1], std)):
        want = list(columns) + ([HEMISPHERE_COLUMN] if hemisphere is None else [])
        missing = [c for c in want if c not in df.columns]
        if missing:
            hint = (f" (without {HEMISPHERE_COLUMN}, give a store to compute it from the run's "
                    "training pixels)" if missing == [HEMISPHERE_COLUMN] else "")
            raise CheckpointError(f"{src}: column(s) {missing} missing{hint}; columns: "
                                  f"{list(df.columns)}")
        out.extend(float(pd_value) for pd_value in df[want].iloc[int(row)].to_numpy(np.float64))
    h_mean, h_std = ((mean[-1], std[-1]) if hemisphere is None else hemisphere)
    mean, std = np.array(mean[:len(names)]), np.array(std[:len(names)])
    bad = [n for n, m, s in zip(names, mean, std) if not (np.isfinite(m) and np.isfinite(s) and s >= 0)]
    if bad or not (np.isfinite(h_mean) and np.isfinite(h_std)):
        raise CheckpointError(f"row {row}: non-finite or negative statistics for {bad or ['hemisphere']}")
    if pft_percent:
        pft = np.array([n in PFT_NAMES for n in names])
        mean = np.where(pft, mean / 100.0, mean)
        std = np.where(pft, std / 100.0, std)
    return Standardizer.of(("hemisphere", *names), np.r_[h_mean, mean], np.r_[h_std, std])
