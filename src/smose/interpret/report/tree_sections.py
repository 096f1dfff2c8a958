"""The report's sections on the distilled trees: the trees themselves (diagrams, rules, fidelity) and the return of
the policy they route next to the neural router's; and loading (or distilling again) the run's tree files."""

from __future__ import annotations

from typing import Callable

import numpy as np

from smose.choices import KINDS
from smose.errors import SmoseError
from smose.interpret.distill import distill, distill_settings
from smose.interpret.report.document import Block, Code, Figure, Note, Section, Table, Text
from smose.interpret.report.figures import draw_tree, figure_png, plt  # plt: pyplot on the headless backend
from smose.interpret.report.sections import dense_note
from smose.interpret.report.view import RunView, fmt, fmt_pct, fmt_score
from smose.interpret.rules import rules_text
from smose.interpret.trees import load_trees, router_digest, stale_trees, tree_file
from smose.run import FIDELITY_FILE, TREES_DIR
from smose.serialization import read_json
from smose.training.finetune import AS_DISTILLED, SELECTION_KEY


def load_tree_files(
    view: RunView, progress: Callable[[str], None], distill_missing: bool
) -> tuple[dict, dict | None, list[Note], Note | None]:
    """The run's tree files (per kind), fidelity.json, notes for the trees section and, for stale trees, the note
    that heads the report. Distils first when there are no trees, or stale ones (again with their settings), and
    that is allowed; stale trees that are not distilled again are not shown at all."""
    if view.fixed_trees is not None:  # the controller's own trees: part of the model, never distilled again
        return {view.fixed_trees.tree_kind: view.fixed_trees.trees}, None, [], None
    notes: list[Note] = []
    fidelity_path = view.run_dir / TREES_DIR / FIDELITY_FILE
    stale = stale_trees(view.run_dir, router_digest(view.smose)) if fidelity_path.is_file() else None
    if stale is not None and distill_missing:
        try:
            settings = distill_settings(read_json(fidelity_path, "tree fidelity summary"))
        except (SmoseError, KeyError, TypeError, AttributeError):
            settings = {}
        progress(f"stale trees in {view.run_dir / TREES_DIR} (not distilled from the run's model); running "
                 f"`smose distill` again with {'their settings' if settings else 'its defaults'} first")
        distill(view.run_dir, **settings)
        stale = None
    elif not fidelity_path.is_file() and distill_missing:
        progress(f"no distilled trees in {view.run_dir}; running `smose distill` with its defaults first")
        distill(view.run_dir)
    if stale is not None:
        warning = Note(f"The distilled trees are stale and not shown: {stale} (or `smose explain` without "
                       "--no-distill).")
        return {}, None, [warning], warning
    if not fidelity_path.is_file():
        notes.append(Note(f"No distilled trees yet. Run `smose distill {view.run_dir}` (then `smose explain` again) "
                          "to fit them; they replace the router's argmax with shallow decision trees."))
        return {}, None, notes, None
    fidelity = read_json(fidelity_path, "tree fidelity summary")
    trees = {}
    for kind in KINDS:
        path = tree_file(view.run_dir, kind)
        if path.is_file():
            try:
                trees[kind] = load_trees(path, view.smose, view.meta["env_id"])
            except SmoseError as exc:  # stale or damaged trees: say so in the report instead of failing
                notes.append(Note(f"{exc}"))
    return trees, fidelity, notes, None


