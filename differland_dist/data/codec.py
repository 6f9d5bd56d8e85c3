"""The chunk codec: where a pixel-store chunk lives and how its stored bytes become values.

Chunks are fetched as raw objects (:mod:`differland_dist.data.rows`), then verified (crc32c)
and decoded here without zarr when the layout allows it (:func:`fast_codec`), through zarr
otherwise. :class:`StoreChunks` is one opened store's view of its chunks: keys, index ranges,
the chunk grid, decoding and the :class:`CorruptChunkError` that names a chunk that does not
decode.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec

from differland_dist.data.zarr_objects import quiet_zarr
from differland_dist.errors import CorruptChunkError

#: How dimensions are named in messages ("pixels 8..15, time steps 0..23").
DIM_LABEL = {"pixel": "pixels", "time": "time steps"}


def span(lo: int, hi: int) -> str:
    """``"lo"`` or ``"lo..hi"`` (inclusive index range for messages)."""
    return f"{lo}" if lo == hi else f"{lo}..{hi}"


class FastCodec(NamedTuple):
    """How to decode a chunk object without zarr: stored dtype (byte order included), chunk
    shape, a numcodecs decompressor (or None) and whether a crc32c trails the bytes."""

    dtype: np.dtype
    shape: tuple[int, ...]
    decompressor: object | None
    crc32c: bool


#: The compressors :func:`fast_codec` decodes itself: zarr codec type -> numcodecs codec.
_DECOMPRESSORS = ((ZstdCodec, numcodecs.Zstd), (GzipCodec, numcodecs.GZip),
                  (BloscCodec, numcodecs.Blosc))


def fast_codec(arr: zarr.Array) -> FastCodec | None:
    """The :class:`FastCodec` of an array whose chunks are plain bytes, optionally zstd/gzip/
    blosc-compressed, optionally followed by a crc32c (what write_store makes); None for other
    layouts (sharding, transposes, strings), which are read through zarr."""
    codecs = list(getattr(arr.metadata, "codecs", ()))
    dtype = np.dtype(arr.dtype)
    if not codecs or not isinstance(codecs[0], BytesCodec) or dtype.kind not in "biuf":
        return None
    crc = isinstance(codecs[-1], Crc32cCodec)
    rest = codecs[1:-1] if crc else codecs[1:]
    if len(rest) > 1:
        return None
    decompressor = None
    if rest:
        found = [make() for kind, make in _DECOMPRESSORS if isinstance(rest[0], kind)]
        if not found:
            return None
        decompressor = found[0]
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)
    if dtype.itemsize > 1 and endian in ("little", "big"):
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    return FastCodec(dtype, tuple(int(c) for c in arr.chunks), decompressor, crc)


def decode_raw(codec: FastCodec, raw: bytes) -> np.ndarray:
    """A whole chunk (``codec.shape``, native byte order) from its stored bytes; ValueError
    saying what is wrong for a checksum mismatch, an undecodable frame or a wrong size."""
    # imported here: only chunk verification needs it (a declared dependency)
    import google_crc32c

    body = np.frombuffer(raw, np.uint8)  # no copy; google_crc32c takes arrays, not memoryviews
    if codec.crc32c:
        if len(body) < 4:
            raise ValueError(f"{len(body)} byte(s), too short to hold its crc32c checksum")
        stored = int.from_bytes(body[-4:].tobytes(), "little")
        body = body[:-4]
        computed = int(google_crc32c.value(body))
        if computed != stored:
            raise ValueError(f"crc32c checksum mismatch (stored {stored:08x}, computed "
                             f"{computed:08x}): its bytes changed after writing")
    if codec.decompressor is not None:
        try:
            body = codec.decompressor.decode(body)
        except Exception as e:  # noqa: BLE001 - numcodecs raises RuntimeError/ValueError/...
            raise ValueError(f"its compressed frame cannot be decoded ({type(e).__name__}: "
                             f"{e})") from None
    expected = int(np.prod(codec.shape)) * codec.dtype.itemsize
    if memoryview(body).nbytes != expected:
        raise ValueError(f"it decodes to {memoryview(body).nbytes} bytes, expected {expected} "
                         f"({'x'.join(map(str, codec.shape))} {codec.dtype.name}): truncated?")
    data = np.frombuffer(body, dtype=codec.dtype).reshape(codec.shape)
    return data if codec.dtype.isnative else data.astype(codec.dtype.newbyteorder("="))


class StoreChunks:
    """The chunks of one opened store.

    Args:
      array: name -> the store's zarr array (cached by the store).
      source: the store's URL, named by every error.
    """

    def __init__(self, array: Callable[[str], zarr.Array], source: str):
        self.array, self.source = array, source
        self._codecs: dict[str, FastCodec | None] = {}

    def codec(self, name: str) -> FastCodec | None:
        """:func:`fast_codec` of array ``name`` (cached); None: read it through zarr."""
        if name not in self._codecs:
            self._codecs[name] = fast_codec(self.array(name))
        return self._codecs[name]

    def key(self, name: str, coords: tuple[int, ...]) -> str:
        """Key of a chunk relative to the store root, e.g. ``t_min/c/1/0``."""
        return f"{name}/{self.array(name).metadata.encode_chunk_key(tuple(coords))}"

    def bounds(self, name: str, coords: tuple[int, ...]) -> tuple[slice, ...]:
        """The index ranges of array ``name`` that chunk ``coords`` holds."""
        arr = self.array(name)
        return tuple(slice(i * c, min((i + 1) * c, n))
                     for i, c, n in zip(coords, arr.chunks, arr.shape))

    def where(self, name: str, coords: tuple[int, ...]) -> str:
        """Index ranges of a chunk for messages: ``pixels 8..15, time steps 0..23``."""
        dims = tuple(self.array(name).metadata.dimension_names or ())
        return ", ".join(f"{DIM_LABEL.get(d, d)} {span(b.start, b.stop - 1)}"
                         for d, b in zip(dims, self.bounds(name, coords)))

    def grid(self, name: str, rows: slice | None = None) -> list[tuple[int, ...]]:
        """Coordinates of the chunks holding rows ``rows`` of the first axis (all if None),
        whole along the other axes."""
        arr = self.array(name)
        grid = [-(-n // c) if c else 0 for n, c in zip(arr.shape, arr.chunks)]
        if not grid:
            return [()]
        if rows is not None and arr.shape[0]:
            c0 = arr.chunks[0]
            stop = arr.shape[0] if rows.stop is None else min(arr.shape[0], rows.stop)
            lo, hi = max(0, rows.start or 0), stop
            first = range(lo // c0, (hi - 1) // c0 + 1) if hi > lo else range(0)
        else:
            first = range(grid[0])
        return [(k, *rest) for k in first for rest in np.ndindex(*grid[1:])]

    def corrupt(self, name: str, coords: tuple[int, ...], why: str) -> CorruptChunkError:
        """The CorruptChunkError of chunk ``coords`` of ``name`` (``coords`` kept on it)."""
        err = CorruptChunkError(name, self.key(name, coords), self.where(name, coords), why,
                                source=self.source)
        err.coords = tuple(coords)
        return err

    def decode(self, name: str, coords: tuple[int, ...], raw: bytes) -> np.ndarray:
        """The values of one chunk from its stored bytes, trimmed to the array's extent;
        CorruptChunkError naming the variable, chunk and range if they do not decode."""
        try:
            data = decode_raw(self.codec(name), raw)
        except ValueError as e:
            raise self.corrupt(name, coords, str(e)) from None
        return data[tuple(slice(0, b.stop - b.start) for b in self.bounds(name, coords))]

    def via_zarr(self, name: str, coords: tuple[int, ...]) -> np.ndarray:
        """One chunk through zarr (layouts :func:`fast_codec` does not decode); reads of store
        values go through :class:`differland_dist.data.rows.RowReader`, which calls this."""
        try:
            with quiet_zarr():
                return np.asarray(self.array(name)[self.bounds(name, coords)])
        except (RuntimeError, ValueError, TypeError) as e:  # zarr's codec errors
            raise self.corrupt(name, coords, f"it cannot be decoded ({type(e).__name__}: {e})") from None
