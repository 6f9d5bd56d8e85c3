"""``differland import-checkpoint``: published network pickle -> our safe checkpoint.

With the published predictor statistics (``--mean-csv``/``--std-csv``) it writes a complete
trained-model checkpoint (network, standardisation, config) that ``differland infer`` and
``evaluate`` take as they take one of our runs; without them, the network alone.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from differland_dist.cli import flags
from differland_dist.data import splits
from differland_dist.errors import CheckpointError, ConfigError, DifferlandError
from differland_dist.storage.checkpoint import CheckpointRecord
from differland_dist.storage.location import Location

NAME = "import-checkpoint"
HELP = "convert the paper's network pickle (allow-listed unpickling) to a safe .npz checkpoint"


def add_arguments(p):
    p.add_argument("pickle", help="path or URL of the published *.pickle")
    p.add_argument("--out", required=True, help="output checkpoint path or URL (.npz)")
    flags.add_list(p, "--predictors", default=["PFT", "CLIM", "SOIL", "AGE"], metavar="SET",
                   help="predictor sets the network was trained with (recorded in the checkpoint; "
                        "their number of predictors must match the network's inputs; default "
                        "PFT CLIM SOIL AGE)")
    p.add_argument("--mean-csv", metavar="FILE",
                   help="the published predictor means (predictor_mean_df_v6.csv): with --std-csv, "
                        "writes a complete checkpoint for infer/evaluate")
    p.add_argument("--std-csv", metavar="FILE", help="the published predictor stds (predictor_std_df_v6.csv)")
    p.add_argument("--run", type=int, default=1, metavar="R",
                   help="the network's run: CSV row R-1 holds its training pixels' statistics (default 1)")
    p.add_argument("--train-and-dev", action="store_true",
                   help="the network was trained on train+dev: use CSV row 100")
    p.add_argument("--csv-pft-units", choices=("percent", "fraction"), default="percent",
                   help="units of the PFT statistics in the CSVs (default percent, the published "
                        "driver's); percent ones are divided by 100 to fit our fraction stores")
    p.add_argument("--store", metavar="URL",
                   help="the imported driver store (recorded as data.url; without a LAT_SIGMOID "
                        "column in the CSVs, the hemisphere statistics come from its training pixels)")
    p.add_argument("--config", metavar="YAML",
                   help="base config recorded in the checkpoint (default: configs' defaults with the "
                        "published model, closed_budget false)")
    p.add_argument("--storage-options", default="{}", help="JSON fsspec options for the URLs")
    flags.add_json(p)


def _read_text(loc: Location, what: str) -> str:
    try:
        return loc.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DifferlandError(f"{loc.url}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DifferlandError(f"{loc.url}: cannot read {what} ({type(e).__name__}: {e})") from None


def _hemisphere_from_store(store_loc: Location, run: int | None) -> tuple[float, float]:
    """(mean, std) of sigmoid(lat) over the store's training pixels (run ``run``'s when the
    store holds the per-run index), as the published calibration standardises it."""
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    from differland_dist.data.store import open_store
    from differland_dist.network.standardize import hemisphere_feature

    store = open_store(store_loc, validate=False)
    part = store.run_split(run) if (run is not None and store.run_table is not None) else store.patch_split
    codes = splits.pixel_codes(store.patch, part)
    lat = np.asarray(store.array("lat")[:], np.float32)[codes == splits.TRAIN]
    h = np.asarray(hemisphere_feature(lat), np.float32)
    return float(h.mean(dtype=np.float64)), float(h.std(dtype=np.float64))


def _checked_args(args) -> tuple[list[str], list[str], int]:
    """(predictor sets, predictor names, CSV row) from the flags, or a ConfigError naming the flag."""
    from differland_dist.data.batch import predictor_names
    from differland_dist.network.published import TRAIN_AND_DEV_ROW

    sets = flags.split_list(args.predictors)
    try:
        names = predictor_names(sets)
    except ConfigError as e:
        raise ConfigError(f"--predictors: {e}") from None
    if not sets:
        raise ConfigError("--predictors: expected a comma-separated list of predictor sets")
    if bool(args.mean_csv) != bool(args.std_csv):
        raise ConfigError("--mean-csv and --std-csv: give both (or neither)")
    if not 1 <= args.run <= TRAIN_AND_DEV_ROW:
        raise ConfigError(f"--run: must be in 1..{TRAIN_AND_DEV_ROW}, got {args.run}")
    return sets, names, TRAIN_AND_DEV_ROW if args.train_and_dev else args.run - 1


def _read_network(pickle: Location, names: list[str], sets: list[str]):
    """The published network, its embedding checked against the predictors."""
    from differland_dist.network.published import load_published_network

    try:
        data = pickle.read_bytes()
    except FileNotFoundError:
        raise DifferlandError(f"{pickle.url}: not found") from None
    except OSError as e:
        raise DifferlandError(f"{pickle.url}: cannot read ({type(e).__name__}: {e})") from None
    net = load_published_network(data, source=pickle.url)
    n_in = int(net.embed[0].weights.shape[0])
    if n_in != len(names):
        raise CheckpointError(f"{pickle.url}: embedding layer 0 takes {n_in} predictors, but "
                              f"--predictors {','.join(sets)} gives {len(names)}")
    return net


def _recorded_config(args, sets: list[str]) -> dict:
    """The config the checkpoint records: --config (or the published model's defaults) with
    the predictors, the store (never its credentials) and the run."""
    from differland_dist.config import from_dict, read_yaml

    base = read_yaml(args.config) if args.config else {"model": {"closed_budget": False}}
    base.setdefault("data", {})
    base["data"]["predictors"] = list(sets)
    if args.store:
        base["data"]["url"] = str(args.store)
        base["data"]["storage_options"] = {}  # never the credentials
    if not args.train_and_dev:
        base["data"]["run"] = int(args.run)
    try:
        return from_dict(base).to_dict()
    except ConfigError as e:
        raise ConfigError(f"{args.config or 'config'}: {e}") from None


def _standardisation(args, stats, sets: list[str], names: list[str], row: int, at):
    """(standardizer, the checkpoint record's fields it sets) from the published CSVs ``stats``
    (mean, std)."""
    from differland_dist.network.published import HEMISPHERE_COLUMN, published_standardisation

    mean_df, std_df = stats
    hemi = None
    if HEMISPHERE_COLUMN not in mean_df.columns or HEMISPHERE_COLUMN not in std_df.columns:
        if not args.store:
            raise CheckpointError(f"{args.mean_csv}: no {HEMISPHERE_COLUMN} column; give "
                                  "--store to compute the hemisphere statistics from the run's "
                                  "training pixels")
        hemi = _hemisphere_from_store(at(args.store), None if args.train_and_dev else args.run)
    std = published_standardisation(mean_df, std_df, names, row,
                                    pft_percent=args.csv_pft_units == "percent",
                                    hemisphere=hemi, sources=(args.mean_csv, args.std_csv))
    record = {"kind": "training", "step": 0, "config": _recorded_config(args, sets),
              "standardisation": {"mean_csv": str(args.mean_csv), "std_csv": str(args.std_csv),
                                  "row": int(row), "pft_units": args.csv_pft_units,
                                  "hemisphere": ("store training pixels" if hemi is not None
                                                 else HEMISPHERE_COLUMN)}}
    return std, record


def run(args) -> int:
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    from differland_dist.data.store import parse_storage_options
    from differland_dist.network.io import save_network
    from differland_dist.network.mlp import infer_config
    from differland_dist.network.published import read_stat_csv

    so = parse_storage_options(args.storage_options)

    def at(url: str) -> Location:  # every URL of the command is reached with --storage-options
        return Location(url, so)

    sets, names, row = _checked_args(args)
    stats = None
    if args.mean_csv:  # every input is read and checked before the conversion
        stats = (read_stat_csv(_read_text(at(args.mean_csv), "mean CSV"), args.mean_csv),
                 read_stat_csv(_read_text(at(args.std_csv), "std CSV"), args.std_csv))
    net = _read_network(at(args.pickle), names, sets)
    record = CheckpointRecord(kind="network", predictor_sets=tuple(sets), imported_from=str(args.pickle))
    std = None
    if stats is not None:
        std, fields = _standardisation(args, stats, sets, names, row, at)
        record = dataclasses.replace(record, **fields)
    save_network(at(args.out), net, infer_config(net), record=record, standardizer=std)
    _report(args, net, sets, row, std)
    return 0


def _report(args, net, sets: list[str], row: int, std) -> None:
    what = (f"with CSV row {row} standardisation ({'train+dev' if args.train_and_dev else f'run {args.run}'})"
            if std is not None else "network only (no standardisation: give --mean-csv/--std-csv "
                                    "for infer/evaluate)")
    if args.json:
        print(json.dumps({"pickle": str(args.pickle), "out": str(args.out),
                          "embedding": [list(l.weights.shape) for l in net.embed],
                          "predictor_sets": sets,
                          "standardisation_row": int(row) if std is not None else None}))
        return
    print(f"imported {args.pickle}: embedding {[tuple(l.weights.shape) for l in net.embed]}, "
          f"heads 31/7/2, {what} -> {args.out}")
