"""Model options that are configuration, not parameters."""

from __future__ import annotations

from dataclasses import dataclass

from differland_dist.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """How DALEC is run.

    closed_budget: True closes every pool budget at clamps; False reproduces the published
      model's two clamping quirks (see ``dalec.step``), as parity with the paper requires.
    checkpoint_every: scan segment length rematerialised under autodiff; 0 = none,
      -1 = automatic (~sqrt(T)), bounding gradient memory as the series grows.
    unroll: time steps unrolled per loop iteration (a speed knob; results do not change).
    """

    closed_budget: bool = True
    checkpoint_every: int = -1
    unroll: int = 1

    def __post_init__(self):
        if self.checkpoint_every < -1:
            raise ConfigError(f"model.checkpoint_every must be -1, 0 or > 0, got {self.checkpoint_every}")
        if self.unroll < 1:
            raise ConfigError(f"model.unroll must be >= 1, got {self.unroll}")

    def segment(self, n_steps: int) -> int:
        from differland_dist.model.rollout import default_checkpoint_every

        return default_checkpoint_every(n_steps) if self.checkpoint_every == -1 else self.checkpoint_every


PARITY_MODEL = ModelConfig(closed_budget=False, checkpoint_every=0)
