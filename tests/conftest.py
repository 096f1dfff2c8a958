"""Shared fixtures: small real runs that several test modules read (trained once per test session), float64 mode."""

from pathlib import Path

import pytest
import torch

from smose.training.config import TrainConfig
from smose.training.trainer import train


@pytest.fixture(scope="session")
def hopper_run(tmp_path_factory) -> Path:
    """A SMOSE run directory on Hopper-v5 after 2,000 steps (1,500 updates, batch 64): real files, not a good policy."""
    config = TrainConfig(env="Hopper-v5", steps=2000, learning_starts=500, batch_size=64, experts=4,
                         eval_every=1000, eval_episodes=2, seed=0)
    return train(config, tmp_path_factory.mktemp("runs") / "hopper", progress=False)


@pytest.fixture(scope="session")
def pendulum_run(tmp_path_factory) -> Path:
    """A SMOSE run directory on Pendulum-v1 after 1,500 steps (1,000 updates, batch 64)."""
    config = TrainConfig(env="Pendulum-v1", steps=1500, learning_starts=500, batch_size=64, experts=4,
                         eval_every=500, eval_episodes=2, seed=0)
    return train(config, tmp_path_factory.mktemp("runs") / "pendulum", progress=False)


@pytest.fixture
def float64():
    """Float64 as torch's default dtype for one test: comparisons of two computations of the same maths then
    differ by rounding far below any tolerance a real bug would pass."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
