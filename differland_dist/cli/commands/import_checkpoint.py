"""``differland import-checkpoint``: published network pickle -> our safe checkpoint."""

from __future__ import annotations

NAME = "import-checkpoint"
HELP = "convert the paper's network pickle (allow-listed unpickling) to a safe .npz checkpoint"


def add_arguments(p):
    p.add_argument("pickle", help="path or URL of the published *.pickle")
    p.add_argument("--out", required=True, help="output checkpoint path or URL (.npz)")
    p.add_argument("--predictors", default="PFT,CLIM,SOIL,AGE",
                   help="predictor sets the network was trained with (recorded in the checkpoint; "
                        "their number of predictors must match the network's inputs)")
    p.add_argument("--storage-options", default="{}", help="JSON fsspec options for the URLs")


def run(args) -> int:
    from differland_dist.data.batch import predictor_names
    from differland_dist.data.store import parse_storage_options
    from differland_dist.errors import CheckpointError, ConfigError, DifferlandError
    from differland_dist.location import Location
    from differland_dist.network.io import save_network
    from differland_dist.network.mlp import infer_config
    from differland_dist.network.published import load_published_network

    so = parse_storage_options(args.storage_options)
    sets = [s.strip() for s in args.predictors.split(",") if s.strip()]
    try:
        n_predictors = len(predictor_names(sets))
    except ConfigError as e:
        raise ConfigError(f"--predictors: {e}") from None
    if not sets:
        raise ConfigError("--predictors: expected a comma-separated list of predictor sets")
    try:
        data = Location(args.pickle, so).read_bytes()
    except FileNotFoundError:
        raise DifferlandError(f"{args.pickle}: not found") from None
    except OSError as e:
        raise DifferlandError(f"{args.pickle}: cannot read ({type(e).__name__}: {e})") from None
    net = load_published_network(data, source=args.pickle)
    n_in = int(net.embed[0].weights.shape[0])
    if n_in != n_predictors:
        raise CheckpointError(f"{args.pickle}: embedding layer 0 takes {n_in} predictors, but "
                              f"--predictors {','.join(sets)} gives {n_predictors}")
    cfg = infer_config(net)
    save_network(args.out, net, cfg, predictor_sets=sets,
                 extra={"imported_from": str(args.pickle)}, storage_options=so)
    print(f"imported {args.pickle}: embedding {[tuple(l.weights.shape) for l in net.embed]}, "
          f"heads 31/7/2 -> {args.out}")
    return 0
