"""Where a learnt map's PFT pattern comes from: the untrained network's maps against the learnt
ones (docs/analysis.md, "What changed the PFT bias").

For an experiment on a synthetic store: the variance partition (the analysis' recipe) of
untrained networks' parameter maps at each ``--scales`` value of ``network.head_init_scale``,
of the full set's kept members, of their ensemble mean and of the truth; and of the part of the
ensemble mean that the truth does not explain (its residual after regressing on the true map).
The partition standardises each map, so it is the same at every scale (computed once per
untrained network); what the scale changes is the untrained pattern's amplitude (``sd_over_truth``: the map's spatial sd over the truth's, in
the network's unbounded space).

    python benchmarks/init_pattern.py exp_truth --params moisture_factor leaf_lifespan \
        --json benchmarks/results/init_pattern.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # random_checkpoint, a test fixture


def _partition(maps, names, data, iterations):
    from differland_dist.analysis.partition import variance_partition

    return variance_partition(maps, names, data.predictors, data.patch, max_iter=iterations)["parameters"]


def _row(maps, truth, names, vp):
    """Per parameter: r and amplitude (spatial sd) against the truth, and the partition ``vp``."""
    import numpy as np

    return {n: {"r_truth": float(np.corrcoef(maps[:, j], truth[:, j])[0, 1]),
                "sd_over_truth": float(maps[:, j].std() / truth[:, j].std()),
                **{k: float(v) for k, v in vp[n].items()}} for j, n in enumerate(names)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment")
    ap.add_argument("--params", nargs="+", default=["moisture_factor", "leaf_lifespan", "field_capacity"])
    ap.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.1])
    ap.add_argument("--untrained", type=int, default=4, help="untrained networks per scale")
    ap.add_argument("--iterations", type=int, default=60, help="boosting iterations of the partition")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import numpy as np

    import differland_dist as dl
    from differland_dist.analysis import inputs
    from random_checkpoint import random_checkpoint

    data = inputs.load(a.experiment)
    if data.true_x is None:
        sys.exit(f"{a.experiment}: its store has no true parameters (not a synthetic store)")
    names = list(data.param_names)
    unknown = [p for p in a.params if p not in names]
    if unknown:
        sys.exit(f"--params {unknown}: not parameter names")
    idx = [names.index(p) for p in a.params]
    truth = data.true_x[:, idx]
    full = data.sets[inputs.full_set_name(data.sets)]
    ds = dl.open_store(data.store_url)
    rows = {}
    t0 = time.perf_counter()
    partitions = {}   # seed -> partition of its untrained maps (scale-free)
    with tempfile.TemporaryDirectory(prefix="init-pattern-") as tmp:
        for scale in a.scales:
            for s in range(a.untrained):
                ck = random_checkpoint(data.store_url, f"{tmp}/net.npz", seed=1000 + s,
                                       predictor_sets=("PFT", "CLIM", "SOIL", "AGE"),
                                       config={"network": {"head_init_scale": scale}})
                p = dl.TrainedModel.from_checkpoint(ck).parameters(ds)
                x = inputs.unbounded(np.stack([p[n].values for n in names], axis=1))[:, idx]
                if s not in partitions:
                    partitions[s] = _partition(x, a.params, data, a.iterations)
                rows[f"untrained scale {scale:g} #{s}"] = _row(x, truth, a.params, partitions[s])
    def row(maps):
        return _row(maps, truth, a.params, _partition(maps, a.params, data, a.iterations))

    for k, m in enumerate(full.members):
        rows[f"kept {m}"] = row(full.x[k][:, idx])
    mean = full.mean[:, idx]
    rows["ensemble mean"] = row(mean)
    rows["truth"] = row(truth)
    tc = truth - truth.mean(0)
    slope = ((mean - mean.mean(0)) * tc).mean(0) / (tc * tc).mean(0)
    resid = mean - mean.mean(0) - slope * tc    # what the truth's pattern leaves of the learnt map
    rows["ensemble mean minus its truth part"] = row(resid)
    for k, r in rows.items():
        print(f"{k:42s} " + "  ".join(f"{n}: r {v['r_truth']:+.2f} sd/truth {v['sd_over_truth']:.2f} "
                                       f"share {v['pft_share']:.2f} "
                                       f"(PFT {v['r2_PFT']:.2f}, SOIL {v['r2_SOIL']:.2f})"
                                       for n, v in r.items()))
    res = {"experiment": a.experiment, "set": full.name, "params": a.params, "scales": a.scales,
           "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - t0, 1),
           "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
