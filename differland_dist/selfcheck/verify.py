"""Check this installation (CPU/GPU/TPU) against golden outputs of the published model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from differland_dist.errors import DataValidationError
from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import TERMS, LossConfig, loss_from_x
from differland_dist.model import simulate
from differland_dist.vocabulary.dalec_io import OUTPUTS
from differland_dist.model.config import PARITY_MODEL
from differland_dist.model.structures import Forcing
from differland_dist.network import NetworkOutputs

log = logging.getLogger(__name__)

#: Spec tolerances (float32).
OUTPUT_RTOL, OUTPUT_ATOL_SCALE, LOSS_RTOL, GRAD_RTOL = 1e-4, 1e-5, 1e-4, 1e-3
REQUIRED = ("met", "x_dalec", "x_pheno", "x_pools", "dalec_params", "pheno_params",
            "initial_pools", "outputs", "final_pools", "labels", "loss", "grad_x_dalec",
            "grad_x_pheno", "grad_x_pools")


@dataclass(frozen=True)
class VerifyResult:
    name: str
    pixels: int
    steps: int
    outputs: float      # worst error as a fraction of the tolerance (<= 1 passes)
    final_pools: float
    loss: float
    gradients: float
    worst_output: str

    @property
    def passed(self) -> bool:
        return max(self.outputs, self.final_pools, self.loss, self.gradients) <= 1.0


def embedded_golden_files() -> list[Path]:
    root = resources.files("differland_dist") / "golden"
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".npz"))


def verify_file(path: str | Path) -> VerifyResult:
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        g = {k: z[k] for k in z.files}
    missing = [k for k in REQUIRED if k not in g]
    if missing:
        raise DataValidationError([f"missing array {k!r}" for k in missing], source=str(path))
    P, T, _ = g["met"].shape
    # the golden files hold the published label layout: by stream name from here on
    if g["labels"].shape[:2] != (P, T):
        raise DataValidationError([f"labels: shape {g['labels'].shape}, expected ({P}, {T}, ...) "
                                   "like met"], source=str(path))
    try:
        labels = Labels.from_published(g["labels"])
    except DataValidationError as e:
        raise DataValidationError(e.problems, source=str(path)) from None
    final, out = simulate(g["met"], g["dalec_params"], g["pheno_params"], g["initial_pools"],
                          closed_budget=False)
    ref = g["outputs"]
    scale = np.abs(ref).max(axis=(0, 1))
    err = np.abs(np.asarray(out) - ref) / (OUTPUT_RTOL * np.abs(ref) + OUTPUT_ATOL_SCALE * scale + 1e-30)
    per_output = err.max(axis=(0, 1))
    ferr = np.abs(np.asarray(final) - g["final_pools"]) / (
        OUTPUT_RTOL * np.abs(g["final_pools"]) + OUTPUT_ATOL_SCALE * np.abs(g["final_pools"]).max(0) + 1e-30)

    cfg = LossConfig(parity=True, enabled={t: True for t in TERMS})
    X = NetworkOutputs(jnp.asarray(g["x_dalec"]), jnp.asarray(g["x_pheno"]), jnp.asarray(g["x_pools"]))

    def fn(X):
        return loss_from_x(X, Forcing.from_array(jnp.asarray(g["met"])),
                           jax.tree.map(jnp.asarray, labels), jnp.zeros(P, jnp.int32),
                           jnp.ones(P, jnp.float32), 1, cfg, PARITY_MODEL)

    (total, _), grads = jax.jit(jax.value_and_grad(fn, has_aux=True))(X)
    lerr = abs(float(total) - float(g["loss"])) / (LOSS_RTOL * abs(float(g["loss"])))
    gerr = max(float(np.abs(np.asarray(gr) - g[k]).max() / (GRAD_RTOL * np.abs(g[k]).max()))
               for gr, k in zip(grads, ("grad_x_dalec", "grad_x_pheno", "grad_x_pools")))
    return VerifyResult(path.name, P, T, float(per_output.max()), float(ferr.max()), lerr, gerr,
                        OUTPUTS[int(np.argmax(per_output))])
