"""The report's sections on the controller itself: summary, router weights, expert weights, expert usage and the
per-expert mean state and action."""

from __future__ import annotations

import numpy as np

from smose.choices import KINDS
from smose.evaluate import success_fields
from smose.interpret.report.document import Block, Bullets, Card, Figure, Note, Section, Table, Text
from smose.interpret.report.figures import (
    expert_color,
    figure_png,
    grouped_bars,
    heatmap,
    heatmap_height,
    plt,  # pyplot on the headless backend figures.py sets
    shown_features,
    shown_note,
    success_curve,
)
from smose.interpret.report.view import (
    RunView,
    fmt,
    fmt_pct,
    grows,
    key_variables,
    read_curve,
    router_influence,
    segments,
)
from smose.rollout import EVAL_SEED_OFFSET
from smose.run import METRICS_FILE
from smose.tasks.envs import format_env_kwargs

TIMELINE_VARIABLES = 3
CALLOUTS_PER_EXPERT = 3
MEAN_STATE_MAX_FEATURES = 24


def dense_note(view: RunView, what: str) -> Note:
    return Note(f"This run is a dense {view.algo} baseline (an MLP actor): it has no router and no experts, so there "
                f"is no {what}. Train with --algo smose to get one.")


def at_a_glance(view: RunView, fidelity: dict | None) -> list[str]:
    """The numbers a reader wants first: how many experts act, how often control switches, how good the trees are."""
    roll = view.rollouts
    success = success_fields(roll.successes)
    solved = (f", success rate {fmt_pct(success['success_rate'])} (episodes in which the env reports the task "
              "solved)") if success else ""
    items = [(f"Deterministic policy: mean return {fmt(float(np.mean(roll.returns)))}{solved} over "
              f"{len(roll.returns)} episode(s) of {fmt(len(roll.episode) / len(roll.returns))} steps on average.")]
    actor = view.smose
    if actor is None:
        return items
    usage, used = view.usage(), view.used_experts()
    top = int(np.argmax(usage))
    runs = sum(len(segments(roll.experts[roll.episode == e])) for e in range(len(roll.returns)))
    chooser = "router"
    if view.fixed_trees is not None:
        chooser = "trees"
        record = view.finetune
        items.append(f"Fixed {view.fixed_trees.tree_kind} trees choose the expert at every step: the controller was "
                     f"fine-tuned under them (from {view.finetune_source} at step "
                     f"{record.get('source_step', '?')}); the router's scores only give the gate that scales the "
                     "chosen expert's output.")
    items.append(f"{len(used)} of {actor.n_experts} experts act; expert {top} takes the most steps "
                 f"({fmt_pct(usage[top])}). An expert keeps control for {fmt(len(roll.experts) / runs)} steps on "
                 f"average before the {chooser} switch.")
    width = actor.n_obs + 1  # weights and bias per row
    items.append(f"Each decision reads {actor.parameter_counts()['active']:,} numbers: the router's "
                 f"{actor.n_experts}×{width} score weights and one expert's {actor.n_act}×{width} gains.")
    for kind in KINDS:
        if fidelity and kind in fidelity:
            returns = fidelity.get("returns", {})
            line = (f"Depth-{fidelity.get('depth')} {kind} trees pick the router's expert on "
                    f"{fmt_pct(fidelity[kind].get('agreement'))} of held-out states")
            if fidelity[kind].get("closed_loop_agreement") is not None:
                line += (f" and on {fmt_pct(fidelity[kind]['closed_loop_agreement'])} of the steps they route "
                         "themselves")
            if kind in returns and "neural" in returns:
                line += (f"; routing with them returns {fmt(returns[kind]['mean'])} vs "
                         f"{fmt(returns['neural']['mean'])} for the neural router")
                if returns.get("ratio", {}).get(kind) is not None:
                    line += f" (ratio {returns['ratio'][kind]:.3f})"
            items.append(line + ".")
    return items


