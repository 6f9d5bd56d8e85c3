"""Validation of pixel stores (and of Datasets about to be written) against the schema.

Checks, in order, each reported with the variable and the pixel/time range, actual vs expected:

1. group attributes: every one of ``schema.GLOBAL_ATTRS``, the store version, ``complete`` True;
2. presence, dims, dtypes and units of the coordinates, forcing and predictors; observation
   variables (a known ``stream`` attribute, the stream's units, a weight variable);
3. consistent dimension sizes; patches sorted, contiguous, at most ``max_patch_size`` pixels;
   the train/test split constant within each patch; time strictly increasing;
4. (stores) the chunk manifest: every array's metadata object and every chunk it should have is
   listed in the store (zarr would silently read a missing chunk as its fill value), pixel
   chunks of ``max_patch_size``;
5. a data scan in pixel blocks: no gaps (NaN) in coordinates, forcing and predictors; values
   within the schema ranges; observation values within their stream's range, weights finite
   and >= 0, and weight 0 wherever the value is missing;
6. (stores) every chunk object decodes: its crc32c checksum (stores written by ``write_store``)
   matches, its compressed frame is intact and it has the size of a whole chunk. The scan reads
   chunks as raw objects and verifies each once; chunks it does not need are verified after it.

``variables`` (see :func:`validate_store`) limits checks 2-6 to the variables a job reads.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import xarray as xr

from differland_dist.data import schema
from differland_dist.data.codec import DIM_LABEL, span
from differland_dist.data.io import PixelStore
from differland_dist.data.layout import patch_runs
from differland_dist.data.validation_sources import MAX_LISTED, DatasetSource, StoreSource, Tally
from differland_dist.errors import CorruptChunkError, DataValidationError, DifferlandError
from differland_dist.common.progress import Progress
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)


_TABLES = (("coordinates", schema.COORDS), ("forcing", schema.FORCING),
           ("predictors", schema.PREDICTORS))
#: Values per block read by the data scan (per variable): bounds the scan's memory.
_BLOCK_VALUES = 2_000_000
#: Fingerprints of stores that passed, so reopening a store in one process skips the scan.
_PASSED: set[tuple[str, str, frozenset[str] | None]] = set()


# -- the checks -------------------------------------------------------------------------------
def _check_attrs(src, is_store: bool) -> list[str]:
    A = src.attrs
    out = []
    for key in schema.GLOBAL_ATTRS:
        if key == "complete" and not is_store:
            continue  # write_store sets it
        if key not in A:
            out.append(f"attrs: global attribute {key!r} missing")
    if "differland_store_version" in A and A["differland_store_version"] != schema.STORE_VERSION:
        out.append(f"attrs: differland_store_version is {A['differland_store_version']!r}, "
                   f"expected {schema.STORE_VERSION}")
    for key in ("steps_per_year", "max_patch_size"):
        if key in A and not (isinstance(A[key], (int, np.integer)) and not isinstance(A[key], bool)
                             and A[key] > 0):
            out.append(f"attrs: {key} is {A[key]!r}, expected a positive integer")
    if is_store and "complete" in A and A["complete"] is not True:
        out.append(f"attrs: complete is {A['complete']!r}, expected True: the store was not "
                   "completely written (interrupted?); write it again")
    return out


def _check_sizes(src) -> tuple[list[str], dict[str, int]]:
    out, sizes, ref = [], {}, {}
    order = [n for n in ("patch", "time") if n in src.names] + list(src.names)
    for name in order:
        for d, n in zip(src.dims(name), src.shape(name)):
            if d not in sizes:
                sizes[d], ref[d] = n, name
            elif sizes[d] != n and name != ref[d]:
                out.append(f"{name}: dimension {d!r} has size {n}, expected {sizes[d]} "
                           f"(the size in {ref[d]})")
    return list(dict.fromkeys(out)), sizes


def _check_schema_vars(src, names: set[str], only: frozenset[str] | None,
                       out: list[str]) -> dict[str, tuple]:
    """Coordinates, forcing and predictors: presence, dims, dtype and units (problems appended);
    the scan plan name -> (lo, hi, category, units) of those with the right dims and dtype."""
    plan: dict[str, tuple] = {}
    for category, table in _TABLES:
        for v in table:
            if only is not None and v.name not in only:
                continue
            if v.name not in names:
                if v.required:
                    out.append(f"{v.name}: missing ({category}; expected dims {v.dims}, "
                               f"dtype {v.dtype}, units {v.units!r})")
                continue
            ok = True
            dims, dtype = src.dims(v.name), src.dtype(v.name)
            if dims != v.dims:
                out.append(f"{v.name}: dims {dims}, expected {v.dims}")
                ok = False
            if dtype != np.dtype(v.dtype):
                out.append(f"{v.name}: dtype {dtype}, expected {v.dtype}")
                ok = False
            units = src.var_attrs(v.name).get("units")
            if units != v.units:
                out.append(f"{v.name}: units {units!r}, expected {v.units!r}")
            if ok:
                plan[v.name] = (v.lo, v.hi, category, v.units)
    for base in schema.PER_PIXEL_FORCING:  # <name>_by_pixel: a per-step forcing given per pixel
        name, v = schema.by_pixel_name(base), schema.VARS[base]
        if name not in names or (only is not None and name not in only):
            continue
        ok = src.dims(name) == ("pixel", "time") and src.dtype(name) == np.dtype(v.dtype)
        if not ok:
            out.append(f"{name}: dims {src.dims(name)} dtype {src.dtype(name)}, expected "
                       f"('pixel', 'time') {v.dtype}")
        units = src.var_attrs(name).get("units")
        if units != v.units:
            out.append(f"{name}: units {units!r}, expected {v.units!r}")
        if ok:
            plan[name] = (v.lo, v.hi, "forcing", v.units)
    return plan


def _check_obs_var(src, name: str, names: set[str], out: list[str]) -> tuple | None:
    """One observation variable and its weight (problems appended): its scan plan entry
    (value, weight, stream) if dims and dtypes allow the scan."""
    attrs = src.var_attrs(name)
    stream = attrs.get("stream")
    if stream not in schema.STREAM_INDEX:
        out.append(f"{name}: attribute 'stream' is {stream!r}, expected one of "
                   f"{', '.join(schema.STREAM_NAMES)}")
        return None
    st = schema.STREAMS[schema.STREAM_INDEX[stream]]
    ok = True
    dims = src.dims(name)
    if dims not in (("pixel", "time"), ("pixel",)):
        out.append(f"{name}: dims {dims}, expected ('pixel', 'time') or ('pixel',)")
        ok = False
    if src.dtype(name) != np.float32:
        out.append(f"{name}: dtype {src.dtype(name)}, expected float32")
        ok = False
    if attrs.get("units") != st.units:
        out.append(f"{name}: units {attrs.get('units')!r}, expected {st.units!r} "
                   f"(stream {stream})")
    wname = name + "_weight"
    if wname not in names:
        out.append(f"{name}: its weight variable {wname} is missing")
        return None
    if src.dims(wname) != dims:
        out.append(f"{wname}: dims {src.dims(wname)}, expected {dims} (as {name})")
        ok = False
    if src.dtype(wname) != np.float32:
        out.append(f"{wname}: dtype {src.dtype(wname)}, expected float32")
        ok = False
    return (name, wname, st) if ok else None


def _check_variables(src, only: frozenset[str] | None = None,
                     ) -> tuple[list[str], dict[str, tuple], list[tuple]]:
    """Schema variables and observations (only those in ``only`` if given). Returns (problems,
    scan plan of schema variables name -> (lo, hi, category, units), scan plan of observations
    (value, weight, stream))."""
    out: list[str] = []
    names = set(src.names)
    plan = _check_schema_vars(src, names, only, out)
    obs_plan = []
    for name in sorted(n for n in names if n.startswith("obs_") and (only is None or n in only)):
        if name.endswith("_weight"):
            if name[: -len("_weight")] not in names:
                out.append(f"{name}: weight without its value variable {name[:-len('_weight')]}")
            continue
        entry = _check_obs_var(src, name, names, out)
        if entry is not None:
            obs_plan.append(entry)
    return out, plan, obs_plan


def _check_structure(src, plan: dict[str, tuple]) -> list[str]:
    out = []
    C = src.attrs.get("max_patch_size")
    patch_ok = split_ok = time_ok = None
    if "patch" in plan:
        patch, patch_ok = src.read_checked("patch")
    if "split" in plan:
        split, split_ok = src.read_checked("split")
    if "time" in plan:
        t, time_ok = src.read_checked("time")
    if "patch" in plan and patch_ok is None:  # a corrupt chunk is reported on its own
        dec = np.flatnonzero(np.diff(patch.astype(np.int64)) < 0)
        if dec.size:
            i = int(dec[0]) + 1
            out.append(f"patch: pixel axis not sorted by patch: {dec.size} decrease(s), first at "
                       f"pixel {i} (patch {patch[i]} after patch {patch[i - 1]})")
        else:
            runs = patch_runs(patch)
            if isinstance(C, (int, np.integer)) and C > 0:
                big = [(p, s) for p, s in runs.items() if s.stop - s.start > C]
                if big:
                    listed = "; ".join(f"patch {p}: {s.stop - s.start} pixels (pixels "
                                       f"{s.start}..{s.stop - 1})" for p, s in big[:MAX_LISTED])
                    out.append(f"patch: {len(big)} patch(es) larger than max_patch_size={C}: {listed}")
            if "split" in plan and split_ok is None:
                mixed = [(p, s) for p, s in runs.items() if split[s].min() != split[s].max()]
                if mixed:
                    listed = "; ".join(f"patch {p} (pixels {s.start}..{s.stop - 1})"
                                       for p, s in mixed[:MAX_LISTED])
                    out.append(f"split: {len(mixed)} patch(es) mix train and test pixels "
                               f"(the split must be by patch): {listed}")
    if "time" in plan and time_ok is None:
        bad = np.flatnonzero(~(np.diff(t) > 0))
        if bad.size:
            i = int(bad[0]) + 1
            out.append(f"time: not strictly increasing at {bad.size} step(s), first at time step "
                       f"{i} ({t[i]!r} after {t[i - 1]!r})")
    return out


def _read_each(store: PixelStore, keys: list[str]) -> dict[str, bytes]:
    """Small objects (keys relative to the store) read concurrently through its location, each
    under the one retry policy: one object's transient fault costs a retry of that object, not
    of the whole batch."""
    with ThreadPoolExecutor(max_workers=8) as ex:
        return dict(zip(keys, ex.map(lambda k: store.location.join(k).read_bytes(), keys)))


def _check_chunks(store: PixelStore, manifest: dict[str, int], only: frozenset[str] | None = None,
                  ) -> tuple[list[str], set[str]]:
    """Metadata objects and chunk keys every array (in ``only`` if given) should have, against
    the store listing."""
    out, broken = [], set()
    C = store.attrs.get("max_patch_size")
    consolidated = (store.root_meta.get("consolidated_metadata") or {}).get("metadata", {})
    names = [n for n in store.array_names if only is None or n in only]
    present = [n for n in names if f"{n}/zarr.json" in manifest]
    own = _read_each(store, [f"{n}/zarr.json" for n in present]) if consolidated else {}
    own = {k.rsplit("/", 1)[0]: v for k, v in own.items()}
    for name in names:
        if f"{name}/zarr.json" not in manifest:
            out.append(f"{name}: its metadata object {name}/zarr.json is missing from the store "
                       "(the variable was deleted after writing)")
            broken.add(name)
            continue
        try:
            own_meta = json.loads(own[name]) if name in own else None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            out.append(f"{name}: its metadata object {name}/zarr.json is not valid JSON ({e}); "
                       "the store was damaged after writing (readers use the consolidated copy "
                       "in zarr.json)")
            own_meta = None
        if own_meta is not None and name in consolidated and own_meta != consolidated[name]:
            out.append(f"{name}: its metadata ({name}/zarr.json) differs from the consolidated "
                       "metadata in zarr.json (the store was modified after writing); readers use "
                       "the consolidated copy")
        arr = store.array(name)
        dims, shape, chunks = store.dims(name), tuple(arr.shape), tuple(arr.chunks)
        if isinstance(C, (int, np.integer)) and "pixel" in dims:
            ax = dims.index("pixel")
            if chunks[ax] != min(C, shape[ax]):
                out.append(f"{name}: pixel chunks of {chunks[ax]}, expected max_patch_size={C} "
                           "(chunks must align with patches)")
        grid = tuple(-(-n // c) if c else 0 for n, c in zip(shape, chunks))
        missing = []
        for coords in np.ndindex(*grid):
            key = f"{name}/{arr.metadata.encode_chunk_key(coords)}"
            if key not in manifest:
                missing.append((key, coords))
        if not missing:
            continue
        broken.add(name)
        for key, coords in missing[:MAX_LISTED]:
            where = ", ".join(f"{DIM_LABEL.get(d, d)} {span(i * c, min((i + 1) * c, n) - 1)}"
                              for d, i, c, n in zip(dims, coords, chunks, shape))
            out.append(f"{name}: chunk {key} is missing from the store ({where}); zarr would "
                       "read it as fill values")
        if len(missing) > MAX_LISTED:
            out.append(f"{name}: {len(missing) - MAX_LISTED} more missing chunk(s)")
    return out, broken


def _blocks(n_pixels: int, per_pixel: int, C: int | None) -> list[slice]:
    step = max(1, _BLOCK_VALUES // max(1, per_pixel))
    if C:
        step = max(C, step // C * C)
    return [slice(s, min(s + step, n_pixels)) for s in range(0, n_pixels, step)]


def _rows_ok(ok: np.ndarray | None, v: np.ndarray) -> np.ndarray | bool:
    """The rows mask of read_checked broadcast to ``v`` (True when every chunk decoded):
    values of corrupt chunks are reported as such, not as gaps or out-of-range values."""
    if ok is None or v.ndim == 0:
        return True
    return ok.reshape((-1,) + (1,) * (v.ndim - 1))


def _scan_schema_var(src, name: str, lo: float, hi: float, key: tuple, offset: int):
    v, ok = src.read_checked(name, key)
    ok = _rows_ok(ok, v)
    dims = src.dims(name)
    gap = Tally(dims)
    rng = Tally(dims)
    finite = np.isfinite(v) if np.issubdtype(v.dtype, np.floating) else np.ones(v.shape, bool)
    gap.add(~finite & ok, None, offset)
    rng.add(schema.outside(v, lo, hi) & ok, v, offset)
    return {(name, "gap"): gap, (name, "range"): rng}


def _scan_obs(src, name: str, wname: str, st, key: tuple, offset: int):
    (v, vok), (w, wok) = src.read_checked(name, key), src.read_checked(wname, key)
    ok = _rows_ok(vok, v) & _rows_ok(wok, w)
    dims = src.dims(name)
    t = {(name, k): Tally(dims) for k in ("range", "weight", "gapweight")}
    finite = np.isfinite(v)
    t[(name, "range")].add(schema.outside(v, st.lo, st.hi) & ok, v, offset)
    t[(name, "weight")].add((~np.isfinite(w) | (w < 0)) & ok, w, offset)
    t[(name, "gapweight")].add(~finite & (w > 0) & ok, w, offset)
    return t


def _scan(src, plan: dict[str, tuple], obs_plan: list[tuple], sizes: dict[str, int]) -> list[str]:
    n_pix = sizes.get("pixel", 0)
    n_time = sizes.get("time", 1)
    C = src.attrs.get("max_patch_size")
    C = int(C) if isinstance(C, (int, np.integer)) and C > 0 else None
    jobs = []
    for name, (lo, hi, _, _) in plan.items():
        dims = src.dims(name)
        if dims and dims[0] == "pixel":
            for b in _blocks(n_pix, n_time if len(dims) > 1 else 1, C):
                jobs.append((_scan_schema_var, (src, name, lo, hi, (b,), b.start)))
        else:
            jobs.append((_scan_schema_var, (src, name, lo, hi, (), 0)))
    for name, wname, st in obs_plan:
        for b in _blocks(n_pix, n_time if len(src.dims(name)) > 1 else 1, C):
            jobs.append((_scan_obs, (src, name, wname, st, (b,), b.start)))

    tallies: dict[tuple[str, str], Tally] = {}

    def collect(result):
        for k, t in result.items():
            if k in tallies:
                tallies[k].merge(t)
            else:
                tallies[k] = t

    prog = Progress(f"validate {src.label}: blocks read and checked", len(jobs))
    if src.parallel and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=8) as ex:
            for result in ex.map(lambda j: j[0](*j[1]), jobs):
                collect(result)
                prog.add()
    else:
        for fn, args in jobs:
            collect(fn(*args))
            prog.add()

    out = []
    for name, (lo, hi, category, units) in plan.items():
        gap, rng = tallies.get((name, "gap")), tallies.get((name, "range"))
        if gap is not None and gap.n:
            out.append(f"{name}: {gap.n} missing value(s) (NaN) at {gap.where()}; gaps are not "
                       f"allowed in {category}")
        if rng is not None and rng.n:
            out.append(schema.range_problem(name, rng.n, lo, hi, units, rng.where(), rng.vmin,
                                            rng.vmax, of="the expected range "))
    for name, wname, st in obs_plan:
        rng, wt, gw = (tallies[(name, k)] for k in ("range", "weight", "gapweight"))
        if rng.n:
            out.append(schema.range_problem(name, rng.n, st.lo, st.hi, st.units, rng.where(),
                                            rng.vmin, rng.vmax, of=f"the range of stream {st.name} "))
        if wt.n:
            out.append(f"{wname}: {wt.n} weight(s) negative or NaN at {wt.where()}; weights "
                       "must be finite and >= 0")
        if gw.n:
            out.append(f"{wname}: {gw.n} weight(s) > 0 where {name} is missing (NaN) at "
                       f"{gw.where()}; a gap must have weight 0")
    return out


def _run(src, store: PixelStore | None, manifest: dict[str, int] | None,
         only: frozenset[str] | None = None) -> list[str]:
    problems = _check_attrs(src, store is not None)
    broken: set[str] = set()
    if store is not None:
        chunk_problems, broken = _check_chunks(store, manifest or {}, only)
        problems += chunk_problems
    size_problems, sizes = _check_sizes(src)
    problems += size_problems
    var_problems, plan, obs_plan = _check_variables(src, only)
    problems += var_problems
    if size_problems:  # mismatched dims: reading blocks would mislead; report the rest first
        return problems
    plan = {k: v for k, v in plan.items() if k not in broken}
    obs_plan = [o for o in obs_plan if o[0] not in broken and o[1] not in broken]
    problems += _check_structure(src, plan)
    problems += _scan(src, plan, obs_plan, sizes)
    if store is not None:
        src.verify_unread([n for n in src.names if n not in broken and (only is None or n in only)
                           and f"{n}/zarr.json" in (manifest or {})])
        problems += src.corrupt_problems()
    return problems


def validate_dataset(ds: xr.Dataset) -> list[str]:
    """Every problem of an in-memory Dataset against the schema (all checks but the store's
    chunk manifest and ``complete`` flag); empty if it can be written."""
    return _run(DatasetSource(ds), None, None)


def validate_store(where: Location | str | PixelStore, *, variables=None) -> list[str]:
    """Every problem of a store (see the module docstring); empty if it is valid.

    Args:
      where: a store's location (or URL) or an opened :class:`PixelStore`.
      variables: check only these variables (group attributes always), e.g. what inference
        reads; None: every variable.
    """
    if isinstance(where, PixelStore):
        store = where
    else:
        try:
            store = PixelStore(where)
        except DataValidationError as e:
            return e.problems
        except DifferlandError as e:
            return [str(e)]
    only = None if variables is None else frozenset(variables)
    t0 = time.perf_counter()
    try:
        manifest = store.list_objects()
        source = StoreSource(store)
        try:
            problems = _run(source, store, manifest, only)
        finally:
            source.rows.close()
    except DataValidationError as e:  # metadata that cannot be read at all
        return e.problems
    log.debug("validated %s in %.2f s: %d problem(s)", store.url, time.perf_counter() - t0,
              len(problems))
    if not problems:
        _PASSED.add((store.url, store.fingerprint(manifest), only))
    return problems


def check_store(where: Location | str | PixelStore, *, variables=None) -> PixelStore:
    """Validate a store (only ``variables`` if given, see :func:`validate_store`) and return it
    opened; raise DataValidationError listing every problem.

    A store that already passed in this process with the same fingerprint (metadata and chunk
    manifest) is not scanned again.
    """
    store = where if isinstance(where, PixelStore) else PixelStore(where)
    only = None if variables is None else frozenset(variables)
    fp = store.fingerprint()
    if (store.url, fp, None) in _PASSED or (store.url, fp, only) in _PASSED:
        return store
    problems = validate_store(store, variables=only)
    if problems:
        raise DataValidationError(problems, source=store.url)
    return store


def summary(store: PixelStore) -> dict[str, Any]:
    """A short description of a valid store for people: sizes, patches, split, products."""
    return {
        "url": store.url,
        "source": store.attrs.get("source"),
        "pixels": store.n_pixels,
        "time_steps": store.n_time,
        "steps_per_year": store.steps_per_year,
        "patches": int(store.patch_ids.size),
        "train_patches": int(store.train_patches.size),
        "dev_patches": int(store.dev_patches.size),
        "test_patches": int(store.test_patches.size),
        "max_patch_size": store.max_patch_size,
        "products": {s: store.products(s) for s in schema.STREAM_NAMES if store.products(s)},
        "fingerprint": store.fingerprint(),
    }
