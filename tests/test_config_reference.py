"""docs/config.md is generated from the typed configs and is current; every key has a meaning."""

from pathlib import Path

from differland_dist import config_reference
from differland_dist.config import ExperimentConfig
from differland_dist.experiment.grid import KEYS

ROOT = Path(__file__).resolve().parents[1]


def test_committed_config_reference_is_current():
    assert (ROOT / "docs" / "config.md").read_text() == config_reference.render(), (
        "docs/config.md is stale: python -m differland_dist.config_reference > docs/config.md")


def test_every_key_is_listed_with_a_meaning():
    text = config_reference.render()
    default = ExperimentConfig()
    for section in ("data", "network", "model", "loss", "optimizer", "training", "ray"):
        for f in type(getattr(default, section)).__dataclass_fields__:
            row = next(line for line in text.splitlines() if line.startswith(f"| `{section}.{f}` |"))
            assert not row.endswith("|  |"), f"{section}.{f} has no comment in its class"
    for k in KEYS:
        assert f"| `{k}` |" in text


def test_comments_are_read_from_every_form():
    from differland_dist.config import TrainingConfig
    from differland_dist.model.config import ModelConfig
    from differland_dist.network.mlp import NetworkConfig

    c = config_reference.field_comments(TrainingConfig)
    assert c["on_nonfinite"] == "skip | reduce_lr | rollback"            # trailing comment
    assert c["pixels_per_call"].startswith("most padded pixels per compiled call and device")
    assert "(None:" in c["pixels_per_call"] and len(c["pixels_per_call"]) > 60  # continued lines
    assert config_reference.field_comments(NetworkConfig)["head_init_scale"].startswith(
        "Factor on the three heads")                                     # #: lines above
    assert config_reference.field_comments(ModelConfig)["unroll"].startswith(
        "time steps unrolled")                                           # class docstring
