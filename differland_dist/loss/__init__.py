"""The DifferLand loss: named terms, configuration, and the end-to-end objective."""

from differland_dist.loss.objective import (
    loss_from_parameters, loss_from_x, network_loss, network_value_and_grad)
from differland_dist.loss.terms import (
    EDC_FLUXES, TERM_NAMES, TERMS, LossConfig, loss_terms, required_series, total_loss)

__all__ = ["EDC_FLUXES", "TERM_NAMES", "TERMS", "LossConfig", "loss_terms", "required_series",
           "total_loss", "loss_from_parameters", "loss_from_x", "network_loss",
           "network_value_and_grad"]
