"""The package's version and, where it can be found, the git commit it was built from.

``differland --version`` prints :func:`describe`; outputs record the commit through
:mod:`differland_dist.common.provenance`.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess

from differland_dist import __version__

DIST_NAME = "differland_dist"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit (40 hex digits, ``+dirty`` appended for uncommitted changes) of the checkout
    this package is imported from; else the commit pip recorded for a ``git+`` install; else
    None (a wheel built from an sdist has none)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(root, ".git")):
        try:
            sha = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return sha + ("+dirty" if dirty else "") if sha else None
        except (OSError, subprocess.SubprocessError):
            pass
    try:  # pip install git+https://...: PEP 610's direct_url.json holds the commit
        from importlib.metadata import PackageNotFoundError, distribution

        text = distribution(DIST_NAME).read_text("direct_url.json")
        if text:
            return json.loads(text).get("vcs_info", {}).get("commit_id")
    except (PackageNotFoundError, ValueError, AttributeError):
        pass
    return None


def describe() -> str:
    """One line: ``differland 0.1.0 (commit abc123...)``, the commit left out when unknown."""
    c = git_commit()
    return f"differland {__version__}" + (f" (commit {c})" if c else "")
