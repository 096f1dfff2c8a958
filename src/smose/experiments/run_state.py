"""The state of a run directory as a sweep sees it: which configuration it holds (its result key), whether it is
finished, can be resumed, or how far it got.

Two runs are the same run when their result keys are equal: the configuration fields that change what is computed,
with the ones an algorithm ignores left out. The sweep, its export directory and the results table all compare runs
this way.
"""

from __future__ import annotations

import json
from pathlib import Path

from smose.errors import SmoseError
from smose.run import RunDir, read_metrics
from smose.training.checkpoint import checkpoint_path
from smose.training.config import TrainConfig, read_run_config

# Algorithms whose network depends on M (SAC-M and SAC-S are sized from it) and on λ.
USES_EXPERTS = ("smose", "sac-m", "sac-s")
USES_LB = ("smose",)
# Fields that do not change what a run computes; ignored when deciding whether two runs are the same. The two update
# paths compute the same maths and differ only in rounding, as thread counts do; config.json files written before
# the field existed read as the default, "fused".
NON_RESULT_FIELDS = ("out", "threads", "checkpoint_every", "update")


def result_key(config: TrainConfig) -> str:
    """Two runs with the same key compute the same thing (up to the machine): the fields that affect the result,
    with λ as its effective value and the settings an algorithm ignores left out."""
    data = {k: v for k, v in config.to_dict().items() if k not in NON_RESULT_FIELDS}
    if not data["env_kwargs"]:  # runs from before --env-kwargs existed keep their keys
        del data["env_kwargs"]
    data["lb_weight"] = config.effective_lb_weight
    if config.algo not in USES_EXPERTS:
        data.pop("experts")
    if config.algo not in USES_LB:
        for name in ("lb_weight", "lb_loss", "lb_noise"):
            data.pop(name)
    return json.dumps(data, sort_keys=True)


def finished_steps(run_dir: Path) -> int | None:
    """trained_steps of a run whose model and final evaluation are both written; None otherwise."""
    paths = RunDir(run_dir)
    if not paths.eval.is_file() or not paths.model_meta.is_file():
        return None
    try:
        steps = json.loads(paths.model_meta.read_text()).get("trained_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None


def run_config(run_dir: Path) -> TrainConfig | None:
    try:
        return read_run_config(RunDir(run_dir).config)
    except SmoseError:
        return None


def is_finished(run_dir: Path, config: TrainConfig) -> bool:
    """The run in ``run_dir`` is complete and was trained with ``config`` (up to the non-result fields)."""
    found = run_config(run_dir)
    return (found is not None and result_key(found) == result_key(config)
            and finished_steps(run_dir) == config.steps == found.steps)


def can_resume(run_dir: Path) -> bool:
    """An unfinished run that holds a checkpoint for `smose train --resume`."""
    return checkpoint_path(run_dir).is_file()


def last_step(run_dir: Path) -> int:
    """The step of the last row of the run's metrics.csv (0 if there is none yet, or it cannot be read): how far a
    run got. Reads only the file's end, so it can be polled while the run trains."""
    try:
        rows = read_metrics(run_dir, last=1)
    except SmoseError:
        return 0
    step = rows[-1].get("step") if rows else None
    return int(step) if step is not None and step.isdigit() else 0
