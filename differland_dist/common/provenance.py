"""What made an output: the package version, the git commit of its source (when it runs from
a git checkout) and a digest of the config, recorded in every output store's attributes and
every checkpoint's metadata."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
from typing import Any

log = logging.getLogger(__name__)

VERSION_KEY = "differland_version"
COMMIT_KEY = "differland_git_commit"
CONFIG_KEY = "config_sha256"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the package's source tree ("" when it is not a git checkout, e.g. an
    installed wheel, or git is missing); ``-dirty`` appended when tracked files differ."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


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

    out = {VERSION_KEY: __version__, COMMIT_KEY: git_commit()}
    if config is not None:
        out[CONFIG_KEY] = config_digest(config)
    return out
