"""benchmarks/record.py: a record names the code that measured it (version, commit, uncommitted changes)."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import smose  # noqa: E402
from record import code_version, header  # noqa: E402


def git(repo: Path, *words: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *words],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_package_outside_a_checkout_is_its_version_alone(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    assert code_version(tmp_path) == smose.__version__


def test_a_checked_out_package_is_at_its_commit_and_says_when_it_differs(tmp_path):
    package = tmp_path / "src" / "smose"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    commit = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert code_version(package) == f"{smose.__version__} at {commit}"
    (tmp_path / "runs").mkdir()  # files the checkout does not track change nothing
    (tmp_path / "runs" / "out.json").write_text("{}")
    assert code_version(package) == f"{smose.__version__} at {commit}"
    (tmp_path / "README").write_text("about\n")  # nor do tracked files outside the package
    git(tmp_path, "add", "README")
    assert code_version(package) == f"{smose.__version__} at {commit}"
    (package / "__init__.py").write_text("x = 2\n")
    assert code_version(package) == f"{smose.__version__} at {commit} + uncommitted changes"


def test_the_benchmarks_scripts_count_and_their_results_do_not(tmp_path):
    package, benchmarks = tmp_path / "src" / "smose", tmp_path / "benchmarks"
    (benchmarks / "results").mkdir(parents=True)
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (benchmarks / "bench.py").write_text("x = 1\n")
    (benchmarks / "results" / "bench.json").write_text("{}\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    commit = git(tmp_path, "rev-parse", "--short", "HEAD")
    (benchmarks / "results" / "bench.json").write_text('{"a": 1}\n')  # a result written beside the benchmark
    assert code_version(package, benchmarks) == f"{smose.__version__} at {commit}"
    (benchmarks / "bench.py").write_text("x = 2\n")
    assert code_version(package, benchmarks) == f"{smose.__version__} at {commit} + uncommitted changes"


def test_a_package_the_checkout_does_not_track_is_not_at_its_commit(tmp_path):
    (tmp_path / "README").write_text("a project\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    installed = tmp_path / ".venv" / "site-packages" / "smose"  # e.g. a wheel in a venv inside the checkout
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert code_version(installed) == smose.__version__


def test_the_header_carries_the_code_version():
    assert header("x.py", "")["smose"] == code_version()


def test_source_trees_names_each_trees_commit_through_the_same_git_state(tmp_path):
    from source_trees import git_commit

    assert git_commit(tmp_path) == "?"  # not a checkout
    (tmp_path / "README").write_text("a project\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    commit = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert git_commit(tmp_path) == commit
    (tmp_path / "README").write_text("changed\n")  # the whole tree counts here
    assert git_commit(tmp_path) == f"{commit} (with uncommitted changes)"
