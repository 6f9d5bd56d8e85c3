"""Optional back-ends by URL scheme: which pip extra brings the fsspec filesystem a URL needs.

The default install reads and writes local paths (and ``file://``, ``memory://``); object
storage needs ``pip install "differland-dist[gcs]"`` (gs://), ``[s3]`` (s3://) or ``[cloud]``
(both).
"""

from __future__ import annotations

import importlib

#: URL scheme -> (the module fsspec imports for it, the extra that installs it)
SCHEME_EXTRAS = {
    "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
}


def missing_backend(url: str) -> str | None:
    """A one-line message naming the extra to install when ``url``'s scheme needs a back-end
    that is not installed; None when it is installed or the scheme needs none of ours."""
    scheme = str(url).split("://", 1)[0].lower() if "://" in str(url) else ""
    module, extra = SCHEME_EXTRAS.get(scheme, (None, None))
    if module is None:
        return None
    try:  # only called once opening the filesystem failed: the import's cost does not matter
        importlib.import_module(module)
        return None
    except ImportError:
        pass
    return (f"{url!r}: {scheme}:// URLs need the {module} package, which the default install "
            f"leaves out: pip install \"differland-dist[{extra}]\" (or [cloud] for gs:// and s3://)")
