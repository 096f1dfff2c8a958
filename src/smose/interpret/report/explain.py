"""``smose explain``: roll out the run's policy, read its files, build every section of the report and write it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from smose.errors import SmoseError
from smose.interpret.report.document import figures, render_html, render_markdown
from smose.interpret.report.sections import (
    section_experts,
    section_means,
    section_router,
    section_summary,
    section_usage,
)
from smose.interpret.report.tree_sections import load_tree_files, section_returns, section_trees
from smose.interpret.report.view import RunView, collect_rollouts
from smose.limits import MAX_EPISODES
from smose.run import CONFIG_FILE, EVAL_FILE, MODEL_META, REPORT_DIR, REPORT_HTML, REPORT_MARKDOWN
from smose.serialization import atomic_write_bytes, read_json


def explain(
    run_dir: Path | str,
    episodes: int = 5,
    seed: int = 0,
    distill_missing: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> Path:
    """Write ``RUN_DIR/report/index.html`` and ``report.md`` (+ PNGs); returns the path of index.html.

    ``episodes`` deterministic episodes (the reset seeds ``smose eval --seed`` uses) give the usage, timeline and
    per-expert means. Without distilled trees, ``distill_missing`` runs ``smose distill`` with its defaults first;
    with stale trees (distilled from another model than the run's), with the settings they were made with;
    otherwise the tree sections say how to get them, and stale trees are named at the top and not shown.
    """
    from smose.serialization import check_env_compatible, load_model
    from smose.tasks.envs import feature_names, make_run_env

    if not isinstance(episodes, int) or episodes < 1:
        raise SmoseError(f"episodes must be an integer >= 1, got {episodes!r}")
    if episodes > MAX_EPISODES:
        raise SmoseError(f"episodes must be at most {MAX_EPISODES:,}, got {episodes}")
    run_dir = Path(run_dir)
    actor, meta = load_model(run_dir)
    config_path, eval_path = run_dir / CONFIG_FILE, run_dir / EVAL_FILE
    config = read_json(config_path, "training configuration") if config_path.is_file() else None
    evaluation = read_json(eval_path, "evaluation") if eval_path.is_file() else None
    arch = meta["architecture"]
    env = make_run_env(meta)
    check_env_compatible(meta, env, run_dir / MODEL_META)
    try:
        rollouts = collect_rollouts(actor, env, episodes, seed)
        obs_names, act_names = feature_names(meta, env)
    finally:
        env.close()
    view = RunView(run_dir, actor, meta, config, evaluation, obs_names, act_names, rollouts,
                   rollouts.states.std(axis=0), seed)
    if view.smose is not None:
        trees, fidelity, notes, warning = load_tree_files(view, progress, distill_missing)
    else:
        trees, fidelity, notes, warning = {}, None, [], None
    sections = [section_summary(view, fidelity, warning), section_router(view), section_experts(view),
                section_usage(view), section_means(view), section_trees(view, trees, fidelity, notes),
                section_returns(view, fidelity, warning)]

    title = f"SMOSE report: {meta['env_id']}, {arch['algo']}"
    subtitle = f"run {run_dir.resolve()}"
    out = run_dir / REPORT_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.png"):  # figures of an earlier report that this one may not redraw
            old.unlink()
        for section in sections:
            for figure in figures(section.blocks):
                atomic_write_bytes(out / figure.name, figure.png)
        atomic_write_bytes(out / REPORT_MARKDOWN, render_markdown(title, subtitle, sections).encode())
        atomic_write_bytes(out / REPORT_HTML, render_html(title, subtitle, sections).encode())
    except OSError as exc:
        raise SmoseError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    return out / REPORT_HTML
