"""The Python API, shaped like Stable-Baselines3: ``learn``, ``predict``, ``save``, ``load``; and ``load_for_eval``,
a run directory as the commands that use its trained policy read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from smose.algo.policy import Actor, SMOSEActor, check_observations
from smose.choices import DEFAULT_SELECT_EPISODES, DEFAULT_TREE_KIND, DeterministicMode
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.run import RunDir
from smose.serialization import check_env_compatible, load_model, save_model, write_json
from smose.tasks.envs import ENV_RECORD_KEYS, env_record, env_versions, flatten_observation, make_run_env
from smose.training.config import TrainConfig, read_run_config, run_config_json
from smose.training.trainer import Trainer


def constructor_arguments(spec: gym.envs.registration.EnvSpec) -> dict[str, Any]:
    """The arguments an env made with ``gymnasium.make`` was given beyond its registration's (``max_episode_steps``
    included), as ``--env-kwargs`` would pass them; rendering is the caller's choice, not the env's."""
    registered = gym.spec(spec.id)
    given = {key: value for key, value in spec.kwargs.items()
             if key != "render_mode" and (key not in registered.kwargs or registered.kwargs[key] != value)}
    if spec.max_episode_steps != registered.max_episode_steps:
        given["max_episode_steps"] = spec.max_episode_steps
    return given


class SMOSE:
    """A SMOSE (or dense SAC baseline) agent.

    >>> model = SMOSE("Hopper-v5", n_experts=8, seed=0)
    >>> model.learn(20_000)
    >>> action, _ = model.predict(obs, deterministic=True)
    >>> model.save("runs/hopper"); model = SMOSE.load("runs/hopper")

    ``algo`` selects the actor ("smose", "sac-l", "sac-m", "sac-s"); any other ``TrainConfig`` field can be passed
    as a keyword (``learning_starts=1000``, ``lb_weight=0.1``, ``update="autograd"``, ...). ``mode`` is the
    deterministic action mode: "gated" (tanh of the gated mean, default) or "linear" (the chosen expert's raw linear
    output, clipped).
    """

    def __init__(self, env: str | gym.Env = "Hopper-v5", algo: str = "smose", n_experts: int = 8, seed: int = 0,
                 mode: DeterministicMode = "gated", **config: Any):
        env_id = env if isinstance(env, str) else getattr(env.spec, "id", None)
        if env_id is None:
            raise SmoseError("pass a registered Gymnasium env id or an env created with gymnasium.make")
        if not isinstance(env, str):  # train on the env given, with its constructor arguments, not the id's defaults
            config["env_kwargs"] = {**constructor_arguments(env.spec), **config.get("env_kwargs", {})}
        self.config = TrainConfig.from_dict({"env": env_id, "algo": algo, "experts": n_experts, "seed": seed, **config})
        self.mode: DeterministicMode = mode
        self._trainer: Trainer | None = Trainer(self.config)
        self.actor: Actor = self._trainer.actor
        self.env_id = env_id
        self.path: Path | None = None  # the run directory a loaded model came from

    # ---- training -------------------------------------------------------------------------------------------------
    def learn(self, total_timesteps: int, progress_bar: bool = False) -> SMOSE:
        """Train for ``total_timesteps`` more environment steps."""
        if self._trainer is None:
            raise SmoseError(
                "a loaded model carries its policy only; continue a run with `smose train --resume RUN_DIR`")
        if total_timesteps <= 0:
            raise SmoseError(f"total_timesteps must be positive, got {total_timesteps}")
        self._trainer.run(self._trainer.global_step + total_timesteps, progress=progress_bar)
        return self

    @property
    def num_timesteps(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    # ---- acting ---------------------------------------------------------------------------------------------------
    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Action(s) for one observation [n_obs] or a batch [B, n_obs]; returns (action, None) like SB3. A model
        trained on Dict observations also takes the env's dict (flattened in the recorded key order).

        The observation is rounded to float32; NaN, inf or a component beyond ±2^60 raises SmoseError."""
        if isinstance(observation, dict):
            observation = flatten_observation(observation, self._env_record().get("observation_keys"))
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, which check_observations reports
            obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        if obs.shape[-1] != self.actor.n_obs or obs.ndim not in (1, 2):
            raise SmoseError(f"observation of shape {obs.shape} does not fit a policy with {self.actor.n_obs} inputs")
        obs_t = torch.from_numpy(obs.reshape(-1, self.actor.n_obs))
        check_observations(obs_t)  # finite and within ±OBS_LIMIT, for the stochastic action too
        with torch.no_grad():
            if deterministic:
                action, _ = self.actor.act(obs_t, self.mode)
            else:
                action, _, _ = self.actor.sample(obs_t)
        action_np = action.numpy()
        return (action_np[0] if single else action_np), None

    def evaluate(self, episodes: int = 10, seed: int = 0) -> dict:
        env = make_run_env({"env_id": self.env_id, **self._env_record()})
        try:
            return evaluate(self.actor, env, episodes, seed, self.mode)
        finally:
            env.close()

    # ---- inspection -----------------------------------------------------------------------------------------------
    def _smose_actor(self) -> SMOSEActor:
        if not isinstance(self.actor, SMOSEActor):
            raise SmoseError(f"{self.actor.algo} is a dense actor: it has no router or experts")
        return self.actor

    @property
    def router_weights(self) -> dict[str, np.ndarray]:
        """Θ [M, n_obs] and c [M] of the router z = Θ s + c."""
        router = self._smose_actor().router
        return {"weight": router.weight.detach().numpy().copy(), "bias": router.bias.detach().numpy().copy()}

    @property
    def expert_weights(self) -> dict[str, np.ndarray]:
        """Per expert: mean head W [M, n_act, n_obs], b [M, n_act]; log-std head V [M, n_act, n_obs], d [M, n_act]."""
        actor = self._smose_actor()
        w, b, n = actor.expert_weight.detach().numpy(), actor.expert_bias.detach().numpy(), actor.n_act
        return {"mean_weight": w[:, :n].copy(), "mean_bias": b[:, :n].copy(),
                "log_std_weight": w[:, n:].copy(), "log_std_bias": b[:, n:].copy()}

    def _env_record(self) -> dict:
        """The env's record in model.json: from the training configuration, or as loaded."""
        if self._trainer is not None:
            return env_record(self.config.env_kwargs, self._trainer.env)
        return {key: self.meta[key] for key in ENV_RECORD_KEYS if key in self.meta}

    # ---- persistence ----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write model.safetensors, model.json and config.json into the directory ``path``."""
        path = Path(path)
        save_model(self.actor, path, self.env_id, {"trained_steps": self.num_timesteps, **self._env_record()})
        write_json(RunDir(path).config, run_config_json(self.config, env_versions()))

    @classmethod
    def load(cls, path: str | Path, mode: DeterministicMode = "gated") -> SMOSE:
        """Load a saved model or a run directory (policy only: safetensors + JSON, nothing executable)."""
        run = load_for_eval(path)
        model = cls.__new__(cls)
        model.actor, model.mode, model.env_id, model._trainer = run.actor, mode, run.env_id, None
        config_path = RunDir(run.path).config
        model.config = read_run_config(config_path) if config_path.is_file() else None
        model.meta, model.path = run.meta, run.path
        return model

    def finetune(self, steps: int, tree_kind: str = DEFAULT_TREE_KIND, out: str | Path | None = None,
                 force: bool = False, progress_bar: bool = False, update: str | None = None,
                 select_episodes: int = DEFAULT_SELECT_EPISODES) -> SMOSE:
        """Fine-tune the loaded run for ``steps`` steps with its expert chosen by its distilled ``tree_kind`` trees
        (`smose finetune`, docs/finetune.md) into ``out`` (default RUN-finetune-<kind> beside it); ``update`` as
        ``smose train --update`` (default: the run's own); ``select_episodes`` as ``smose finetune
        --select-episodes``. Returns the controller kept, loaded. Needs a run directory with a checkpoint and
        trees."""
        from smose.training.finetune import finetune

        if getattr(self, "path", None) is None:
            raise SmoseError("fine-tuning continues a run directory's checkpoint: load one with SMOSE.load(RUN_DIR)")
        return SMOSE.load(finetune(self.path, steps, tree_kind, out, force=force, progress=progress_bar,
                                   update=update, select_episodes=select_episodes), self.mode)

    def check_env(self, env: gym.Env, source: Path | str = "model") -> None:
        """Raise SmoseError if ``env`` has other observation/action sizes than this model was trained for."""
        check_env_compatible({"architecture": self.actor.architecture(), "env_id": self.env_id, **self._env_record()},
                             env, Path(source))


