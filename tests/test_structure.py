"""The house rules of the package's structure (docs/architecture.md), held by a test so the
hubs do not grow back: sizes, where storage options may appear, where errors and the shared
vocabulary live, and what sits at the package root."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "differland_dist"

MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 250
MAX_MODULE_LINES = 600
#: DALEC's monthly step is one equation set, kept whole to read against the published model.
LONG_FUNCTION_ALLOWED = {("model/dalec.py", "step")}
#: Names under which a function takes fsspec storage options next to a URL.
STORAGE_OPTION_NAMES = re.compile(r"^(storage_options|so|oso|in_so|out_so|\w+_storage_options)$")
#: The I/O layer: the only package whose functions take storage options.
IO_LAYER = "storage/"
MAX_STORAGE_OPTION_SIGNATURES = 10
#: What may sit at the package root beside the packages.
ROOT_MODULES = {"__init__.py", "errors.py", "config.py", "config_reference.py"}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        yield rel, path.read_text(), ast.parse(path.read_text())


def _span(node) -> int:
    return node.end_lineno - node.lineno + 1


def test_no_module_function_or_class_is_a_hub():
    too_long = []
    for rel, text, tree in _modules():
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(text.splitlines())} lines (module)")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _span(node) > MAX_FUNCTION_LINES and (rel, node.name) not in LONG_FUNCTION_ALLOWED:
                    too_long.append(f"{rel}:{node.name}: {_span(node)} lines (function)")
            elif isinstance(node, ast.ClassDef) and _span(node) > MAX_CLASS_LINES:
                too_long.append(f"{rel}:{node.name}: {_span(node)} lines (class)")
    assert not too_long, "\n".join(too_long)


def test_storage_options_stay_in_the_io_layer():
    """Everything above storage/ passes a Location, never a (url, storage_options) pair."""
    found = []
    for rel, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if any(STORAGE_OPTION_NAMES.match(a.arg) for a in args):
                    found.append(f"{rel}:{node.name}")
    outside = [f for f in found if not f.startswith(IO_LAYER)]
    assert not outside, "storage options outside storage/: " + ", ".join(outside)
    assert len(found) <= MAX_STORAGE_OPTION_SIGNATURES, found


def test_exceptions_live_in_errors_py():
    """Every public exception class (private control-flow signals aside)."""
    defined = []
    for rel, _, tree in _modules():
        if rel == "errors.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id in {
                        "DifferlandError", "Exception"}) for b in node.bases):
                defined.append(f"{rel}:{node.name}")
    assert not defined, "exception classes outside errors.py: " + ", ".join(defined)


def test_names_come_from_the_vocabulary_not_from_a_stage():
    """The shared vocabulary (parameter table, series catalogue, grid, CF attributes, streams)
    is imported from vocabulary/, never through a pipeline stage that happens to use it."""
    vocab = set()
    for rel, _, tree in _modules():
        if rel.startswith("vocabulary/"):
            vocab |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            vocab |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                      for t in n.targets if isinstance(t, ast.Name) and t.id.isupper()}
    bad = []
    for rel, _, tree in _modules():
        for node in ast.walk(tree):
            if (isinstance(node, ast.ImportFrom) and node.module
                    and not node.module.startswith(("differland_dist.vocabulary", "differland_dist.model"))
                    and node.module.startswith("differland_dist.") and not rel.startswith("vocabulary/")):
                bad += [f"{rel}: {a.name} from {node.module}" for a in node.names
                        if a.name in vocab and a.name not in _DEFINED_HERE.get(node.module, ())]
    assert not bad, bad


#: Names a stage defines itself that happen to match a vocabulary name.
_DEFINED_HERE: dict[str, tuple[str, ...]] = {}


def test_no_one_letter_module_aliases():
    bad = []
    for rel, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if (alias.asname and re.fullmatch(r"[A-Z]{1,2}_?", alias.asname)
                            and alias.name.islower()):
                        bad.append(f"{rel}: {alias.name} as {alias.asname}")
    assert not bad, bad


def test_the_root_shows_the_architecture():
    root = {p.name for p in PKG.glob("*.py")}
    assert root <= ROOT_MODULES, sorted(root - ROOT_MODULES)


@pytest.mark.parametrize("name", ["WorkersLost", "LeaseHeld", "LeaseLost", "CorruptChunkError"])
def test_moved_errors_are_importable_from_errors(name):
    from differland_dist import errors

    assert issubclass(getattr(errors, name), Exception)


def package_floors() -> dict[str, int]:
    """Floor of each package (and root module) of differland_dist: 0 for what imports no
    other package, else one above the highest package it imports (any import, also inside
    functions)."""
    deps: dict[str, set[str]] = {}
    for rel, _, tree in _modules():
        me = rel.split("/")[0].removesuffix(".py")
        if me == "__init__":
            continue
        got = deps.setdefault(me, set())
        for node in ast.walk(tree):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for n in names:
                parts = n.split(".")
                if parts[0] == "differland_dist" and len(parts) > 1 and parts[1] != me:
                    got.add(parts[1])
    floors: dict[str, int] = {}

    def floor(p: str, seen: tuple = ()) -> int:
        assert p not in seen, f"packages import each other: {' -> '.join(seen + (p,))}"
        if p not in floors:
            floors[p] = 1 + max((floor(q, seen + (p,)) for q in deps.get(p, ()) if q in deps),
                                default=-1)
        return floors[p]

    for p in deps:
        floor(p)
    return floors


def floors_block() -> str:
    """The floors as docs/architecture.md lists them (top floor first)."""
    floors = package_floors()
    lines = []
    for f in sorted(set(floors.values()), reverse=True):
        names = sorted(p + ("/" if (PKG / p).is_dir() else ".py") for p, v in floors.items() if v == f)
        lines.append(f"{f:>2}  " + "  ".join(names))
    return "\n".join(lines)


def test_architecture_floors_are_documented():
    """docs/architecture.md's floor list is the import graph's (regenerate it with
    ``python tests/test_structure.py``)."""
    doc = (PKG.parent / "docs" / "architecture.md").read_text()
    start, end = doc.index("<!-- floors -->\n```\n") + len("<!-- floors -->\n```\n"), doc.index("\n```\n<!-- /floors -->")
    assert doc[start:end] == floors_block(), "docs/architecture.md's floors are stale:\n" + floors_block()


if __name__ == "__main__":
    print(floors_block())
