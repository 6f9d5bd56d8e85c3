"""Model options that are configuration, not parameters."""

from __future__ import annotations

from dataclasses import dataclass

from differland_dist.common import checks


@dataclass(frozen=True)
class ModelConfig:
    """How DALEC is run.

    closed_budget: True closes every pool budget at clamps; False reproduces the published
      model's two clamping quirks (see ``dalec.step``), as parity with the paper requires.
    checkpoint_every: scan segment length rematerialised under autodiff; 0 = none,
      -1 = automatic (~sqrt(T)), bounding gradient memory as the series grows.
    unroll: time steps unrolled per loop iteration (a speed knob; results do not change).
    pixel_block: pixels rolled out together; larger batches run as blocks in sequence.
      -1 = automatic (256 on a CPU, none on GPUs/TPUs), 0 = never (the default: blocking was
      measured no faster on the 2-core CPU, see docs/benchmarks.md).
    """

    closed_budget: bool = True
    checkpoint_every: int = -1
    unroll: int = 1
    pixel_block: int = 0

    def __post_init__(self):
        checks.boolean("model.closed_budget", self.closed_budget)
        for name, lo in (("checkpoint_every", -1), ("unroll", 1), ("pixel_block", -1)):
            object.__setattr__(self, name, checks.integer(f"model.{name}", getattr(self, name), lo))

    def segment(self, n_steps: int) -> int:
        # imported here: rollout imports JAX; the model config is plain data (differland_dist.config
        # reads it) and its module stays JAX-free
        from differland_dist.model.rollout import default_checkpoint_every

        return default_checkpoint_every(n_steps) if self.checkpoint_every == -1 else self.checkpoint_every


    def block(self) -> int:
        if self.pixel_block != -1:
            return self.pixel_block
        # imported here: the model config's module stays JAX-free (see segment)
        import jax

        return CPU_PIXEL_BLOCK if jax.default_backend() == "cpu" else 0


#: Pixels per block on CPUs (measured: docs/benchmarks.md, "where the time goes").
CPU_PIXEL_BLOCK = 256

PARITY_MODEL = ModelConfig(closed_budget=False, checkpoint_every=0, pixel_block=0)
