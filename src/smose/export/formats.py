"""The export formats: each one's name, default file name and the function that writes it, declared once.

The command line reads its ``--format`` help from here while ``smose --help`` runs, so this module imports nothing
heavy: each writer is named as ``module:function`` in this package and imported when a file is written.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smose.errors import SmoseError

if TYPE_CHECKING:
    from smose.algo.policy import Actor
    from smose.export.exported_policy import ExportedPolicy

# The name and version written into the JSON document and the ONNX graph's metadata (docs/export.md).
EXPORT_FORMAT = "smose-policy"
EXPORT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Format:
    """One export format. ``writer`` is ``module:function`` in ``smose.export``; the function takes the loaded actor
    and the collected policy and returns the file's bytes, after any self-check of the file against the actor."""

    name: str  # the value of `smose export --format`
    title: str  # how prose names the format
    note: str  # a few words for `--format` help (empty: none)
    default_file_name: str  # written into a directory given as --out
    writer: str
    all_trees: bool = False  # the file carries every distilled tree kind, not only the routing trees

    def write(self, actor: Actor, policy: ExportedPolicy) -> bytes:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(f"smose.export.{module}"), function)(actor, policy)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("python", "Python", "stdlib only", "policy.py", "python_module:python_bytes"),
    Format("c", "C", "header-only C99", "smose_policy.h", "c_header:c_bytes"),
    Format("json", "JSON", "", "policy.json", "json_file:json_bytes", all_trees=True),
    Format("onnx", "ONNX", "", "policy.onnx", "onnx_graph:onnx_bytes"),
)}


def format_named(name: str) -> Format:
    if name not in FORMATS:
        raise SmoseError(f"unknown export format {name!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def spoken_list(items: list[str]) -> str:
    """``a, b, c or d``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def format_help() -> str:
    """The help of ``smose export --format``: every format, with its note."""
    return spoken_list([f"{f.name} ({f.note})" if f.note else f.name for f in FORMATS.values()])


def format_titles() -> str:
    """Every format as prose names it: ``Python, C, JSON or ONNX``."""
    return spoken_list([f.title for f in FORMATS.values()])
