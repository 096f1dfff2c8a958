"""The training loop: rollouts, replay, SAC updates, periodic evaluation, logging and the run directory.

A run directory holds everything later commands read:
``config.json``, ``model.safetensors`` + ``model.json``, ``metrics.csv``, ``tensorboard/`` and ``eval.json``.
"""

from __future__ import annotations

import csv
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from smose import __version__
from smose.buffer import ReplayBuffer
from smose.config import TrainConfig
from smose.envs import env_versions, make_env
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.policy import make_actor
from smose.sac import SACHyperParams, SACLearner
from smose.serialization import save_model, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.json"
TENSORBOARD_DIR = "tensorboard"
LOSS_LOG_EVERY = 100  # steps between loss/SPS scalars, as in CleanRL
LOSS_COLUMNS = ("qf_loss", "qf_values", "actor_loss", "lb_loss", "alpha", "alpha_loss")


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.env}__{config.algo}__{config.seed}"


def hyperparams(config: TrainConfig) -> SACHyperParams:
    return SACHyperParams(
        gamma=config.gamma,
        tau=config.tau,
        actor_lr=config.actor_lr,
        critic_lr=config.critic_lr,
        alpha_lr=config.alpha_lr,
        policy_frequency=config.policy_frequency,
        target_frequency=config.target_frequency,
        autotune=config.autotune,
        alpha=config.alpha,
        lb_loss=config.lb_loss,  # type: ignore[arg-type]
        lb_weight=config.effective_lb_weight,
        lb_noise=config.lb_noise,  # type: ignore[arg-type]
    )


