"""What made an output: the package version, the git commit of its source
(:func:`differland_dist.common.version.git_commit`, "" when unknown) and a digest of the config,
recorded in every output store's attributes and every checkpoint's metadata."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from differland_dist.common.version import git_commit


VERSION_KEY = "differland_version"
COMMIT_KEY = "differland_git_commit"
CONFIG_KEY = "config_sha256"


def config_digest(config: Any) -> str:
    """sha256 of a config as canonical JSON (a dict, a JSON string or an object with
    ``to_dict``); "" for None."""
    if config is None:
        return ""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return hashlib.sha256(config.encode()).hexdigest()
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def record(config: Any = None) -> dict[str, str]:
    """The provenance attributes: version, commit and (when a config is given) its digest."""
    from differland_dist import __version__

    out = {VERSION_KEY: __version__, COMMIT_KEY: git_commit() or ""}
    if config is not None:
        out[CONFIG_KEY] = config_digest(config)
    return out