@dataclass(frozen=True)
class LoadedRun:
    """A run directory's trained policy and what rebuilds its env: the actor (in eval mode) and model.json."""

    path: Path
    actor: Actor
    meta: dict

    @property
    def env_id(self) -> str:
        return self.meta["env_id"]

    @property
    def env_kwargs(self) -> dict:
        return self.meta.get("env_kwargs", {})

    @property
    def algo(self) -> str:
        return self.meta["architecture"]["algo"]

    def make_env(self, env_id: str | None = None, render_mode: str | None = None) -> gym.Env:
        """The env the policy was trained on, built with its recorded arguments (``env_id``: another version of the
        task), checked to fit the policy (SmoseError naming model.json otherwise)."""
        env = make_run_env(self.meta, env_id, render_mode)
        try:
            check_env_compatible(self.meta, env, RunDir(self.path).model_meta)
        except BaseException:
            env.close()
            raise
        return env


def load_for_eval(run_dir: Path | str) -> LoadedRun:
    """What evaluating, describing, explaining or exporting a run needs: its policy and model.json, checked
    (safetensors and JSON only, nothing executable). The env is built on demand: ``LoadedRun.make_env``."""
    run_dir = Path(run_dir)
    actor, meta = load_model(run_dir)
    return LoadedRun(run_dir, actor, meta)