def prepare_run_dir(path: Path, force: bool) -> Path:
    """Create the run directory; refuse to mix a new run into a non-empty one unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SmoseError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise SmoseError(f"{path}: run directory is not empty; choose another --out or pass --force to overwrite")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SmoseError(f"{path}: cannot write the run directory ({exc.strerror})") from None
    return path


class RunLogger:
    """metrics.csv (one row per finished episode and per evaluation) and CleanRL-named TensorBoard scalars."""

    def __init__(self, run_dir: Path, n_experts: int):
        from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import

        self.n_experts = n_experts
        self.columns = ["step", "event", "episodic_return", "episodic_length", "eval_return_mean", "eval_return_std",
                        *LOSS_COLUMNS, "sps"] + [f"usage_{m}" for m in range(n_experts)]
        path = run_dir / METRICS_FILE
        new = not path.exists()
        self._file = open(path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns, restval="")
        if new:
            self._csv.writeheader()
        self.tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))

    def row(self, values: dict) -> None:
        self._csv.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        self.tb.close()


class Trainer:
    """Holds the whole training state; ``run(total_steps)`` advances it, reading top to bottom like CleanRL."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None):
        self.config = config
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.env = make_env(config.env, seed=config.seed)
        self.eval_env = make_env(config.env)
        n_obs, n_act = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        actor = make_actor(config.algo, n_obs, n_act, self.env.action_space.low, self.env.action_space.high,
                           config.experts)
        self.learner = SACLearner(actor, hyperparams(config))
        self.actor = actor
        self.n_experts = getattr(actor, "n_experts", 0)
        self.buffer = ReplayBuffer(config.buffer_size, n_obs, n_act)
        self.global_step = 0
        self.obs, _ = self.env.reset(seed=config.seed)
        self.episode_return, self.episode_length = 0.0, 0
        self.episode_usage = np.zeros(self.n_experts, dtype=np.int64)
        self.last_episode_return = float("nan")
        self.last_eval: dict | None = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.logger: RunLogger | None = None

    # ---- run directory -------------------------------------------------------------------------------------------
    def write_config(self) -> None:
        assert self.run_dir is not None
        write_json(self.run_dir / CONFIG_FILE, {
            **self.config.to_dict(),
            "lb_weight_effective": self.config.effective_lb_weight,
            "versions": {"smose": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version(), **env_versions()},
        })

    def save(self, directory: Path | None = None) -> None:
        target = Path(directory) if directory is not None else self.run_dir
        if target is None:
            raise SmoseError("no run directory to save to")
        save_model(self.actor, target, self.config.env, {"trained_steps": self.global_step})

    # ---- the loop ------------------------------------------------------------------------------------------------
    def run(self, total_steps: int, progress: bool = False) -> None:
        """Advance training until ``global_step == total_steps``."""
        cfg, env, actor, learner, buffer = self.config, self.env, self.actor, self.learner, self.buffer
        if self.run_dir is not None and self.logger is None:
            self.logger = RunLogger(self.run_dir, self.n_experts)
        log = self.logger
        stats: dict[str, torch.Tensor] = {}
        bar = tqdm(total=total_steps, initial=self.global_step, disable=not progress, unit="step",
                   dynamic_ncols=True, smoothing=0.05)
        sps_clock, sps_step, sps = time.perf_counter(), self.global_step, 0.0
        obs = self.obs
        try:
            while self.global_step < total_steps:
                # 1. act: uniform random during warm-up, then the stochastic policy
                if self.global_step < cfg.learning_starts:
                    action = env.action_space.sample()
                else:
                    with torch.no_grad():
                        a, _, out = actor.sample(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
                    action = a[0].numpy()
                    if out.expert is not None:
                        self.episode_usage[int(out.expert[0])] += 1

                # 2. step the env and store the transition (done = termination only: truncation bootstraps)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                buffer.add(obs, action, reward, next_obs, terminated)
                self.episode_return += float(reward)
                self.episode_length += 1
                obs = next_obs
                self.global_step += 1
                step = self.global_step

                if terminated or truncated:
                    self._end_episode(step, stats, sps)
                    obs, _ = env.reset()

                # 3. learn: one update per env step once warm-up is over
                if step > cfg.learning_starts:
                    stats = learner.update(buffer.sample(cfg.batch_size, self.rng))
                    if step % LOSS_LOG_EVERY == 0:
                        now = time.perf_counter()
                        sps = (step - sps_step) / max(now - sps_clock, 1e-9)
                        sps_clock, sps_step = now, step
                        if log is not None:
                            log.scalars(step, {f"losses/{k}": float(v) for k, v in stats.items()}
                                        | {"losses/alpha": float(learner.alpha), "charts/SPS": sps})
                if step % LOSS_LOG_EVERY == 0:
                    bar.update(step - bar.n)

                # 4. periodic deterministic evaluation
                if cfg.eval_every and step % cfg.eval_every == 0:
                    self._evaluate(step)
                    bar.set_postfix(self._postfix(sps), refresh=False)
        finally:
            self.obs = obs
            bar.update(self.global_step - bar.n)
            bar.close()

    def _end_episode(self, step: int, stats: dict[str, torch.Tensor], sps: float) -> None:
        self.last_episode_return = self.episode_return
        if self.logger is not None:
            row = {"step": step, "event": "episode", "episodic_return": self.episode_return,
                   "episodic_length": self.episode_length, "sps": sps}
            row |= {k: float(stats[k]) for k in LOSS_COLUMNS if k in stats}
            if stats:
                row["alpha"] = float(self.learner.alpha)
            scalars = {"charts/episodic_return": self.episode_return, "charts/episodic_length": self.episode_length}
            used = self.episode_usage.sum()
            if used:
                fractions = self.episode_usage / used
                row |= {f"usage_{m}": float(f) for m, f in enumerate(fractions)}
                scalars |= {f"charts/expert_usage/{m}": float(f) for m, f in enumerate(fractions)}
            self.logger.row(row)
            self.logger.scalars(step, scalars)
        self.episode_return, self.episode_length = 0.0, 0
        self.episode_usage[:] = 0

    def _evaluate(self, step: int) -> dict:
        result = evaluate(self.actor, self.eval_env, self.config.eval_episodes, self.config.seed) | {"step": step}
        self.last_eval = result
        if self.logger is not None:
            row = {"step": step, "event": "eval", "eval_return_mean": result["mean"], "eval_return_std": result["std"]}
            row |= {f"usage_{m}": float(f) for m, f in enumerate(result.get("expert_usage", []))}
            self.logger.row(row)
            self.logger.scalars(step, {"eval/episodic_return": result["mean"]})
        return result

    def _postfix(self, sps: float) -> dict:
        post = {"sps": f"{sps:.0f}", "ret": f"{self.last_episode_return:.1f}"}
        if self.last_eval is not None:
            post["eval"] = f"{self.last_eval['mean']:.1f}"
            if "expert_usage" in self.last_eval:
                post["usage"] = "/".join(f"{100 * u:.0f}" for u in self.last_eval["expert_usage"])
        return post

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        self.env.close()
        self.eval_env.close()


def train(config: TrainConfig, run_dir: Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Train from scratch into a run directory, save the model and a final evaluation; returns the directory."""
    run_dir = prepare_run_dir(run_dir or (Path(config.out) if config.out else default_run_dir(config)), force)
    trainer = Trainer(config, run_dir)
    trainer.write_config()
    try:
        trainer.run(config.steps, progress=progress)
        trainer.save()
        final = trainer.last_eval if trainer.last_eval and trainer.last_eval["step"] == config.steps else None
        if final is None:
            final = trainer._evaluate(config.steps)
        write_json(run_dir / EVAL_FILE, final | {"source": "train"})
    finally:
        trainer.close()
    return run_dir
