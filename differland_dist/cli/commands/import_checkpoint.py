"""``differland import-checkpoint``: published network pickle -> our safe checkpoint."""

from __future__ import annotations

NAME = "import-checkpoint"
HELP = "convert the paper's network pickle (allow-listed unpickling) to a safe .npz checkpoint"


def add_arguments(p):
    p.add_argument("pickle", help="path or URL of the published *.pickle")
    p.add_argument("--out", required=True, help="output checkpoint path or URL (.npz)")
    p.add_argument("--predictors", default="PFT,CLIM,SOIL,AGE",
                   help="predictor sets the network was trained with (recorded in the checkpoint)")
    p.add_argument("--storage-options", default="{}", help="JSON fsspec options for the URLs")


def run(args) -> int:
    import json

    import fsspec

    from differland_dist.network.io import save_network
    from differland_dist.network.mlp import infer_config
    from differland_dist.network.published import load_published_network

    so = json.loads(args.storage_options)
    with fsspec.open(args.pickle, "rb", **so) as f:
        data = f.read()
    net = load_published_network(data, source=args.pickle)
    cfg = infer_config(net)
    save_network(args.out, net, cfg, predictor_sets=args.predictors.split(","),
                 extra={"imported_from": str(args.pickle)}, storage_options=so)
    print(f"imported {args.pickle}: embedding {[tuple(l.weights.shape) for l in net.embed]}, "
          f"heads 31/7/2 -> {args.out}")
    return 0
