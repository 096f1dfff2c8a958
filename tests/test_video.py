"""`smose video`: headless rendering of one deterministic episode with the active expert drawn on every frame."""

import math
import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from smose.cli import main
from smose.evaluate import EVAL_SEED_OFFSET
from smose.interpret.distill import distill, load_tree_router
from smose.interpret.report import expert_color
from smose.interpret.video import TARGET_FPS
from smose.serialization import load_model
from smose.tasks.envs import make_env

PROBE = """
import os
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
import gymnasium as gym
env = gym.make("Hopper-v5", render_mode="rgb_array")
env.reset(seed=0)
assert env.render().shape == (480, 480, 3)
"""


def _rendering_problem() -> str | None:
    """None when MuJoCo can render off-screen here; else why not (run in a child: a GL crash must not kill pytest)."""
    result = subprocess.run([sys.executable, "-c", PROBE], check=False, capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["no output"])[-1]


_problem = _rendering_problem()
needs_rendering = pytest.mark.skipif(
    _problem is not None, reason=f"headless MuJoCo rendering unavailable after `make setup-render`: {_problem}"
)


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)


def replay_experts(actor, steps: int, router=None) -> list[int]:
    """The expert chosen at each step of the episode `smose video --seed 0` shows."""
    env = make_env("Hopper-v5")
    obs, _ = env.reset(seed=EVAL_SEED_OFFSET)
    chosen = []
    for _ in range(steps):
        obs_t = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        if router is None:
            action, expert = actor.act(obs_t)
        else:
            expert = router(obs_t)
            action = actor.act_with_experts(obs_t, expert)
        chosen.append(int(expert[0]))
        obs, _, terminated, truncated, _ = env.step(action[0].numpy())
        if terminated or truncated:
            break
    env.close()
    return chosen


def check_frames(frames: np.ndarray, experts: list[int], tolerance: float) -> None:
    """Frame i shows step i·stride: its border and label box carry that step's expert colour."""
    stride = math.ceil(125 / TARGET_FPS)  # Hopper renders at 125 fps
    assert len(frames) == math.ceil(len(experts) / stride)
    assert frames.shape[1:] == (480, 480, 3)
    for i, frame in enumerate(frames.astype(np.float64)):
        expected = rgb(expert_color(experts[i * stride]))
        border = frame[200:280, 1]  # left edge, mid-height: the border drawn by the overlay
        box = frame[16:21, 22:40].reshape(-1, 3)  # inside the label box, left of the text
        assert np.abs(border - expected).max(axis=1).mean() < tolerance, f"frame {i}: border {border.mean(0)}"
        assert np.abs(box - expected).max(axis=1).mean() < tolerance, f"frame {i}: label box {box.mean(0)}"
    # The scene is really rendered: the middle of the frame is not one flat colour.
    assert frames[:, 120:360, 120:360].std() > 10


@needs_rendering
def test_mp4_has_frames_with_the_expert_overlay(hopper_run, tmp_path, capsys):
    out = tmp_path / "episode.mp4"
    assert main(["video", str(hopper_run), "--out", str(out), "--max-steps", "12"]) == 0
    summary = capsys.readouterr().out
    assert '"frames": 3' in summary and '"size": [480, 480]' in summary
    actor, _ = load_model(hopper_run)
    check_frames(iio.imread(out), replay_experts(actor, 12), tolerance=40)  # mp4 is lossy


@needs_rendering
def test_gif_with_tree_router(hopper_run, tmp_path):
    run = tmp_path / "hopper"
    shutil.copytree(hopper_run, run, ignore=shutil.ignore_patterns("trees", "report"))
    distill(run, depth=2, episodes=2, kind="per-expert", eval_episodes=1)
    out = tmp_path / "episode.gif"
    assert main(["video", str(run), "--router", "tree", "--out", str(out), "--max-steps", "16"]) == 0
    actor, meta = load_model(run)
    router = load_tree_router(run, "per-expert", actor, meta["env_id"])
    check_frames(iio.imread(out, index=None), replay_experts(actor, 16, router), tolerance=25)
    assert not list(tmp_path.glob(".*tmp*")), "temporary video file left behind"


def test_bad_requests_are_one_line_errors(hopper_run, tmp_path, capsys):
    assert main(["video", str(hopper_run), "--out", str(tmp_path / "x.avi")]) == 2
    assert "use a .mp4 or .gif" in capsys.readouterr().err
    assert main(["video", str(hopper_run), "--out", str(tmp_path / "missing" / "x.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = tmp_path / "hopper"
    shutil.copytree(hopper_run, run, ignore=shutil.ignore_patterns("trees", "report"))
    assert main(["video", str(run), "--router", "tree", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "smose distill" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_unusable_renderer_is_a_clear_error(hopper_run, tmp_path):
    env = dict(os.environ, MUJOCO_GL="no-such-backend")
    result = subprocess.run([sys.executable, "-m", "smose", "video", str(hopper_run), "--out", str(tmp_path / "x.mp4"),
                             "--max-steps", "3"], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smose: error: cannot set up rendering"), result.stderr
    assert not (tmp_path / "x.mp4").exists()
