"""Import the paper's published network pickle through an allow-listed unpickler.

A pickle can run arbitrary code when loaded. The published file needs exactly four globals
(numpy.ndarray, numpy.dtype, numpy's array reconstructor, and JAX's array reconstructor);
anything else is refused before it is called. JAX's reconstructor is replaced by a local
function that rebuilds a plain numpy array, so no JAX internals run either.
"""

from __future__ import annotations

import io
import pickle  # only the Unpickler class, restricted below; we never write pickles
from typing import Any

import numpy as np

from differland_dist.errors import CheckpointError
from differland_dist.network.mlp import Dense, NetworkParams

_np_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's multiarray._reconstruct


def _reconstruct_array(fun, args, arr_state, aval_state):
    if fun is not _np_reconstruct:
        raise CheckpointError(f"refused: array reconstructor calls {fun!r}")
    arr = fun(*args)
    arr.__setstate__(arr_state)
    return np.asarray(arr)


ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,  # same, numpy < 2 spelling
    ("jax._src.array", "_reconstruct_array"): _reconstruct_array,
}


class AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused to unpickle {module}.{name}: only "
                + ", ".join(f"{m}.{n}" for m, n in ALLOWED) + " are allowed") from None


def load_published_network(data: bytes, source: str = "<pickle>") -> NetworkParams:
    """Network parameters from the bytes of a published ``*.pickle`` (4-tuple of layer lists)."""
    try:
        obj = AllowListUnpickler(io.BytesIO(data)).load()
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    except Exception as e:
        raise CheckpointError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e
    if not (isinstance(obj, (tuple, list)) and len(obj) == 4):
        raise CheckpointError(f"{source}: expected a 4-tuple (embedding, process head, pool head, "
                              f"phenology head), got {type(obj).__name__}")

    def layers(part, what):
        if not isinstance(part, (list, tuple)) or not part:
            raise CheckpointError(f"{source}: {what} is not a list of layers")
        out = []
        for i, d in enumerate(part):
            if not (isinstance(d, dict) and {"weights", "biases"} <= set(d)):
                raise CheckpointError(f"{source}: {what} layer {i} lacks 'weights'/'biases'")
            out.append(Dense(np.asarray(d["weights"], np.float32), np.asarray(d["biases"], np.float32)))
        return out

    embed, dalec, pools, pheno = (layers(p, w) for p, w in zip(obj, ("embedding", "process head", "pool head", "phenology head")))
    for head, n_out, what in ((dalec, 31, "process head"), (pools, 7, "pool head"), (pheno, 2, "phenology head")):
        if len(head) != 1 or head[0].weights.shape[1] != n_out:
            raise CheckpointError(f"{source}: {what} must be one linear layer with {n_out} outputs, "
                                  f"got shapes {[tuple(h.weights.shape) for h in head]}")
    return NetworkParams(tuple(embed), dalec[0], pools[0], pheno[0])
