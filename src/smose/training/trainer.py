"""The training loop: rollouts, replay, SAC updates, periodic evaluation, logging and checkpoints, into a run
directory (smose.run names its files; smose.training.run_dir prepares it).

``Trainer`` holds the whole training state and advances it; ``state_dict``/``load_state_dict`` are that state, which
a checkpoint writes and a resumed run reads back (smose.training.checkpoint). ``train`` and ``resume`` run a trainer
to the end of its steps under the run directory's lock.
"""

from __future__ import annotations

import collections
import contextlib
import math
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from smose import runlock
from smose._version import __version__
from smose.algo.learner import make_learner
from smose.algo.policy import make_actor
from smose.errors import SmoseError
from smose.evaluate import episode_success, evaluate
from smose.run import SUCCESS_COLUMN, RunDir
from smose.serialization import WriteError, save_model, write_eval, write_json
from smose.tasks.env_state import (
    capture_env_state,
    elapsed_steps,
    env_state_kind,
    restore_env_state,
    rng_state,
    set_elapsed_steps,
    set_rng_state,
)
from smose.tasks.envs import check_env, env_record, env_versions, make_env
from smose.training.buffer import ReplayBuffer
from smose.training.checkpoint import load_checkpoint, read_checkpoint_json, save_checkpoint
from smose.training.config import TrainConfig, read_run_config, run_config_json
from smose.training.logger import LOSS_COLUMNS, RunLogger, warn
from smose.training.run_dir import check_run_dir, clear_run_dir, create_run_dir, default_run_dir

