"""The non-finite policy is a pure decision: the trainer only executes it."""

import pytest

from differland_dist.distributed.policy import NonFiniteDecision, on_nonfinite


def test_each_action_and_the_limit():
    assert on_nonfinite("skip", 0, 3, 1.0, 1.0, 0.5) == NonFiniteDecision("skip", 1, 1.0)
    assert on_nonfinite("reduce_lr", 1, 3, 0.5, 1.0, 0.5) == NonFiniteDecision("reduce_lr", 2, 0.25)
    # rollback restarts at the smaller of the current and the checkpoint's scale, reduced
    assert on_nonfinite("rollback", 0, 3, 1.0, 0.5, 0.5) == NonFiniteDecision("rollback", 1, 0.25)
    assert on_nonfinite("rollback", 0, 3, 0.25, 1.0, 0.5) == NonFiniteDecision("rollback", 1, 0.125)
    # the limit wins over every action, and counts the step that broke it
    for action in ("skip", "reduce_lr", "rollback"):
        assert on_nonfinite(action, 3, 3, 1.0, 1.0, 0.5) == NonFiniteDecision("stop", 4, 1.0)
        assert on_nonfinite(action, 2, 3, 1.0, 1.0, 0.5).action == action


def test_unknown_action_is_refused():
    with pytest.raises(ValueError, match="training.on_nonfinite"):
        on_nonfinite("ignore", 0, 3, 1.0, 1.0, 0.5)