def section_summary(view: RunView, fidelity: dict | None, warning: Note | None = None) -> Section:
    """The report's first section; ``warning`` (e.g. stale trees left out) goes first of all."""
    arch, counts, steps = view.meta["architecture"], view.actor.parameter_counts(), view.meta.get("trained_steps")
    if view.fixed_trees is not None:
        shape = (f"SMOSE fine-tuned under fixed {view.fixed_trees.tree_kind} trees: the trees choose 1 of "
                 f"{arch['n_experts']} linear experts per step, the linear router's softmax gates it")
    elif view.smose is not None:
        shape = f"SMOSE: linear router choosing 1 of {arch['n_experts']} linear experts per step"
    else:
        shape = f"dense SAC baseline {view.algo}: MLP with hidden layers {arch['hidden']}"
    rows = [
        ["environment", f"{view.meta['env_id']} ({arch['n_obs']} observations, {arch['n_act']} actions)"
                        + "".join(f", {word}" for word in format_env_kwargs(view.meta.get("env_kwargs", {})))],
        ["algorithm", shape],
        ["trained steps", f"{steps:,}" if isinstance(steps, int) else "unknown"],
        ["parameters: train", f"{counts['train']:,} (everything the optimiser updates)"],
        ["parameters: deploy", f"{counts['deploy']:,} (what the deterministic controller needs)"],
        ["parameters: active", f"{counts['active']:,} (used for one decision)"],
    ]
    cfg = view.config
    if cfg:
        settings = f"seed {cfg.get('seed')}, batch {cfg.get('batch_size')}, γ={cfg.get('gamma')}"
        if view.smose is not None:
            settings += f", load balancing {cfg.get('lb_loss')} λ={cfg.get('lb_weight_effective')}"
        rows.append(["training settings", settings])
    blocks: list[Block] = [*([warning] if warning else []), Bullets(at_a_glance(view, fidelity)),
                           Table(["", ""], rows)]

    metrics = read_curve(view.run_dir / METRICS_FILE)
    episodes, evals = metrics.episodes, metrics.evals
    if episodes or evals:
        success = bool(metrics.episode_success or metrics.eval_success)
        fig, axes = plt.subplots(2 if success else 1, 1, figsize=(10, 6.2 if success else 3.8), sharex=True,
                                 squeeze=False, gridspec_kw={"height_ratios": [1.6, 1] if success else [1]})
        ax = axes[0, 0]
        if episodes:
            steps, returns = np.array(episodes).T
            ax.scatter(steps, returns, s=6, color="#9bb7d4", alpha=0.6, label="training episode (stochastic policy)")
            window = max(1, len(returns) // 25)
            if window > 1:
                smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1:], smooth, color="#1f5c99", lw=1.6, label=f"moving mean of {window} episodes")
        if evals:
            steps, means, stds = np.array(evals).T
            ax.plot(steps, means, "o-", color="#d62728", lw=2, ms=4, label="evaluation (deterministic), mean ± std")
            ax.fill_between(steps, means - stds, means + stds, color="#d62728", alpha=0.15)
        axes[-1, 0].set_xlabel("environment steps")
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=9)
        ax.set_title("Training curve")
        if success:
            success_curve(axes[1, 0], metrics)
        blocks.append(Figure("training-curve.png", figure_png(fig),
                             f"Return vs environment steps from metrics.csv ({len(episodes)} training episodes, "
                             f"{len(evals)} evaluations)" + ("; below, the success rate." if success else ".")))
    else:
        blocks.append(Note("metrics.csv has no finished episodes or evaluations yet, so there is no training curve."))

    ev = view.evaluation
    if ev:
        eval_rows = [["mean return ± std", f"{fmt(ev.get('mean'))} ± {fmt(ev.get('std'))}"],
                     ["min / max", f"{fmt(ev.get('min'))} / {fmt(ev.get('max'))}"],
                     *([["success rate", fmt_pct(ev["success_rate"])]] if "success_rate" in ev else []),
                     ["episodes", str(ev.get("episodes"))],
                     ["mean episode length", fmt(ev.get("mean_length"))],
                     ["action mode", str(ev.get("mode", "gated"))],
                     ["written by", f"smose {ev.get('source', 'eval')}"
                      + (f" at step {ev['step']:,}" if isinstance(ev.get("step"), int) else "")]]
        if ev.get("expert_usage"):
            usage = ", ".join(f"{m}: {fmt_pct(u)}" for m, u in enumerate(ev["expert_usage"]))
            eval_rows.append(["expert usage", usage])
        blocks += [Text("Final deterministic evaluation (eval.json):"), Table(["", ""], eval_rows)]
    else:
        blocks.append(Note(f"No eval.json yet; run `smose eval {view.run_dir}` to evaluate the policy."))
    return Section("summary", "Summary", blocks)