def section_trees(view: RunView, trees: dict, fidelity: dict | None, notes: list[Note]) -> Section:
    section = Section("trees", "Distilled decision trees")
    if view.smose is None:
        section.blocks.append(dense_note(view, "router to distil into trees"))
        return section
    section.blocks += notes
    if not trees:
        return section
    if view.fixed_trees is not None:
        record = view.finetune
        if view.finetune_kept == AS_DISTILLED:
            trained = ("fine-tuning under them did not beat the controller as distilled, which this run holds, and "
                       "they did not change")
        else:
            trained = (f"the controller was fine-tuned under them for "
                       f"{(view.meta.get('trained_steps') or 0) - record.get('source_step', 0):,} steps and they did "
                       "not change")
        section.blocks.append(Text(
            f"These trees choose the expert at every step: {trained}. They were distilled from the neural router of "
            f"{view.finetune_source} "
            "(its trees/fidelity.json holds their agreement with it). Splits are shown on the raw state variable; "
            "'true' branches go left."))
        fidelity = {}
    else:
        assert fidelity is not None
        rounds = fidelity.get("dagger_rounds") or 0
        dagger = (f", then {rounds} DAgger round{'s' if rounds != 1 else ''} that each added the states of "
                  f"{fidelity.get('episodes')} episodes routed by the trees themselves" if rounds else "")
        section.blocks.append(Text(
            f"Trees of depth ≤ {fidelity.get('depth')} fitted on {fidelity.get('train_states')} states from "
            f"{fidelity.get('episodes')} deterministic episodes{dagger}, and scored on "
            f"{fidelity.get('heldout_states')} states of held-out episodes; the label is the neural router's choice. "
            "Splits are shown on the raw state variable; 'true' branches go left."))
    if "per-expert" in trees:
        data, fid = trees["per-expert"], fidelity.get("per-expert", {})
        section.blocks.append(Text(
            "Per-expert trees (one YES/NO tree per expert on the router-weighted features Θ_k ⊙ s; the tree-routed "
            "policy follows the most confident YES)" + _agreement_text(fid)))
        if fid:
            rows = [[f"expert {t['expert']}", fmt_score(t.get("accuracy")), fmt_score(t.get("precision")),
                     fmt_score(t.get("recall")), str(t.get("positives")), str(t.get("n_leaves"))]
                    for t in fid.get("trees", [])]
            section.blocks.append(Table(["tree", "accuracy", "precision", "recall", "held-out positives", "leaves"],
                                        rows))
        trivial = []
        for tree in data["trees"]:
            m = tree["expert"]
            if tree["n_leaves"] == 1:
                trivial.append(m)
                continue
            single = dict(data, trees=[tree])
            section.blocks += [
                Figure(f"tree-per-expert-{m}.png", draw_tree(tree, "per-expert", f"Does the router pick expert {m}?"),
                       f"Per-expert tree for expert {m}: leaves say YES (expert {m} acts) or NO, with the share of "
                       f"training states that agree."),
                Code(rules_text(single, fid)),
            ]
        if trivial:
            section.blocks.append(Text(f"The trees of expert(s) {', '.join(map(str, trivial))} are a single leaf "
                                       "(the expert is never or always chosen)."))
    if "multiclass" in trees:
        data, fid = trees["multiclass"], fidelity.get("multiclass", {})
        section.blocks += [
            Text("Multiclass tree (one tree on the raw state, leaves name the expert)" + _agreement_text(fid)),
            Figure("tree-multiclass.png",
                   draw_tree(data["trees"][0], "multiclass", "Which expert does the router pick?"),
                   "Multiclass tree: each leaf names the expert it routes to and the share of training states "
                   "routed there by the neural router."),
            Code(rules_text(data, fid)),
        ]
    if "oblique" in trees:
        fid = fidelity.get("oblique", {})
        section.blocks += [
            Text("Oblique tree (the authors' form: one tree whose tests are hyperplanes on the standardised state, "
                 "fitted with CMA-ES; leaves name the expert most of their states were routed to)"
                 + _agreement_text(fid) + " Each test is restated on the raw state; its strongest terms are shown, "
                 f"and up to {OBLIQUE_TABLE_TERMS} terms of each in the table below it."),
            Code(rules_text(trees["oblique"], fid)),
            _hyperplane_table(trees["oblique"]),
        ]
    return section


OBLIQUE_TABLE_TERMS = 20  # terms of each oblique test listed in the report's table (all of them in oblique.json)


def _hyperplane_table(trees: dict) -> Table:
    """Each oblique test as a weighted sum of named state variables <= threshold: its strongest terms (by weight per
    standard deviation, which makes the terms comparable) with their weight in physical units and share."""
    names = trees["feature_names"]
    rows = []
    tests = [node for node in trees["trees"][0]["nodes"] if not node["leaf"]]
    for t, node in enumerate(tests):
        strength = np.abs(np.asarray(node["weights"], dtype=np.float64))
        order = [int(f) for f in np.argsort(-strength, kind="stable") if strength[f] > 0]
        total = strength.sum()
        for f in order[:OBLIQUE_TABLE_TERMS]:
            rows.append([f"test {t} (node {node['id']})", names[f], f"{node['state_weights'][f]:+.4g}",
                         fmt_pct(strength[f] / total)])
        if len(order) > OBLIQUE_TABLE_TERMS:
            rest = strength[order[OBLIQUE_TABLE_TERMS:]].sum() / total
            rows.append([f"test {t} (node {node['id']})", f"{len(order) - OBLIQUE_TABLE_TERMS} weaker terms", "",
                         fmt_pct(rest)])
        rows.append([f"test {t} (node {node['id']})", "<= threshold", f"{node['state_threshold']:.4g}", ""])
    return Table(["test", "state variable", "weight (per unit of the variable)", "share of the test's weight"], rows)


def _agreement_text(fid: dict) -> str:
    """': held-out routing agreement ... (training states ...).' from a kind's fidelity entry, '.' without one."""
    if not fid:
        return "."
    return (f": held-out routing agreement {fmt_pct(fid.get('agreement'))} (training states "
            f"{fmt_pct(fid.get('train_agreement'))}).")


