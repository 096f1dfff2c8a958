"""The training configuration: one typed dataclass that is also the ``smose train`` command line and config.json.

The settings of one SAC learning step (``SACHyperParams``, what ``smose.algo`` reads) are the TrainConfig fields
marked as such: their names, types and defaults are written once, here.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smose.choices import ALGOS, DEFAULT_LB_WEIGHT, LB_LOSSES, NOISE_KINDS, UPDATES
from smose.errors import SmoseError
from smose.limits import (
    MAX_BATCH_SIZE,
    MAX_EPISODES,
    MAX_EXPERTS,
    MAX_SEED,
    MAX_STEPS,
    MAX_THREADS,
    MAX_UPDATE_INTERVAL,
)

# The upper bound of each count field; --buffer-size has none: its memory is checked when it is allocated.
UPPER_BOUNDS = {"steps": MAX_STEPS, "experts": MAX_EXPERTS, "seed": MAX_SEED, "learning_starts": MAX_STEPS,
                "batch_size": MAX_BATCH_SIZE, "policy_frequency": MAX_UPDATE_INTERVAL,
                "target_frequency": MAX_UPDATE_INTERVAL, "eval_every": MAX_STEPS, "eval_episodes": MAX_EPISODES,
                "checkpoint_every": MAX_STEPS, "threads": MAX_THREADS}
RUN_CONFIG_FORMAT = "smose-run-config"
RUN_CONFIG_FORMAT_VERSION = 1
# Keys config.json holds besides the TrainConfig fields (written for the record, ignored when read back; a fine-tuning
# run's "finetune" record is read by smose.training.finetune).
RUN_CONFIG_EXTRA_KEYS = ("format", "format_version", "lb_weight_effective", "versions", "finetune")
_TYPES: dict[str, type] = {"int": numbers.Integral, "float": numbers.Real, "str": str, "bool": bool, "dict": dict}


def check_type(name: str, value: Any, annotation: str) -> None:
    """``value`` must match a TrainConfig annotation ("int", "float | None", ...); bools are not ints here."""
    base = annotation.removesuffix(" | None")
    if value is None and annotation.endswith(" | None"):
        return
    if not isinstance(value, _TYPES[base]) or (base != "bool" and isinstance(value, bool)):
        article = "an" if base == "int" else "a"
        if base == "dict":
            raise SmoseError(f"{name} must be a mapping of keyword arguments, got {value!r}")
        raise SmoseError(f"{name} must be {article} {base}, got {value!r}")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def _sac(default: Any, help: str, **extra: Any) -> Any:
    """A field that one SAC learning step reads: SACHyperParams carries it too."""
    return _opt(default, help, sac=True, **extra)


def effective_lb_weight(lb_loss: str, lb_weight: float | None) -> float:
    """The load-balancing weight λ in effect: the loss's own (DEFAULT_LB_WEIGHT) unless one is given."""
    return DEFAULT_LB_WEIGHT[lb_loss] if lb_weight is None else float(lb_weight)