def section_router(view: RunView) -> Section:
    section = Section("router", "Router weights")
    actor = view.smose
    if actor is None:
        section.blocks.append(dense_note(view, "router to show"))
        return section
    theta = actor.router.weight.detach().numpy().astype(np.float64)  # [M, n_obs]
    bias = actor.router.bias.detach().numpy().astype(np.float64)
    shown = shown_features(router_influence(view))
    matrix = np.vstack([theta.T[shown], bias[None, :]])  # features (+ bias) x experts
    labels = [f"expert {m}" for m in range(actor.n_experts)]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.75 * actor.n_experts + 3.5), heatmap_height(len(matrix))))
    image = heatmap(ax, matrix, [view.obs_names[f] for f in shown] + ["bias c"], labels, float(np.abs(matrix).max()),
                    [expert_color(m) for m in range(actor.n_experts)])
    fig.colorbar(image, ax=ax, label="router weight Θ (score change per unit of the feature)")
    ax.set_title("Router: score_k = Θ_k · s + c_k, the highest score picks expert k")
    if view.fixed_trees is not None:
        ax.set_title("Router: score_k = Θ_k · s + c_k, whose softmax gates the expert the trees pick")
        section.blocks += [
            Note("This controller's expert is chosen by its fixed trees (section 'Distilled decision trees'), not by "
                 "the highest score: the scores only give the gate g = softmax(score)_k, the factor that scales the "
                 "chosen expert k's output (its tanh input) in gated mode."),
            Figure("router-weights.png", figure_png(fig), "Router weights Θ (features × experts) and biases, "
                   "diverging colours centred at 0."),
        ]
        return section
    section.blocks += [
        Text("Every step the router scores each expert with a linear function of the state and hands control to the "
             "expert with the highest score. Red cells raise an expert's score as the feature grows, blue cells "
             "lower it. Only differences between experts matter: a weight all experts share shifts every score "
             "equally."),
        Figure("router-weights.png", figure_png(fig), "Router weights Θ (features × experts) and biases, diverging "
               "colours centred at 0." + shown_note(shown, actor.n_obs, "that sway the router most (spread of Θ "
                                                    "across experts times the feature's σ)")),
    ]
    # What makes expert k win: its weight above the experts' mean weight on the same feature, times the feature's σ.
    relative = (theta - theta.mean(axis=0, keepdims=True)) * view.sigma[None, :]
    items = []
    for m in view.used_experts():
        order = np.argsort(-np.abs(relative[m]))[:2]
        reasons = [f"{view.obs_names[f]} {grows(relative[m, f])} (Θ={theta[m, f]:+.2f}, experts' mean "
                   f"{theta[:, f].mean():+.2f}: a rise of one σ moves its score by {relative[m, f]:+.2f} against the "
                   "average expert)" for f in order]
        items.append(f"Expert {m} is favoured when " + " and when ".join(reasons) + ".")
    if items:
        section.blocks += [Text("What favours each used expert most (ranked by |Θ_kf − mean_j Θ_jf| · σ_f):"),
                           Bullets(items)]
    return section


