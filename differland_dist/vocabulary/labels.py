"""A batch's observations by stream name: the :class:`Labels` pytree.

What the loss compares the model with travels as ``Labels``: per stream of the stream table
(``differland_dist.vocabulary.streams``) its value and weight, (P, T) arrays keyed by stream name, plus
the masks that travel with a batch (``time_test``: a site store's per-step time split). It is
a NamedTuple of dicts, hence a JAX pytree: ``jax.jit``, ``jax.vmap`` and ``jax.tree.map`` take
it as they are, with the stream names as static structure, and the batch axes (patches,
members) lead every leaf.

The published code and the golden files pack the same numbers into one (P, T, 24) array,
the value then the weight of each stream in label order (``Stream.label``):
:meth:`Labels.from_published` and :meth:`Labels.to_published` convert at that boundary, the
only place a label column number appears.

This module uses numpy only (no JAX at import, so the data layer stays light); array
operations go through the leaves' own array namespace, so they work on numpy arrays, JAX
arrays and tracers alike.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from differland_dist.vocabulary import streams
from differland_dist.errors import DataValidationError, DifferlandError


def _xp(a):
    """The array namespace of ``a`` (numpy for numpy arrays, ``jax.numpy`` for JAX arrays)."""
    return a.__array_namespace__() if hasattr(a, "__array_namespace__") else np


def _series(x, P: int, T: int) -> np.ndarray:
    """(P, T) float32 from a (P, T) series or a static (P,) observation (repeated over steps)."""
    x = np.asarray(x, dtype=np.float32)
    return x if x.ndim == 2 else np.broadcast_to(x[:, None], (P, T))


class Labels(NamedTuple):
    """The observations of a batch of P pixels and T steps, by stream name.

    Attributes:
      value: stream name -> (..., P, T) observed value in the stream's units (0 where unobserved).
      weight: stream name -> (..., P, T) weight of the misfit; 0 where a stream is off, its
        product absent, the value missing, or the pixel a padding row.
      time_test: (..., P, T) 1 at test-time steps and 0 at train-time ones, for stores split
        by time (site stores); None for stores without a time split. The loss takes labels
        whose time split was chosen with :meth:`time_split`.

    Every stream of ``streams.STREAMS`` has an entry (zero-weighted when off), so batches of
    one store share one pytree structure.
    """

    value: dict[str, Any]
    weight: dict[str, Any]
    time_test: Any = None

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_observations(cls, values: Mapping[str, Any], weights: Mapping[str, Any], P: int,
                          T: int, time_test=None) -> "Labels":
        """Float32 numpy labels from observation arrays by stream name.

        Args:
          values, weights: stream name -> (P, T) series or static (P,) observations (repeated
            over the steps); a stream not in ``values`` gets value 0 and weight 0.
          time_test: (P, T) 1/0 time split, or None.

        Where a value is not finite or its weight is not positive, both become 0.
        """
        rows = streams.label_order()  # the table as it is now (tests extend it)
        unknown = sorted(set(values) - {st.name for st in rows})
        if unknown:
            raise DifferlandError(f"labels: unknown stream(s) {unknown}; streams: "
                                  f"{', '.join(st.name for st in rows)}")
        val, wt = {}, {}
        for st in rows:
            if st.name not in values:
                val[st.name] = np.zeros((P, T), np.float32)
                wt[st.name] = np.zeros((P, T), np.float32)
                continue
            v, w = _series(values[st.name], P, T), _series(weights[st.name], P, T)
            ok = np.isfinite(v) & (w > 0)
            val[st.name] = np.where(ok, v, np.float32(0.0))
            wt[st.name] = np.where(ok, w, np.float32(0.0))
        tt = None if time_test is None else np.asarray(time_test, np.float32)
        return cls(val, wt, tt)

    @classmethod
    def from_published(cls, array, time_test=None) -> "Labels":
        """From the published layout: ``array`` (..., 2 * n_streams), per stream the value in
        column ``2 * Stream.label`` and the weight in the next (the golden files' ``labels``).
        Works on numpy and JAX arrays, also inside ``jax.jit``."""
        rows = streams.label_order()
        n = np.shape(array)[-1] if np.ndim(array) else 0
        if np.ndim(array) < 1 or n != 2 * len(rows):
            raise DataValidationError([
                f"labels: shape {tuple(np.shape(array))}, expected (..., {2 * len(rows)}): the "
                f"value and weight of each of the {len(rows)} streams "
                f"({', '.join(s.name for s in rows)})"])
        return cls({st.name: array[..., 2 * st.label] for st in rows},
                   {st.name: array[..., 2 * st.label + 1] for st in rows}, time_test)

    def to_published(self):
        """(..., 2 * n_streams) in the published layout (``time_test`` is not part of it)."""
        rows = streams.label_order()
        missing = [st.name for st in rows if st.name not in self.value]
        if missing:
            raise DifferlandError(f"labels: no stream(s) {missing} for the published layout")
        cols = []
        for st in rows:
            cols += [self.value[st.name], self.weight[st.name]]
        return _xp(cols[0]).stack(cols, axis=-1)

    # -- access -------------------------------------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.value)

    @property
    def shape(self) -> tuple[int, ...]:
        """The leaves' shape: (..., P, T)."""
        return tuple(np.shape(next(iter(self.value.values()))))

    @property
    def nbytes(self) -> int:
        return int(sum(np.asarray(a).nbytes for a in self._leaves()))

    def stream(self, name: str):
        """(value, weight) of stream ``name``, each (..., P, T)."""
        if name not in self.value:
            raise DifferlandError(f"labels: no stream {name!r}; streams: {', '.join(self.value)}")
        return self.value[name], self.weight[name]

    def _leaves(self) -> list:
        return [*self.value.values(), *self.weight.values(),
                *(() if self.time_test is None else (self.time_test,))]

    # -- transformations ----------------------------------------------------------------------
    def map(self, fn: Callable, *others: "Labels") -> "Labels":
        """``fn`` applied leaf by leaf (with the matching leaves of ``others``), e.g. a row
        selection ``lambda a: a[idx]`` or a stack ``lambda *a: np.stack(a)``; numpy-only
        counterpart of ``jax.tree.map``."""
        def each(field: str):
            mine = getattr(self, field)
            return {k: fn(v, *(getattr(o, field)[k] for o in others)) for k, v in mine.items()}

        tt = None if self.time_test is None else fn(self.time_test, *(o.time_test for o in others))
        return Labels(each("value"), each("weight"), tt)

    @staticmethod
    def stack(items: "list[Labels]") -> "Labels":
        """Labels of equal structure stacked along a new leading axis (numpy)."""
        return items[0].map(lambda *a: np.stack(a), *items[1:])

    @staticmethod
    def concatenate(items: "list[Labels]") -> "Labels":
        """Labels of equal structure joined along their leading (pixel) axis (numpy)."""
        return items[0].map(lambda *a: np.concatenate(a, axis=0), *items[1:])

    def with_stream(self, name: str, value=None, weight=None) -> "Labels":
        """A copy with stream ``name``'s value and/or weight replaced."""
        self.stream(name)
        val, wt = dict(self.value), dict(self.weight)
        if value is not None:
            val[name] = value
        if weight is not None:
            wt[name] = weight
        return self._replace(value=val, weight=wt)

    def masked(self, keep) -> "Labels":
        """Every weight multiplied by ``keep`` (broadcast against (..., P, T))."""
        return self._replace(weight={k: w * keep for k, w in self.weight.items()})

    def time_split(self, test) -> "Labels":
        """The labels of one side of the store's time split: with ``test`` (a bool, traced or
        not) only the test-time steps keep their weights, else only the train-time ones; no
        ``time_test`` afterwards. Labels without a time split come back as they are."""
        if self.time_test is None:
            return self
        tt = self.time_test
        keep = _xp(tt).where(test, tt, 1.0 - tt)
        return self.masked(keep)._replace(time_test=None)