@dataclass
class TrainConfig:
    env: str = _opt("Hopper-v5", "Gymnasium environment id (Box or Dict observations, Box actions)")
    env_kwargs: dict = field(default_factory=dict, metadata={
        "help": "arguments of the env's constructor, e.g. --env-kwargs healthy_reward=0.5 "
                "exclude_current_positions_from_observation=false (values read as JSON where they parse, strings "
                "otherwise); recorded in config.json and model.json and used by every command that rebuilds the env",
        "metavar": "KEY=VALUE"})
    algo: str = _opt("smose", "actor: smose (mixture of linear experts) or a dense SAC baseline", choices=ALGOS)
    steps: int = _opt(1_000_000, "total environment steps")
    experts: int = _opt(8, "number of linear experts M (also sizes SAC-M/SAC-S)")
    lb_loss: str = _sac("cv2", "router load-balancing loss", choices=LB_LOSSES)
    lb_weight: float | None = _sac(None, "weight λ of the load-balancing loss (default: 0.1 for cv2, 0.001 for z)")
    lb_noise: str = _sac("batch", "router noise in the actor update: one vector per batch or per state",
                         choices=NOISE_KINDS)
    seed: int = _opt(0, "seed for the env, the networks and the replay sampling")
    learning_starts: int = _opt(10_000, "uniform random actions before the first update")
    batch_size: int = _opt(256, "minibatch size")
    buffer_size: int = _opt(1_000_000, "replay buffer capacity (transitions)")
    gamma: float = _sac(0.99, "discount factor")
    tau: float = _sac(0.005, "target network smoothing coefficient")
    actor_lr: float = _sac(3e-4, "actor learning rate (Adam)")
    critic_lr: float = _sac(1e-3, "critic learning rate (Adam)")
    alpha_lr: float = _sac(1e-3, "entropy temperature learning rate (Adam)")
    policy_frequency: int = _sac(2, "actor/alpha update delay: every Nth step, N actor and N alpha updates")
    target_frequency: int = _sac(1, "soft target update every N steps")
    autotune: bool = _sac(True, "tune the entropy temperature alpha towards entropy -n_act")
    alpha: float = _sac(0.2, "fixed entropy temperature when --no-autotune")
    eval_every: int = _opt(10_000, "deterministic evaluation every N steps (0: never during training)")
    eval_episodes: int = _opt(5, "episodes per periodic and final evaluation")
    checkpoint_every: int = _opt(50_000, "write a resumable checkpoint every N steps (0: only at the end and when "
                                         "interrupted); continue with `smose train --resume RUN_DIR`")
    threads: int = _opt(1, "torch intra-op threads (one run per core is fastest)")
    update: str = _opt("fused", "how a SAC step is computed: fused (hand-written passes, fast) or autograd (the "
                                "reference implementation); the same maths and state, so either resumes the other's "
                                "checkpoints", choices=UPDATES)
    out: str | None = _opt(None, "run directory (default: runs/<env>__<algo>__<seed>)")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def effective_lb_weight(self) -> float:
        return effective_lb_weight(self.lb_loss, self.lb_weight)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            check_type(f"--{f.name.replace('_', '-')}", getattr(self, f.name), str(f.type))
        positive = ["steps", "experts", "batch_size", "buffer_size", "policy_frequency", "target_frequency",
                    "eval_episodes", "threads"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise SmoseError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("learning_starts", "eval_every", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise SmoseError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name, limit in UPPER_BOUNDS.items():
            if getattr(self, name) > limit:
                raise SmoseError(f"--{name.replace('_', '-')} must be at most {limit}, got {getattr(self, name)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SmoseError(f"--{f.name.replace('_', '-')} must be finite, got {value}")
        bad_keys = [key for key in self.env_kwargs if not (isinstance(key, str) and key.isidentifier())]
        if bad_keys:
            raise SmoseError(f"--env-kwargs: keys must be Python identifiers, got {bad_keys[0]!r}")
        if self.algo not in ALGOS:
            raise SmoseError(f"unknown --algo {self.algo!r}; expected one of {', '.join(ALGOS)}")
        if self.lb_loss not in LB_LOSSES:
            raise SmoseError(f"unknown --lb-loss {self.lb_loss!r}; expected one of {', '.join(LB_LOSSES)}")
        if self.lb_noise not in NOISE_KINDS:
            raise SmoseError(f"unknown --lb-noise {self.lb_noise!r}; expected 'batch' or 'state'")
        if self.update not in UPDATES:
            raise SmoseError(f"unknown --update {self.update!r}; expected one of {', '.join(UPDATES)}")
        if self.batch_size > self.buffer_size:
            raise SmoseError(f"--batch-size {self.batch_size} exceeds --buffer-size {self.buffer_size}")
        if self.lb_weight is not None and self.lb_weight < 0:
            raise SmoseError(f"--lb-weight must be >= 0, got {self.lb_weight}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise SmoseError("--gamma must lie in [0, 1] and --tau in (0, 1]")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "alpha"):
            if getattr(self, name) <= 0:
                raise SmoseError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    def hyperparams(self) -> SACHyperParams:
        """The settings of one SAC learning step: this configuration's fields that SACHyperParams carries."""
        return SACHyperParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SACHyperParams)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SmoseError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**data)


def _resolve_lb_weight(hp: Any) -> None:
    object.__setattr__(hp, "lb_weight", effective_lb_weight(hp.lb_loss, hp.lb_weight))  # frozen: set once, here


# What one SAC learning step reads (smose.algo.sac, smose.algo.fast.fused): the TrainConfig fields declared with _sac,
# with their defaults, frozen; ``lb_weight`` is the λ in effect (None, the default, means the loss's own).
SACHyperParams = dataclasses.make_dataclass(
    "SACHyperParams",
    [(f.name, f.type, field(default=f.default)) for f in dataclasses.fields(TrainConfig) if f.metadata.get("sac")],
    namespace={"__post_init__": _resolve_lb_weight, "__module__": __name__}, frozen=True)


def run_config_json(config: TrainConfig, versions: dict[str, str]) -> dict[str, Any]:
    """The contents of a run's config.json: the fields, the effective λ and the library versions."""
    return {"format": RUN_CONFIG_FORMAT, "format_version": RUN_CONFIG_FORMAT_VERSION, **config.to_dict(),
            "lb_weight_effective": config.effective_lb_weight, "versions": versions}


def read_run_config(path: Path) -> TrainConfig:
    """A run's config.json, checked (files written before the format field existed are read as version 1)."""
    from smose.serialization import check_format, read_json  # imports torch, which the command line's parser must not

    path = Path(path)
    data = check_format(read_json(path, "run configuration"), path, RUN_CONFIG_FORMAT, RUN_CONFIG_FORMAT_VERSION,
                        "smose run configuration", required=False)
    try:
        return TrainConfig.from_dict({k: v for k, v in data.items() if k not in RUN_CONFIG_EXTRA_KEYS})
    except SmoseError as exc:
        raise SmoseError(f"{path}: invalid run configuration ({exc})") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Expose every TrainConfig field as --kebab-case option, typed from the annotation.

    The parser's defaults are None so that ``explicit_options`` can tell what was given on the command line (for
    ``--resume``); the dataclass supplies the real defaults.
    """
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("dict", dict):
            # "extend": a second --env-kwargs adds to the first (a key given twice is refused), never replaces it
            parser.add_argument(flag, nargs="+", action="extend", default=None, metavar=f.metadata["metavar"],
                                help=f.metadata["help"])
            continue
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind = {"int": int, "float": float, "float | None": float, "str": str, "str | None": str}[str(f.type)]
        parser.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text)


def explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line (``--env-kwargs`` words parsed into a dict)."""
    from smose.tasks.envs import parse_env_kwargs

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    if "env_kwargs" in given:
        given["env_kwargs"] = parse_env_kwargs(given["env_kwargs"])
    return given


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**explicit_options(args))