def section_experts(view: RunView) -> Section:
    section = Section("experts", "Expert weights")
    actor = view.smose
    if actor is None:
        section.blocks.append(dense_note(view, "expert to show"))
        return section
    used = view.used_experts()
    n_act = actor.n_act
    weight = actor.expert_weight.detach().numpy()[:, :n_act, :].astype(np.float64)  # mean heads [M, n_act, n_obs]
    bias = actor.expert_bias.detach().numpy()[:, :n_act].astype(np.float64)
    vmax = float(max(np.abs(weight[used]).max(), np.abs(bias[used]).max()))
    section.blocks.append(Text(
        "Each expert is a linear controller: the action is tanh(g · (W_k s + b_k)) scaled to the action bounds, where "
        "g is the router's softmax probability of the chosen expert. The heat maps show W_k (rows: state features, "
        "columns: actions) on one shared colour scale, so experts can be compared cell by cell."))
    unused = sorted(set(range(actor.n_experts)) - set(used))
    if unused:
        section.blocks.append(Note(f"Expert(s) {', '.join(map(str, unused))} were never chosen in the "
                                   f"{len(view.rollouts.returns)} deterministic episodes, so they are not shown."))
    usage = view.usage()
    for m in used:
        shown = shown_features((np.abs(weight[m]) * view.sigma[None, :]).max(axis=0))
        matrix = np.vstack([weight[m].T[shown], bias[m][None, :]])
        fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * n_act + 3.5), heatmap_height(len(matrix))))
        image = heatmap(ax, matrix, [view.obs_names[f] for f in shown] + ["bias b"], view.act_names, vmax)
        fig.colorbar(image, ax=ax, label="gain w (pre-tanh action per unit of the feature)")
        ax.set_title(f"Expert {m}  (active {fmt_pct(usage[m])} of steps)", color=expert_color(m), fontweight="bold")
        effect = weight[m] * view.sigma[None, :]  # [n_act, n_obs]
        top = np.argsort(-np.abs(effect), axis=None)[:CALLOUTS_PER_EXPERT]
        sentences = []
        for flat in top:
            a, f = np.unravel_index(flat, effect.shape)
            w = weight[m, a, f]
            direction = "up" if w > 0 else "down"
            sentences.append(f"Expert {m} pushes {view.act_names[a]} {direction} when {view.obs_names[f]} grows "
                             f"(w={w:+.2f}; a rise of one σ moves it by {effect[a, f]:+.2f} before tanh).")
        caption = f"Expert {m}: mean-head weights W_{m} (features × actions) and bias." + shown_note(
            shown, actor.n_obs, "with the strongest gains (largest |w|·σ over the actions)")
        section.blocks.append(Card([Figure(f"expert-{m}.png", figure_png(fig), caption),
                                    Bullets(sentences)]))
    return section


def section_usage(view: RunView) -> Section:
    section = Section("usage", "Expert usage")
    actor = view.smose
    if actor is None:
        section.blocks.append(dense_note(view, "expert usage to show"))
        return section
    usage = view.usage()
    roll = view.rollouts
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * actor.n_experts + 2), 3.2))
    bars = ax.bar(range(actor.n_experts), 100 * usage, color=[expert_color(m) for m in range(actor.n_experts)])
    ax.bar_label(bars, labels=[f"{100 * u:.1f}%" for u in usage], fontsize=8)
    ax.set_xticks(range(actor.n_experts), [str(m) for m in range(actor.n_experts)])
    ax.set_xlabel("expert")
    ax.set_ylabel("share of steps (%)")
    ax.set_ylim(0, max(5.0, 115 * usage.max()))
    ax.set_title(f"Share of steps ({len(roll.returns)} episodes, {len(roll.experts)} steps)")
    ax.grid(axis="y", alpha=0.3)
    section.blocks.append(Figure("expert-usage.png", figure_png(fig), "Share of steps on which each expert acts."))

    steps = roll.first_episode()
    experts = roll.experts[steps]
    runs = segments(experts)
    variables = key_variables(view, min(TIMELINE_VARIABLES, actor.n_obs))
    t = np.arange(len(steps))
    rows = 2 + len(variables)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.1 + 1.45 * rows), sharex=True,
                             gridspec_kw={"height_ratios": [1.2] + [1.0] * (rows - 1)})
    band, lanes = axes[0], view.used_experts()  # one lane per expert that acts at all
    for start, end, m in runs:
        band.barh(lanes.index(m), end - start, left=start - 0.5, height=0.8, color=expert_color(m))
    band.set_yticks(range(len(lanes)), [f"expert {m}" for m in lanes], fontsize=8)
    band.set_ylim(len(lanes) - 0.4, -0.6)
    band.set_title(f"One deterministic episode (reset seed {view.seed + EVAL_SEED_OFFSET}): active expert, key state "
                   "variables and actions", fontsize=11)
    for ax, f in zip(axes[1:], variables):
        ax.plot(t, roll.states[steps, f], color="#222", lw=1.2)
        ax.set_ylabel(view.obs_names[f], fontsize=9, rotation=0, ha="right", va="center")
    act_ax = axes[-1]
    for a in range(actor.n_act):
        act_ax.plot(t, roll.actions[steps, a], lw=1.0, label=view.act_names[a])
    act_ax.set_ylabel("actions", fontsize=9, rotation=0, ha="right", va="center")
    act_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    act_ax.set_xlabel("step")
    for ax in axes[1:]:
        ax.grid(alpha=0.25)
        for start, end, m in runs:  # shade each variable's panel with the active expert's colour
            ax.axvspan(start - 0.5, end - 0.5, color=expert_color(m), alpha=0.18, lw=0)
    fig.align_ylabels(axes)
    switches = len(runs) - 1
    section.blocks += [
        Figure("expert-timeline.png", figure_png(fig),
               "Top: which expert acts at each step. Below: the state variables that sway the router most (largest "
               "spread of router weights across experts times the variable's σ) and the actions, shaded by the "
               "active expert."),
        Text(f"This episode lasts {len(steps)} steps with return {fmt(roll.returns[0])}; control changes hands "
             f"{switches} time(s), an expert keeps control for {fmt(len(steps) / max(1, len(runs)))} steps on "
             f"average. Over all {len(roll.returns)} episodes the mean return is {fmt(float(np.mean(roll.returns)))}."),
    ]
    return section


