"""Interpretation: the tree format and router (numpy only), distillation, the oblique CMA-ES tree, the deployable
tree-routed controller, the report and the video."""
