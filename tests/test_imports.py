"""The package's import structure: a light top level, a command line that starts without torch, no import cycles."""

import argparse
import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import smose
from smose.cli import build_parser

PACKAGE_DIR = Path(smose.__file__).parent
HEAVY = ("torch", "gymnasium", "matplotlib", "tensorboard", "torch.utils.tensorboard", "sklearn", "mujoco")


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules present in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_smose_leaves_torch_gymnasium_matplotlib_and_tensorboard_out():
    assert heavy_modules_after("import smose; smose.__version__; smose.SmoseError") == []


def test_feature_names_and_tree_router_need_numpy_only():
    code = textwrap.dedent("""
        import numpy as np
        from smose.tasks.features import observation_names
        from smose.interpret.tree_router import TreeRouter

        split = {"id": 0, "leaf": False, "feature": 2, "threshold": 0.0, "left": 1, "right": 2}
        nodes = [split | {"probability": [0.5, 0.5]}, {"id": 1, "leaf": True, "probability": [0.25, 0.75]},
                 {"id": 2, "leaf": True, "probability": [0.9, 0.1]}]
        trees = {"kind": "multiclass", "n_obs": 3, "n_experts": 2, "trees": [{"nodes": nodes}],
                 "feature_names": observation_names("Pendulum-v1", 3)}
        assert TreeRouter(trees).predict(np.array([[0, 0, -1.0], [0, 0, 1.0]])).tolist() == [1, 0]
    """)
    assert heavy_modules_after(code) == []


def test_the_api_class_is_imported_on_first_use():
    from smose import SMOSE  # noqa: F401 (the lazy attribute resolves)
    from smose.api import SMOSE as api_smose

    assert smose.SMOSE is api_smose
    assert "SMOSE" in dir(smose)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        smose.nothing_here  # noqa: B018


def test_old_import_paths_of_the_tree_router_still_work():
    from smose.interpret import distill, tree_router

    assert distill.TreeRouter is tree_router.TreeRouter and distill.router_features is tree_router.router_features


def subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_help_of_the_command_line_and_of_every_subcommand_imports_no_torch():
    """`smose --help` and `smose COMMAND --help` run as `python -m smose` does, each followed by a look at
    sys.modules (one interpreter for all, so the check stays quick)."""
    commands = [[]] + [[name] for name in subcommands()]
    probe = (
        "import json, runpy, sys\n"
        f"heavy = {HEAVY!r}\n"
        "found = {}\n"
        f"for command in {commands!r}:\n"
        "    sys.argv = ['smose', *command, '--help']\n"
        "    try:\n"
        "        runpy.run_module('smose', run_name='__main__')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (command, exc.code)\n"
        "    found[' '.join(command) or '(none)'] = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps(found))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(found) == len(commands) and {"train", "eval", "sweep"} <= set(found)
    assert found == {name: [] for name in found}


# ---- import cycles ---------------------------------------------------------------------------------------------------


def module_name(path: Path, package_dir: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_statements(body: list[ast.stmt]):
    """The import statements that run when the module is imported: the module body, its if/try/with blocks and class
    bodies; not function bodies (imported when called) and not ``if TYPE_CHECKING:`` blocks (never run)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            yield from import_time_statements(node.orelse)
            if not is_type_checking(node.test):
                yield from import_time_statements(node.body)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from import_time_statements(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from import_time_statements(node.body)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at import time (``from pkg import sub`` counts as importing sub)."""
    paths = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in import_time_statements(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names]
            edges |= {t for t in targets if t in paths and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_the_package_init(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.api import Thing\n__version__ = '1'\n")
    (package / "api.py").write_text("from pkg import train\nclass Thing: pass\n")
    (package / "train.py").write_text("import os\nfrom typing import TYPE_CHECKING\nfrom pkg import __version__\n"
                                      "if TYPE_CHECKING:\n    from pkg.api import Thing\n")
    (package / "lazy.py").write_text("def f():\n    from pkg.api import Thing\n")
    graph = import_graph(package)
    assert graph == {"pkg": {"pkg.api"}, "pkg.api": {"pkg.train"}, "pkg.train": {"pkg"}, "pkg.lazy": set()}
    assert find_cycle(graph) == ["pkg", "pkg.api", "pkg.train", "pkg"]


def test_the_package_has_no_import_cycles():
    graph = import_graph(PACKAGE_DIR)
    assert {"smose", "smose.cli", "smose.training.trainer", "smose.training.checkpoint"} <= set(graph)
    assert "smose.training.checkpoint" in graph["smose.training.trainer"]  # the graph does see real imports
    assert find_cycle(graph) is None