def section_means(view: RunView) -> Section:
    section = Section("means", "Per-expert mean state and action")
    actor = view.smose
    if actor is None:
        section.blocks.append(dense_note(view, "per-expert statistic"))
        return section
    roll, used = view.rollouts, view.used_experts()
    mean, sigma = roll.states.mean(axis=0), np.where(view.sigma > 0, view.sigma, 1.0)
    state_z = np.stack([(roll.states[roll.experts == m].mean(axis=0) - mean) / sigma for m in used], axis=1)
    actions = np.stack([roll.actions[roll.experts == m].mean(axis=0) for m in used], axis=1)
    # Large observation vectors (Ant: 105) keep the variables on which the experts' regions differ most.
    shown = np.sort(np.argsort(-(state_z.max(axis=1) - state_z.min(axis=1)))[:MEAN_STATE_MAX_FEATURES])

    fig, ax = plt.subplots(figsize=(9, max(3.5, 0.38 * len(shown) * max(1, len(used)) ** 0.5 + 1.2)))
    grouped_bars(ax, state_z[shown], [view.obs_names[f] for f in shown], used)
    ax.set_xlabel("mean of the state variable while the expert acts, in σ from the overall mean")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Where each expert acts: standardised mean state")
    section.blocks.append(Figure("mean-state.png", figure_png(fig),
                                 "Mean state while each expert is active, as (mean − overall mean) / σ, so that "
                                 "variables with different units share one axis."
                                 + (f" The {len(shown)} of {actor.n_obs} variables whose means differ most between "
                                    "experts are shown." if len(shown) < actor.n_obs else "")))

    fig, ax = plt.subplots(figsize=(9, max(2.8, 0.5 * actor.n_act * max(1, len(used)) ** 0.5 + 1.2)))
    grouped_bars(ax, actions, view.act_names, used)
    low, high = actor.action_low.numpy(), actor.action_high.numpy()
    if np.allclose(low, low[0]) and np.allclose(high, high[0]):
        for bound in (low[0], high[0]):
            ax.axvline(bound, color="#999", lw=0.8, ls="--")
    ax.set_xlabel("mean action (env units; dashed: action bounds)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("What each expert does: mean action")
    section.blocks.append(Figure("mean-action.png", figure_png(fig), "Mean action while each expert is active."))
    rows = [[f"expert {m}", str(int(np.sum(roll.experts == m))),
             ", ".join(f"{view.act_names[a]} {actions[a, j]:+.2f}" for a in range(actor.n_act))]
            for j, m in enumerate(used)]
    section.blocks.append(Table(["expert", "steps", "mean action"], rows))
    return section
