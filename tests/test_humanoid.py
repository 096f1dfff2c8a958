"""Humanoid-v5 (348 observations, 17 actions): a short real run trains, and its report stays readable at that size:
heat maps of the strongest 40 features, the strongest weights of each expert in words, trees on named features."""

import re

import numpy as np
from PIL import Image

from smose.cli import main
from smose.interpret.report import HEATMAP_MAX_FEATURES, shown_features
from smose.serialization import load_model
from smose.tasks.envs import make_env
from smose.tasks.features import action_names, observation_names


def test_heat_maps_show_every_feature_of_small_observations_and_the_strongest_of_large_ones():
    assert shown_features(np.array([0.3, 0.1, 0.2])).tolist() == [0, 1, 2]
    scores = np.zeros(348)
    strongest = [300, 7, 150, 42]
    scores[strongest] = [4.0, 3.0, 2.0, 1.0]
    shown = shown_features(scores, limit=4)
    assert shown.tolist() == sorted(strongest)  # the strongest, in observation order


def test_humanoid_trains_and_its_report_stays_readable(tmp_path, capsys):
    run_dir = tmp_path / "humanoid"
    assert main(["train", "--env", "Humanoid-v5", "--steps", "300", "--learning-starts", "150", "--batch-size", "32",
                 "--experts", "4", "--eval-every", "0", "--eval-episodes", "1", "--quiet", "--out", str(run_dir)]) == 0
    _, meta = load_model(run_dir)
    assert (meta["architecture"]["n_obs"], meta["architecture"]["n_act"]) == (348, 17)
    assert main(["distill", str(run_dir), "--depth", "2", "--episodes", "2", "--eval-episodes", "1",
                 "--kind", "multiclass"]) == 0
    assert main(["explain", str(run_dir), "--episodes", "2", "--no-distill"]) == 0
    report = (run_dir / "report" / "report.md").read_text()

    assert f"Shown: the {HEATMAP_MAX_FEATURES} of 348 features that sway the router most" in report
    assert f"Shown: the {HEATMAP_MAX_FEATURES} of 348 features with the strongest gains" in report
    height = Image.open(run_dir / "report" / "router-weights.png").size[1]
    assert height < 1200  # 41 rows, not 349
    # The strongest weights of each expert in words, naming the physics: joints, bodies, actuators.
    env = make_env("Humanoid-v5")
    obs_names, act_names = observation_names("Humanoid-v5", 348, env), action_names("Humanoid-v5", 17, env)
    env.close()
    sentences = re.findall(r"Expert \d+ pushes (\S+) (?:up|down) when (.+?) grows", report)
    assert len(sentences) >= 3 and all(act in act_names and feature in obs_names for act, feature in sentences)
    assert not any(name.startswith(("obs[", "act[")) for name in obs_names + act_names)
    # Trees split on named features.
    tree_section = report.split("## Distilled decision trees")[1]
    assert "obs[" not in tree_section and re.search(r"(angle|velocity|cinert|cvel|cfrc_ext|position|force)",
                                                     tree_section)
