"""The training settings of an experiment's members that the report states beside its
findings (the initialisation changes the learnt maps' PFT shares: docs/analysis.md)."""

from __future__ import annotations

import yaml

from differland_dist.storage.location import Location


def head_init_scales(run_dirs: list[Location]) -> dict:
    """``{"head_init_scale": [...]}``: the network.head_init_scale of each run (its
    config.yaml; 1, the paper's initialisation, where the config predates the setting)."""
    out = []
    for d in run_dirs:
        try:
            cfg = yaml.safe_load(d.join("config.yaml").read_bytes())
        except FileNotFoundError:
            out.append(None)
            continue
        out.append(float(((cfg or {}).get("network") or {}).get("head_init_scale", 1.0)))
    return {"head_init_scale": out}