LOSS_LOG_EVERY = 100  # steps between loss/SPS scalars, as in CleanRL
RECENT_EPISODES = 20  # the progress bar's training success rate is over this many last episodes


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; the message says how to resume."""


class Trainer:
    """Holds the whole training state; ``run(total_steps)`` advances it, reading top to bottom like CleanRL."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, routing_trees: dict | None = None,
                 record: dict | None = None):
        """``routing_trees``: train the controller those fixed trees route (smose.interpret.tree_policy; SMOSE only);
        ``record``: further keys of config.json (a fine-tuning run's ``finetune``, smose.training.finetune)."""
        self.config = config
        self.record = dict(record or {})
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.env = make_env(config.env, seed=config.seed, env_kwargs=config.env_kwargs)
        self.eval_env = make_env(config.env, env_kwargs=config.env_kwargs)
        n_obs, n_act = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        actor = make_actor(config.algo, n_obs, n_act, self.env.action_space.low, self.env.action_space.high,
                           config.experts)
        if routing_trees is not None:
            from smose.interpret.tree_policy import TreeRoutedActor

            actor = TreeRoutedActor.from_smose(actor, routing_trees)  # type: ignore[arg-type]
        self.learner = make_learner(actor, config.hyperparams(), config.update)
        self.actor = actor
        self.n_experts = getattr(actor, "n_experts", 0)
        try:
            self.buffer = ReplayBuffer(config.buffer_size, n_obs, n_act)
        except (MemoryError, ValueError):  # ValueError: beyond numpy's maximum array size
            gigabytes = config.buffer_size * (2 * n_obs + n_act + 2) * 4 / 1e9
            self.env.close()
            self.eval_env.close()
            raise SmoseError(f"cannot allocate a replay buffer of {config.buffer_size} transitions "
                             f"({gigabytes:.1f} GB); lower --buffer-size") from None
        self.global_step = 0
        self.obs, _ = self.env.reset(seed=config.seed)
        self.episode_return, self.episode_length = 0.0, 0
        self.episode_usage = np.zeros(self.n_experts, dtype=np.int64)
        self.episode_success: bool | None = None  # None while the env has reported no success this episode
        self.recent_successes: collections.deque[bool] = collections.deque(maxlen=RECENT_EPISODES)
        self.last_episode_return = float("nan")
        self.last_episode_usage: np.ndarray | None = None
        self.last_eval: dict | None = None
        self.stats: dict[str, torch.Tensor] = {}  # the last update's losses (episode rows of metrics.csv show them)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.logger: RunLogger | None = None
        self.checkpoint_step: int | None = None  # step of the last checkpoint written or resumed from
        self.resume_metrics_bytes: int | None = None  # set when resuming: metrics.csv length at the checkpoint
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM: stop after the current step

    @classmethod
    def resume(cls, run_dir: Path, steps: int | None = None, checkpoint_every: int | None = None) -> Trainer:
        """A trainer restored from ``run_dir``'s last complete checkpoint, with the run's config.json.

        ``steps`` may extend the run; ``checkpoint_every`` may change the checkpoint interval.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise SmoseError(f"{run_dir}: no such run directory")
        from smose.training.finetune import fixed_trees

        config_path = RunDir(run_dir).config
        config = read_run_config(config_path)
        record, routing_trees = fixed_trees(run_dir)  # a fine-tuning run goes on under its trees
        data = read_checkpoint_json(run_dir)
        step = data["step"]
        if steps is not None:
            config.steps = steps
        if checkpoint_every is not None:
            config.checkpoint_every = checkpoint_every
        config.out = str(run_dir)
        config.validate()
        if config.steps < step:
            raise SmoseError(f"{run_dir}: --steps {config.steps} is below the checkpoint's step {step}")
        if config.steps == step and data.get("finished") is True:
            raise SmoseError(f"{run_dir}: the run already finished at step {step}; pass --steps N (> {step}) "
                             f"to train it further")
        try:
            trainer = cls(config, run_dir, routing_trees, record)
        except SmoseError as exc:  # the constructor's errors are about config.json's values (env id, buffer size)
            raise SmoseError(f"{config_path}: {exc}") from None
        try:
            with load_checkpoint(run_dir, data, trainer.state_dict()) as state:
                trainer.load_state_dict(state)
        except BaseException:
            trainer.close()
            raise
        if env_state_kind(trainer.env) == "none":
            warn(f"the state of {config.env} cannot be saved mid-episode: the resumed run starts a new episode")
        return trainer

    # ---- run directory -------------------------------------------------------------------------------------------
    def write_config(self) -> None:
        assert self.run_dir is not None
        write_json(RunDir(self.run_dir).config, run_config_json(self.config, {
            "smose": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), **env_versions()}) | self.record)

    def save(self, directory: Path | None = None) -> None:
        target = Path(directory) if directory is not None else self.run_dir
        if target is None:
            raise SmoseError("no run directory to save to")
        save_model(self.actor, target, self.config.env,
                   {"trained_steps": self.global_step, **env_record(self.config.env_kwargs, self.env)})

    def metrics_position(self) -> int | None:
        return self.logger.sync() if self.logger is not None else None

    def checkpoint(self, finished: bool = False) -> Path:
        """Check the numbers, then write the model files and a resumable checkpoint (each atomically)."""
        assert self.run_dir is not None
        self.check_finite(self.global_step)
        self.save()
        path = save_checkpoint(self.run_dir, self.state_dict(), finished)
        self.checkpoint_step = self.global_step
        return path

    # ---- the training state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly where this one stands: tensors and arrays, and values
        JSON holds. Besides networks, optimisers and replay rows, that is the random streams (the numpy Generator of
        the replay sampling, torch's global generator, the env's ``np_random`` and its action-space sampler) and the
        episode where it stands, env state included (smose.tasks.env_state). ``metrics_bytes`` puts the logs on disk
        first: the length of metrics.csv at this step, to which a resumed run cuts it back."""
        env, learner = self.env, self.learner
        kind = env_state_kind(env)
        last_return = self.last_episode_return
        return {
            "step": self.global_step,
            "config": self.config.to_dict(),
            "learner": learner.state_dict(),
            "buffer": self.buffer.state_dict(),
            "episode": {"return": self.episode_return, "length": self.episode_length,
                        "usage": self.episode_usage.tolist(), "success": self.episode_success,
                        "last_return": None if math.isnan(last_return) else last_return,
                        "recent_successes": list(self.recent_successes)},
            "last_eval": self.last_eval,
            "last_stats": {k: float(v) for k, v in self.stats.items()},
            "rng": {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state(),
                    "env": rng_state(env.unwrapped.np_random),
                    "action_space": env.action_space.np_random.bit_generator.state},
            "env": {"kind": kind, "obs": np.asarray(self.obs), "state": capture_env_state(env, kind),
                    "elapsed_steps": elapsed_steps(env)},
            "metrics_bytes": self.metrics_position(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``, a ``state_dict`` of a trainer with this configuration (as
        smose.training.checkpoint reads it back, checked). Its config is not loaded: this trainer's stays."""
        env, rng, episode, env_state = self.env, state["rng"], state["episode"], state["env"]
        self.learner.load_state_dict(state["learner"])
        torch.set_rng_state(rng["torch"])
        self.rng.bit_generator.state = rng["numpy"]
        set_rng_state(env.unwrapped.np_random, rng["env"])
        env.action_space.np_random.bit_generator.state = rng["action_space"]
        self.buffer.load_state_dict(state["buffer"])
        if env_state["kind"] == "none":  # the env cannot be put back mid-episode: start a new one from the restored RNG
            self.obs, _ = env.reset()
            episode = episode | {"return": 0.0, "length": 0, "usage": [0] * self.n_experts, "success": None}
        else:
            restore_env_state(env, env_state["kind"], env_state["state"])
            self.obs = env_state["obs"]
            elapsed = env_state["elapsed_steps"]
            set_elapsed_steps(env, elapsed if elapsed is not None else episode["length"])
        self.global_step = state["step"]
        self.episode_return, self.episode_length = float(episode["return"]), episode["length"]
        self.episode_usage[:] = episode["usage"]
        self.episode_success = episode["success"]
        self.recent_successes.clear()
        self.recent_successes.extend(episode["recent_successes"])
        last_return = episode["last_return"]
        self.last_episode_return = float("nan") if last_return is None else float(last_return)
        self.last_eval = state["last_eval"]
        self.stats = {k: torch.tensor(float(v)) for k, v in state["last_stats"].items()}
        self.checkpoint_step = state["step"]
        self.resume_metrics_bytes = state["metrics_bytes"]

    # ---- numerical guard -----------------------------------------------------------------------------------------
    def check_finite(self, step: int) -> None:
        """Stop with a SmoseError if the last losses or any parameter hold NaN/inf.

        One reduction per tensor and one sync for all of them: cheap enough for every LOSS_LOG_EVERY steps and
        before each checkpoint, so a diverged state is never saved.
        """
        learner = self.learner
        named = [(f"loss {k}", v) for k, v in self.stats.items()] + [("log_alpha", learner.log_alpha)]
        for prefix, module in (("actor", learner.actor), ("critic", learner.critic),
                               ("critic_target", learner.critic_target)):
            named += [(f"parameter {prefix}.{k}", v) for k, v in module.named_parameters()]
        with torch.no_grad():
            if bool(torch.isfinite(torch.stack([v.sum() for _, v in named])).all()):
                return
            # Only on failure: find the culprit (a sum that overflowed while every element is finite is no failure).
            name = next((n for n, value in named if not bool(torch.isfinite(value).all())), None)
        if name is None:
            return
        if self.checkpoint_step is not None and self.run_dir is not None:
            kept = (f"the last good checkpoint (step {self.checkpoint_step}) is kept in "
                    f"{RunDir(self.run_dir).checkpoint}, but resuming with the same settings repeats the same numbers")
        else:
            kept = "no checkpoint was written before"
        raise SmoseError(f"non-finite {name} at step {step}; training stopped: {kept}. Try lower learning rates "
                         f"(--actor-lr/--critic-lr) or check the environment's rewards and observations")

    # ---- the loop ------------------------------------------------------------------------------------------------
    def run(self, total_steps: int, progress: bool = False) -> None:
        """Advance training until ``global_step == total_steps`` (or a stop signal; see ``stop_signal``)."""
        cfg, env, learner, buffer = self.config, self.env, self.learner, self.buffer
        if self.run_dir is not None and self.logger is None:
            resumed = self.checkpoint_step if self.resume_metrics_bytes is not None else None
            self.logger = RunLogger(self.run_dir, self.n_experts, resumed, self.resume_metrics_bytes)
        log = self.logger
        checkpoint_every = cfg.checkpoint_every if self.run_dir is not None else 0
        bar = tqdm(total=total_steps, initial=self.global_step, disable=not progress, unit="step",
                   dynamic_ncols=True, smoothing=0.05)
        sps_clock, sps_step, sps = time.perf_counter(), self.global_step, 0.0
        try:
            while self.global_step < total_steps:
                obs = self.obs
                # 1. act: uniform random during warm-up, then the stochastic policy
                if self.global_step < cfg.learning_starts:
                    action = env.action_space.sample()
                else:
                    a, expert = learner.explore(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
                    action = a[0].numpy()
                    if expert is not None:
                        self.episode_usage[int(expert[0])] += 1

                # 2. step the env and store the transition (done = termination only: truncation bootstraps)
                next_obs, reward, terminated, truncated, info = env.step(action)
                buffer.add(obs, action, reward, next_obs, terminated)
                self.episode_return += float(reward)
                self.episode_length += 1
                self.episode_success = episode_success(self.episode_success, info)
                self.obs = next_obs
                self.global_step += 1
                step = self.global_step

                if terminated or truncated:
                    self._end_episode(step, sps)
                    self.obs, _ = env.reset()

                # 3. learn: one update per env step once warm-up is over
                if step > cfg.learning_starts:
                    self.stats = learner.update(buffer.sample(cfg.batch_size, self.rng))
                    if step % LOSS_LOG_EVERY == 0:
                        self.check_finite(step)
                        now = time.perf_counter()
                        sps = (step - sps_step) / max(now - sps_clock, 1e-9)
                        sps_clock, sps_step = now, step
                        if log is not None:
                            log.scalars(step, {f"losses/{k}": float(v) for k, v in self.stats.items()}
                                        | {"losses/alpha": float(learner.alpha), "charts/SPS": sps})
                if step % LOSS_LOG_EVERY == 0:
                    bar.set_postfix(self._postfix(sps), refresh=False)
                    bar.update(step - bar.n)

                # 4. periodic deterministic evaluation
                if cfg.eval_every and step % cfg.eval_every == 0:
                    self._evaluate(step)

                # 5. periodic checkpoint; a stop signal ends the loop between two whole steps
                if checkpoint_every and step % checkpoint_every == 0:
                    self.checkpoint()
                if self.stop_signal is not None:
                    break
        finally:
            bar.update(self.global_step - bar.n)
            bar.close()

    def _end_episode(self, step: int, sps: float) -> None:
        self.last_episode_return = self.episode_return
        stats = self.stats
        if self.logger is not None:
            row = {"step": step, "event": "episode", "episodic_return": self.episode_return,
                   "episodic_length": self.episode_length, "sps": sps}
            row |= {k: float(stats[k]) for k in LOSS_COLUMNS if k in stats}
            if stats:
                row["alpha"] = float(self.learner.alpha)
            scalars = {"charts/episodic_return": self.episode_return, "charts/episodic_length": self.episode_length}
            if self.episode_success is not None:
                row[SUCCESS_COLUMN] = float(self.episode_success)
                scalars["charts/success"] = float(self.episode_success)
            used = self.episode_usage.sum()
            if used:
                fractions = self.episode_usage / used
                self.last_episode_usage = fractions
                row |= {f"usage_{m}": float(f) for m, f in enumerate(fractions)}
                scalars |= {f"charts/expert_usage/{m}": float(f) for m, f in enumerate(fractions)}
            self.logger.row(row)
            self.logger.scalars(step, scalars)
        if self.episode_success is not None:
            self.recent_successes.append(self.episode_success)
        self.episode_return, self.episode_length, self.episode_success = 0.0, 0, None
        self.episode_usage[:] = 0

    def _evaluate(self, step: int) -> dict:
        result = evaluate(self.actor, self.eval_env, self.config.eval_episodes, self.config.seed) | {"step": step}
        self.last_eval = result
        if self.logger is not None:
            row = {"step": step, "event": "eval", "eval_return_mean": result["mean"], "eval_return_std": result["std"]}
            row |= {f"usage_{m}": float(f) for m, f in enumerate(result.get("expert_usage", []))}
            scalars = {"eval/episodic_return": result["mean"]}
            if "success_rate" in result:
                row[SUCCESS_COLUMN] = scalars["eval/success_rate"] = result["success_rate"]
            self.logger.row(row)
            self.logger.scalars(step, scalars)
        return result

    def _postfix(self, sps: float) -> dict:
        """Progress-bar fields: steps/s, last training return, success rate of the last training episodes, last
        evaluation (return and success rate), expert usage (% of the last episode)."""
        post = {"sps": f"{sps:.0f}", "ret": f"{self.last_episode_return:.1f}"}
        if self.recent_successes:
            post["succ%"] = f"{100 * np.mean(self.recent_successes):.0f}"
        if self.last_eval is not None:
            post["eval"] = f"{self.last_eval['mean']:.1f}"
            if "success_rate" in self.last_eval:
                post["eval_succ%"] = f"{100 * self.last_eval['success_rate']:.0f}"
        usage = self.last_episode_usage
        if usage is None and self.last_eval is not None:
            usage = self.last_eval.get("expert_usage")
        if usage is not None:
            post["usage%"] = "/".join(f"{100 * u:.0f}" for u in usage)
        return post

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        self.env.close()
        self.eval_env.close()


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after the current step; a second one aborts at once.

    Stopping between whole steps keeps the state consistent for the checkpoint written afterwards.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum: int, frame) -> None:
        trainer.stop_signal = signum
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"\nsmose: {signal.Signals(signum).name} received: stopping after this step and writing a checkpoint "
              f"(send it again to abort without one)", file=sys.stderr)

    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _explain_write_errors(trainer: Trainer) -> Iterator[None]:
    """A failed write (e.g. a full disk) stops training; say which checkpoint survived and how to go on."""
    try:
        yield
    except WriteError as exc:
        if trainer.checkpoint_step is None:
            raise SmoseError(f"{exc}; no checkpoint was written yet: free space and start again with --force") from None
        raise SmoseError(f"{exc}; the previous checkpoint (step {trainer.checkpoint_step}) is intact: free space and "
                         f"run `smose train --resume {trainer.run_dir}`") from None


def _run_to_end(trainer: Trainer, progress: bool) -> None:
    """Train to ``config.steps``, then evaluate, save the model and eval.json, and write the final checkpoint."""
    assert trainer.run_dir is not None
    run_dir, steps = trainer.run_dir, trainer.config.steps
    with stop_on_signals(trainer), _explain_write_errors(trainer):
        trainer.run(steps, progress=progress)
        if trainer.global_step < steps:  # stopped by a signal
            trainer.checkpoint()
            name = signal.Signals(trainer.stop_signal or signal.SIGINT).name
            raise TrainingInterrupted(f"{name} at step {trainer.global_step} of {steps}: checkpoint written to "
                                      f"{RunDir(run_dir).checkpoint}; continue with `smose train --resume {run_dir}`")
        final = trainer.last_eval if trainer.last_eval and trainer.last_eval["step"] == steps else None
        if final is None:
            final = trainer._evaluate(steps)
        write_eval(RunDir(run_dir).eval, final | {"source": "train"})
        trainer.checkpoint(finished=True)


def train(config: TrainConfig, run_dir: Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Train from scratch into a run directory, save the model and a final evaluation; returns the directory.

    Whatever can refuse the run (a non-empty directory, the env and its --env-kwargs, the replay buffer's memory) does
    so before the directory is created: a refused run leaves nothing behind, and the corrected command needs no
    --force.
    """
    check_env(config.env, config.env_kwargs)  # an env that refuses its arguments fails here, with its own message
    run_dir = check_run_dir(run_dir or (Path(config.out) if config.out else default_run_dir(config)), force)
    trainer = Trainer(config, run_dir)
    try:
        create_run_dir(run_dir)
    except BaseException:
        trainer.close()
        raise

    def fresh_trainer() -> Trainer:
        clear_run_dir(run_dir)  # under the lock: never the files of a trainer still running here
        return trainer

    run_locked(run_dir, fresh_trainer, progress)
    return run_dir


def resume(run_dir: Path, steps: int | None = None, checkpoint_every: int | None = None,
           progress: bool = True) -> Path:
    """Continue the run in ``run_dir`` from its last complete checkpoint (``steps`` may extend it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():  # before the lock, whose file would go in it
        raise SmoseError(f"{run_dir}: no such run directory")
    from smose.training.finetune import controller_to_compare, keep_better

    as_distilled = controller_to_compare(run_dir)  # a fine-tuning run: compared again at the end
    run_locked(run_dir, lambda: Trainer.resume(run_dir, steps, checkpoint_every), progress)
    if as_distilled is not None:
        keep_better(run_dir, as_distilled)
    return run_dir


def run_locked(run_dir: Path, make_trainer: Callable[[], Trainer], progress: bool) -> None:
    """Build the trainer and run it to the end while holding the run directory's lock: one trainer per run."""
    with runlock.hold(run_dir, "trainer"):
        trainer = make_trainer()
        try:
            trainer.write_config()
            _run_to_end(trainer, progress)
        finally:
            trainer.close()
