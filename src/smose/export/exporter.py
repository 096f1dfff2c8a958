"""``export_policy``, what ``smose export`` runs: collect the run's policy, render it in the chosen format (checking
the Python file and the ONNX graph against the library), and write the file."""

from __future__ import annotations

from pathlib import Path

from smose.export.formats import format_named
from smose.export.from_run import collect, export_command
from smose.export.output_file import resolve_out, write_output_file


def export_policy(run_dir: Path | str, fmt: str, out: Path | str, router: str | None = None, mode: str = "gated",
                  tree_kind: str | None = None) -> Path:
    """Write the run's deterministic policy as ``fmt`` to ``out`` (a file, or a directory for the default name);
    ``router`` and ``tree_kind`` as in :func:`smose.export.from_run.collect`."""
    file_format = format_named(fmt)
    target = resolve_out(out, file_format.default_file_name)
    actor, policy = collect(run_dir, router, mode, tree_kind, all_trees=file_format.all_trees)
    policy.command = export_command(run_dir, fmt, out, policy.router, mode, policy.tree_kind or "")
    write_output_file(target, file_format.write(actor, policy))
    return target
