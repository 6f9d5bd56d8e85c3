"""The package as others install and cite it: every third-party import is declared, the
object-storage back-ends are extras (with a one-line error naming the extra when missing),
LICENSE and CITATION.cff agree with pyproject."""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import differland_dist

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared(group: str | None) -> set[str]:
    reqs = PROJECT["dependencies"] if group is None else PROJECT["optional-dependencies"][group]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


@functools.cache
def _imports() -> dict[str, set[str]]:
    """Top-level module name -> package files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for f in (ROOT / "differland_dist").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                     and node.module else [])
            for n in names:
                found.setdefault(n.split(".")[0], set()).add(str(f.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    dists = packages_distributions()  # import name -> distributions providing it
    extras = {g: _declared(g) for g in PROJECT["optional-dependencies"] if g != "test"}
    runtime = _declared(None).union(*extras.values())
    undeclared = {}
    for mod, files in _imports().items():
        if mod in sys.stdlib_module_names or mod == "differland_dist":
            continue
        provided = {canonicalize_name(d) for d in dists.get(mod, [])}
        assert provided, f"{mod} (imported by {sorted(files)}) is not installed"
        if not provided & runtime:
            undeclared[mod] = sorted(files)
    assert not undeclared, f"imported but not declared in pyproject (dependencies or an extra): {undeclared}"
    # the ones this check was written for, and the analysis extra's thread limiter
    assert {"google-crc32c", "scipy"} <= _declared(None)
    assert "threadpoolctl" in extras["analysis"]


def test_cloud_backends_are_extras_that_the_package_never_imports():
    assert not {"gcsfs", "s3fs"} & _declared(None)
    opt = PROJECT["optional-dependencies"]
    assert {canonicalize_name(Requirement(r).name) for r in opt["gcs"]} == {"gcsfs"}
    assert {canonicalize_name(Requirement(r).name) for r in opt["s3"]} == {"s3fs"}
    assert _declared("cloud") == {"gcsfs", "s3fs"} and {"gcsfs", "s3fs"} <= _declared("test")
    # fsspec finds them by URL scheme: no module of ours may import them
    assert not {"gcsfs", "s3fs"} & set(_imports())


NO_CLOUD = """
import sys, json, importlib, pkgutil
sys.modules["gcsfs"] = None; sys.modules["s3fs"] = None   # the default install
import differland_dist
bad = []
for m in pkgutil.walk_packages(differland_dist.__path__, "differland_dist."):
    try:
        importlib.import_module(m.name)
    except ImportError as e:
        bad.append(f"{m.name}: {e}")
from differland_dist.cli.main import main
codes = [main(["validate", url]) for url in ("gs://bucket/x.zarr", "s3://bucket/y.zarr")]
codes.append(main(["synth", "--out", "gs://bucket/earth.zarr"]))
print(json.dumps({"bad": bad, "codes": codes}))
"""


def test_default_install_imports_everything_and_names_the_missing_extra(tmp_path):
    r = subprocess.run([sys.executable, "-c", NO_CLOUD], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    # every module imports without gcsfs/s3fs (the analysis extra's are installed here)
    assert d["bad"] == []
    # validate reports the missing back-end as a problem (exit 1), one line naming the extra
    assert d["codes"] == [1, 1, 1]
    out = r.stdout
    assert "gs:// URLs need the gcsfs package" in out and 'pip install "differland-dist[gcs]"' in out
    assert "s3:// URLs need the s3fs package" in out and 'pip install "differland-dist[s3]"' in out
    # and any other command (synth here) stops with that line as its error
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert err == ["error: 'gs://bucket/earth.zarr': gs:// URLs need the gcsfs package, which the "
                   'default install leaves out: pip install "differland-dist[gcs]" (or [cloud] '
                   "for gs:// and s3://)"]
    assert "Traceback" not in r.stderr


def test_license_and_citation_agree_with_pyproject():
    lic = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"]["text"] == "MIT" and lic.startswith("MIT License")
    assert "Copyright (c) 2026 the differland_dist authors" in lic
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == PROJECT["version"] == differland_dist.__version__
    assert cff["license"] == "MIT" and cff["authors"] and cff["message"]
    paper = next(r for r in cff["references"] if r["type"] == "article")
    assert any(i["value"] == "arXiv:2411.09654" for i in paper["identifiers"])
    assert [a["family-names"] for a in paper["authors"]][0] == "Fang"