def section_returns(view: RunView, fidelity: dict | None, warning: Note | None = None) -> Section:
    section = Section("returns", "Tree-routed vs neural router")
    if view.smose is None:
        section.blocks.append(dense_note(view, "router to compare trees with"))
        return section
    if view.fixed_trees is not None:
        section.blocks += _finetune_returns(view)
        return section
    returns = (fidelity or {}).get("returns")
    if not returns:
        section.blocks.append(warning or Note(f"No tree-routed returns yet; run `smose distill {view.run_dir}`."))
        return section
    ratio = returns.get("ratio", {})
    names = [k for k in ("neural", *KINDS) if k in returns]
    rows = []
    for name in names:
        r = returns[name]
        rows.append([name if name == "neural" else f"{name} trees", fmt(r.get("mean")), fmt(r.get("std")),
                     fmt(r.get("min")), fmt(r.get("max")), str(r.get("episodes")),
                     "1.000" if name == "neural" else
                     ("n/a" if ratio.get(name) is None else f"{ratio[name]:.3f}")])
    section.blocks += [
        Text("Deterministic returns on the same evaluation episodes (same reset seeds), so the difference comes from "
             "the routing alone; the experts are the same linear controllers. The ratio is tree return / neural "
             "return (defined for positive neural returns)."),
        Table(["router", "mean return", "std", "min", "max", "episodes", "ratio"], rows),
    ]
    fig, ax = plt.subplots(figsize=(6, 3))
    means = [returns[n]["mean"] for n in names]
    stds = [returns[n].get("std", 0.0) for n in names]
    ax.barh(names, means, xerr=stds, color=["#1d2733", "#5b8db8", "#9fb8cf", "#c9d6e3"][: len(names)], capsize=4)
    ax.invert_yaxis()
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_xlabel("mean episode return ± std")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Return by router")
    section.blocks.append(Figure("returns.png", figure_png(fig), "Mean return of the neural and tree-routed policies."))
    return section


def _finetune_returns(view: RunView) -> list[Block]:
    """A fine-tuned controller against the source run's neural router and its trees before fine-tuning (the returns
    `smose finetune` recorded in config.json) on the same evaluation episodes."""
    before, after = view.finetune.get("before"), view.evaluation
    if not isinstance(before, dict):
        return [Note("config.json records no returns before fine-tuning to compare with.")]
    neural = before.get("neural_return")
    returns = [("source run, neural router", neural), ("source run, its trees (before fine-tuning)",
                                                       before.get("tree_return"))]
    same = bool(after) and (after.get("episodes"), after.get("seed"), after.get("mode", "gated")) == \
        (before.get("episodes"), before.get("seed"), before.get("mode"))
    selection = view.finetune.get(SELECTION_KEY)
    pending = view.finetune_kept is None
    kept_as_distilled = view.finetune_kept == AS_DISTILLED
    if same:
        returns.append(("this run's controller: as distilled, kept (eval.json)" if kept_as_distilled
                        else "fine-tuned controller (eval.json)", after.get("mean")))
    positive = isinstance(neural, (int, float)) and neural > 0
    rows = [[name, fmt(value), f"{value / neural:.3f}" if positive and isinstance(value, (int, float)) else "n/a"]
            for name, value in returns]
    blocks: list[Block] = [
        Text(f"Deterministic returns ({before.get('mode')} mode) on the same {before.get('episodes')} evaluation "
             f"episodes (seed {before.get('seed')}): the ratio is the return over the source run's neural router's "
             "(defined for positive returns)."),
        Table(["controller", "mean return", "ratio"], rows)]
    if pending:
        blocks.append(Note(f"The comparison with the controller as distilled at the end of fine-tuning was not "
                           f"completed (stopped before it finished); `smose finetune --resume {view.run_dir}` "
                           "completes it."))
    elif selection:
        blocks.append(Text(
            f"At the end of fine-tuning the controller as fine-tuned and as distilled were compared on "
            f"{selection.get('episodes')} episodes of their own (neither these nor the trees' fitting episodes): "
            f"{fmt(selection.get('fine_tuned_return'))} fine-tuned, {fmt(selection.get('as_distilled_return'))} as "
            f"distilled. This run holds the controller {selection.get('kept')}"
            + (" (the source run's experts under the same trees; the checkpoint keeps the fine-tuned state)."
               if kept_as_distilled else ".")))
    if not same:
        blocks.append(Note(f"eval.json holds another evaluation than these episodes; `smose eval {view.run_dir} "
                           f"--episodes {before.get('episodes')} --seed {before.get('seed')}` gives the comparable "
                           "one."))
    return blocks
