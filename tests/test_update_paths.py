"""`smose train --update fused|autograd`: both paths train, write the same run directory and resume; config.json
files written before the option existed read as the fused path and keep their sweep and table identity."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smose.algo.fast.fused import SACLearner
from smose.algo.sac import SAC
from smose.api import SMOSE
from smose.cli import main
from smose.errors import SmoseError
from smose.experiments.sweep import result_key
from smose.experiments.table import other_settings
from smose.training.config import TrainConfig, read_run_config
from smose.training.trainer import Trainer

TINY = ["--env", "Pendulum-v1", "--learning-starts", "100", "--batch-size", "32", "--eval-every", "150",
        "--eval-episodes", "1", "--experts", "3", "--quiet", "--update", "autograd"]
COMMITTED_RUNS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "runs"


def test_autograd_training_writes_a_run_directory_and_resumes_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *TINY, "--steps", "300", "--out", str(straight)]) == 0
    for name in ("config.json", "model.safetensors", "model.json", "metrics.csv", "eval.json"):
        assert (straight / name).is_file(), name
    assert json.loads((straight / "config.json").read_text())["update"] == "autograd"
    assert read_run_config(straight / "config.json").update == "autograd"
    with open(straight / "metrics.csv", newline="") as fh:
        episode = next(row for row in csv.DictReader(fh) if row["event"] == "episode")
    assert float(episode["qf_loss"]) > 0

    assert main(["train", *TINY, "--steps", "200", "--out", str(resumed)]) == 0
    assert main(["train", "--resume", str(resumed), "--steps", "300", "--quiet"]) == 0
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    trainer = Trainer.resume(resumed, steps=400)
    try:
        assert type(trainer.learner) is SAC  # the run's config.json keeps the autograd path on resume
    finally:
        trainer.close()


def test_the_api_takes_the_update_keyword():
    model = SMOSE("Pendulum-v1", n_experts=2, update="autograd", learning_starts=20, batch_size=8, eval_every=0,
                  buffer_size=1000)
    assert type(model._trainer.learner) is SAC
    model.learn(40)
    assert model._trainer.learner.n_updates == 20
    assert type(SMOSE("Pendulum-v1", n_experts=2, buffer_size=1000)._trainer.learner) is SACLearner


def test_an_unknown_update_is_refused(capsys):
    with pytest.raises(SmoseError, match="unknown --update 'numerical'"):
        TrainConfig(update="numerical")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--update", "numerical"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'numerical'" in capsys.readouterr().err


def test_committed_runs_read_as_fused_and_keep_their_identity(tmp_path):
    configs = sorted(COMMITTED_RUNS.glob("*/config.json"))
    older = [path for path in configs if "update" not in json.loads(path.read_text())]
    assert older  # most were written before the option existed; those read as the default
    for path in configs:
        data = json.loads(path.read_text())
        config = read_run_config(path)
        assert config.update == data.get("update", "fused")
        autograd = dataclasses.replace(config, update="autograd")
        assert result_key(autograd) == result_key(config)  # the same maths: a sweep treats both as the same run
        assert other_settings(autograd) == other_settings(config)
        assert "update" not in json.loads(result_key(config))

    # A config.json without the field reads exactly like one that names the default.
    data = json.loads(older[0].read_text())
    explicit = tmp_path / "config.json"
    explicit.write_text(json.dumps(data | {"update": "fused"}))
    assert read_run_config(explicit) == read_run_config(older[0])


def test_private_torch_calls_stay_in_the_fused_path():
    source = (Path(__file__).resolve().parent.parent / "src" / "smose" / "algo" / "sac.py").read_text()
    assert "torch._" not in source
