"""Export a trained controller as one file that runs without the training stack: Python, C, JSON or ONNX.

Every format computes the deterministic action of ``smose eval`` (``actor.act`` in "gated" or "linear" mode), routed
by the neural router or by the trees of ``smose distill`` (``--router tree``). Every format makes exactly the library's
routing decision, also where rounding decides it (float64 observations, states on split thresholds, router-logit
ties), and rejects observations that ``smose.algo.policy.check_observations`` rejects (docs/export.md, "Decisions and
rounding"). Dense baselines (sac-l/m/s) export to every format (gated mode, neural "router" only).

The pieces: ``formats`` (the registry: each format's name, default file name and writer), ``from_run`` (collect a
run's policy into an ``exported_policy.ExportedPolicy``), one module per format (``python_module``, ``c_header``,
``json_file``, ``onnx_graph``), ``source_text`` (text shared by Python and C), ``self_check`` (the Python file and
the ONNX graph against the library before they are written), ``output_file`` (the atomic write) and ``exporter``
(``export_policy``, the entry point).

The command line reads the registry during ``smose --help``, so this package imports only ``formats`` on import; the
names below that need torch are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from smose.export.formats import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, FORMATS, Format

if TYPE_CHECKING:  # the names of _LAZY, for type checkers
    from smose.export.c_header import c_source  # noqa: F401
    from smose.export.exported_policy import ExportedPolicy  # noqa: F401
    from smose.export.exporter import export_policy  # noqa: F401
    from smose.export.from_run import collect, export_command  # noqa: F401
    from smose.export.json_file import json_document, json_dumps  # noqa: F401
    from smose.export.onnx_graph import onnx_bytes  # noqa: F401
    from smose.export.python_module import python_source  # noqa: F401

# name -> the module of this package that defines it
_LAZY = {
    "export_policy": "exporter",
    "collect": "from_run",
    "export_command": "from_run",
    "ExportedPolicy": "exported_policy",
    "python_source": "python_module",
    "c_source": "c_header",
    "json_document": "json_file",
    "json_dumps": "json_file",
    "onnx_bytes": "onnx_graph",
}

__all__ = ["EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "FORMATS", "Format", *_LAZY]


def __getattr__(name: str) -> Any:  # PEP 562: called only for names not defined above
    if name in _LAZY:
        return getattr(import_module(f"smose.export.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'smose.export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
