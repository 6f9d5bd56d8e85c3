"""differland_dist: distributed calibration of the DifferLand hybrid land model."""

__version__ = "0.1.0"
