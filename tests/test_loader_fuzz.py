"""Fuzzing every loader with damaged files: whatever the damage, the only exception that may come out is SmoseError.

A finished tiny run is copied, one of its files is damaged (bit flips, truncation, a JSON field replaced or
removed), and everything that reads a run directory is pointed at it: the model loader, resuming from the
checkpoint (config.json, checkpoint.json, the checkpoint tensors), eval.json and `smose info` (which also reads
metrics.csv). Each either works (the damage may be harmless, e.g. a changed digit in a version string) or raises a
one-line SmoseError naming a file of the run.
"""

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smose.cli import main
from smose.errors import SmoseError
from smose.serialization import load_model, read_eval, seal
from smose.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_JSON
from smose.training.config import TrainConfig
from smose.training.trainer import Trainer, train

STEPS = 150
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    config = TrainConfig(env="Pendulum-v1", steps=STEPS, learning_starts=50, batch_size=32, experts=3, eval_every=0,
                         eval_episodes=1, buffer_size=1000, checkpoint_every=100)
    train(config, run_dir, progress=False)
    shutil.rmtree(run_dir / "tensorboard")  # not read by any loader
    return run_dir


def run_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def load_everything(run_dir: Path) -> None:
    """Every reader of a run directory; each may succeed or raise SmoseError naming a file of the run."""
    readers = [
        lambda: load_model(run_dir),
        lambda: read_eval(run_dir / "eval.json"),
        lambda: Trainer.resume(run_dir, steps=STEPS + 50).close(),
    ]
    for reader in readers:
        try:
            reader()
        except SmoseError as exc:
            message = str(exc)
            assert "\n" not in message and str(run_dir) in message, message
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["info", str(run_dir)])
    assert code in (0, 2) and "Traceback" not in err.getvalue()


@contextlib.contextmanager
def damaged_copy(pristine: Path, name: str, damage) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(shutil.copytree(pristine, Path(tmp) / "run"))
        path = run_dir / name
        path.write_bytes(damage(path.read_bytes()))
        yield run_dir


def file_names(pristine: Path):
    return st.sampled_from(run_files(pristine))


def test_the_pristine_run_loads(pristine):
    assert {"model.json", "model.safetensors", "config.json", "eval.json", "metrics.csv",
            f"{CHECKPOINT_DIR}/{CHECKPOINT_JSON}"} <= set(run_files(pristine))
    load_everything(pristine)
    Trainer.resume(pristine, steps=STEPS + 50).close()  # must not raise


@FUZZ
@given(data=st.data(), flips=st.lists(st.tuples(st.integers(0, 2 ** 32), st.integers(1, 255)), min_size=1,
                                      max_size=8))
def test_bit_flips(pristine, data, flips):
    name = data.draw(file_names(pristine))

    def flip(raw: bytes) -> bytes:
        buf = bytearray(raw)
        for position, mask in flips:
            buf[position % len(buf)] ^= mask
        return bytes(buf)

    with damaged_copy(pristine, name, flip) as run_dir:
        load_everything(run_dir)


@FUZZ
@given(data=st.data(), keep=st.floats(0.0, 1.0, exclude_max=True))
def test_truncations(pristine, data, keep):
    name = data.draw(file_names(pristine))
    with damaged_copy(pristine, name, lambda raw: raw[: int(len(raw) * keep)]) as run_dir:
        load_everything(run_dir)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def json_paths(value, prefix=()) -> list[tuple]:
    """Every position in a JSON document, as a key/index path."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += json_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value[:4]):
            paths += json_paths(child, prefix + (index,))
    return paths


@FUZZ
@given(data=st.data(), replacement=JSON_VALUES, delete=st.booleans())
def test_json_field_tampering(pristine, data, replacement, delete):
    name = data.draw(st.sampled_from([n for n in run_files(pristine) if n.endswith(".json")]))
    document = json.loads((pristine / name).read_text())
    path = data.draw(st.sampled_from(json_paths(document)[1:]))

    def tamper(raw: bytes) -> bytes:
        doc = json.loads(raw)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
        # Re-sealed, as a deliberate tamperer would: the checks behind the content hash get fuzzed too.
        return json.dumps(seal(doc) if "content_sha256" in doc else doc).encode()

    with damaged_copy(pristine, name, tamper) as run_dir:
        load_everything(run_dir)


def test_resume_with_an_unregistered_env_names_the_config_file(pristine, tmp_path):
    # found by test_bit_flips: one flipped bit turned "Pendulum-v1" into "Qendulum-v1" in config.json
    run_dir = Path(shutil.copytree(pristine, tmp_path / "run"))
    config = run_dir / "config.json"
    config.write_text(config.read_text().replace("Pendulum-v1", "Qendulum-v1"))
    with pytest.raises(SmoseError, match=r"config\.json: unknown environment 'Qendulum-v1'"):
        Trainer.resume(run_dir, steps=STEPS + 50)
