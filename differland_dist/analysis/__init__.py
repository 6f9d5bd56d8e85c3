"""Analyses of an experiment's learnt parameter fields (the paper's findings): generalisation
by predictor set, variance partitioning (PFT vs environment), parameter gradients (PCA), SHAP
attributions, ensemble uncertainty, and, on the synthetic Earth, identifiability and the checks
against the truth. ``differland analyze`` runs them all (:func:`pipeline.run_analysis`)."""
