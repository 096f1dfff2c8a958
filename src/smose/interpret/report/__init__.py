"""The per-run report of ``smose explain``: what the controller is, how it was trained and what it does.

``explain(run_dir)`` writes ``RUN_DIR/report/index.html`` (one self-contained file: the figures are inlined as base64
PNG, the style sheet is inline, nothing is fetched, so it opens offline and can be mailed) and ``report.md`` with the
same text and the PNG files beside it. Every section is an HTML ``<section id=...>``:

- ``summary``: env, algorithm, parameter counts, training curve, final evaluation;
- ``router``: router weights Θ (features × experts) and the features that favour each expert;
- ``experts``: the mean-head weights W_k (features × actions) of every used expert, strongest gains in words;
- ``usage``: share of steps per expert and a timeline of one deterministic episode with the key state variables;
- ``means``: mean state and mean action while each expert is active;
- ``trees``: the distilled trees as diagrams and rules, with their fidelity;
- ``returns``: return of the tree-routed policy next to the neural router's.

Weights are ranked by |w|·σ (σ: standard deviation of the feature over the visited states), i.e. by how much a
typical variation of the feature moves the score or action, so that features with large ranges (velocities) and small
ones (heights, angles) are compared fairly; the raw weights are what the heat maps show.

The package's modules: ``explain`` (the command), ``view`` (the rollouts and files the sections read),
``sections`` and ``tree_sections`` (the sections' text and tables), ``figures`` (matplotlib) and ``document`` (the
blocks and their HTML/Markdown rendering).
"""

from smose.interpret.report.explain import explain
from smose.interpret.report.figures import EXPERT_COLORS, HEATMAP_MAX_FEATURES, expert_color, shown_features
from smose.interpret.report.view import fmt, read_curve, segments
from smose.run import REPORT_DIR

__all__ = ["EXPERT_COLORS", "HEATMAP_MAX_FEATURES", "REPORT_DIR", "explain", "expert_color", "fmt", "read_curve",
           "segments", "shown_features"]
