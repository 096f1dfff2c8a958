"""Actors: the SMOSE mixture of linear experts and the dense SAC baselines.

Every actor maps a batch of states to a tanh-squashed Gaussian (SAC) and exposes the same three calls:
``forward(obs, router_noise=None) -> ActorOutput`` with the Gaussian's mean and log-std (and, for SMOSE, the router's
logits and choice), ``sample(obs, ...)`` for the SAC updates and ``act(obs, mode)`` for deployment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from smose.choices import ALGOS, DeterministicMode  # noqa: F401 (DeterministicMode: used and re-exported)
from smose.observations import OBS_LIMIT, OBS_LIMIT_LOG2, check_observations  # noqa: F401 (re-exported)

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


@dataclass
class ActorOutput:
    mean: torch.Tensor  # [B, n_act], pre-tanh
    log_std: torch.Tensor  # [B, n_act], already squashed into [LOG_STD_MIN, LOG_STD_MAX]
    logits: torch.Tensor | None = None  # [B, M] router logits used for the choice (noisy in the actor update)
    expert: torch.Tensor | None = None  # [B] index of the chosen expert
    gate: torch.Tensor | None = None  # [B] softmax probability of the chosen expert


def squash_log_std(raw: torch.Tensor) -> torch.Tensor:
    """Map an unbounded log-std into [LOG_STD_MIN, LOG_STD_MAX] smoothly (CleanRL's form)."""
    return LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1.0)


def squashed_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, action_scale: torch.Tensor, action_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample a = tanh(x)·scale + bias, x ~ N(mean, σ²), and log π(a|s) summed over action dims."""
    std = log_std.exp()
    noise = torch.randn_like(mean)
    x = mean + std * noise
    y = torch.tanh(x)
    action = y * action_scale + action_bias
    # log N(x; mean, std) with (x - mean)/std == noise, plus the tanh·scale change of variables.
    log_prob = -0.5 * noise.pow(2) - log_std - 0.5 * math.log(2.0 * math.pi)
    log_prob = log_prob - torch.log(action_scale * (1.0 - y.pow(2)) + 1e-6)
    return action, log_prob.sum(-1)


class Actor(nn.Module):
    """Common squashing and action-bound handling; subclasses implement ``forward``."""

    algo: str

    def __init__(self, n_obs: int, n_act: int, action_low, action_high):
        super().__init__()
        self.n_obs, self.n_act = n_obs, n_act
        low = torch.as_tensor(action_low, dtype=torch.float32).reshape(n_act)
        high = torch.as_tensor(action_high, dtype=torch.float32).reshape(n_act)
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def forward(self, obs: torch.Tensor, router_noise: torch.Tensor | None = None) -> ActorOutput:
        raise NotImplementedError

    def sample(self, obs: torch.Tensor, router_noise: torch.Tensor | None = None):
        """Stochastic action, its log-prob and the forward output (for load balancing and usage statistics)."""
        out = self(obs, router_noise)
        action, log_prob = squashed_gaussian_sample(out.mean, out.log_std, self.action_scale, self.action_bias)
        return action, log_prob, out

    @torch.no_grad()
    def act(self, obs: torch.Tensor, mode: DeterministicMode = "gated") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deterministic action in env units and the chosen expert (None for dense actors); observations must pass
        ``check_observations``."""
        check_observations(obs)
        out = self(obs)
        return torch.tanh(out.mean) * self.action_scale + self.action_bias, out.expert

    def architecture(self) -> dict:
        raise NotImplementedError

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters; what a deterministic deployment needs; what one decision touches."""
        raise NotImplementedError


class SMOSEActor(Actor):
    """Linear router with bias, top-1 gating, M linear experts with mean and log-std heads (docs/method.md §1)."""

    algo = "smose"

    def __init__(self, n_obs: int, n_act: int, action_low, action_high, n_experts: int = 8):
        super().__init__(n_obs, n_act, action_low, action_high)
        self.n_experts = n_experts
        self.router = nn.Linear(n_obs, n_experts)
        # Expert m's rows [m, 0:n_act] are its mean head, [m, n_act:2 n_act] its log-std head. Kept as one tensor so
        # that all experts are evaluated by a single matmul; initialised like nn.Linear.
        bound = 1.0 / math.sqrt(n_obs)
        self.expert_weight = nn.Parameter(torch.empty(n_experts, 2 * n_act, n_obs).uniform_(-bound, bound))
        self.expert_bias = nn.Parameter(torch.empty(n_experts, 2 * n_act).uniform_(-bound, bound))

    def route(self, obs: torch.Tensor) -> torch.Tensor:
        """Clean router logits z = Θ s + c."""
        return self.router(obs)

    def forward(self, obs: torch.Tensor, router_noise: torch.Tensor | None = None) -> ActorOutput:
        logits = self.router(obs)
        if router_noise is not None:
            logits = logits + router_noise
        return self.mixture(obs, logits, self.select(obs, logits))

    def select(self, obs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The expert that acts on each state in training: the argmax of the (in the actor step noisy) logits.
        A subclass may choose otherwise (:class:`smose.interpret.tree_policy.TreeRoutedActor`: fixed trees); the gate
        is then still the chosen expert's softmax probability."""
        return logits.argmax(dim=-1)

    def mixture(self, obs: torch.Tensor, logits: torch.Tensor, expert: torch.Tensor) -> ActorOutput:
        """Gaussian of the given experts, each scaled by its softmax probability under ``logits``."""
        gate = torch.softmax(logits, dim=-1).gather(-1, expert.unsqueeze(-1))  # [B, 1], not renormalised
        batch = obs.shape[0]
        all_experts = F.linear(obs, self.expert_weight.reshape(-1, self.n_obs), self.expert_bias.reshape(-1))
        chosen = all_experts.view(batch, self.n_experts, 2 * self.n_act)[torch.arange(batch), expert]
        gated = gate * chosen
        mean, raw_log_std = gated[:, : self.n_act], gated[:, self.n_act :]
        return ActorOutput(mean, squash_log_std(raw_log_std), logits, expert, gate.squeeze(-1))

    @torch.no_grad()
    def decision_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Clean router logits in float64, from which the deterministic choice is taken.

        A float32 matrix product rounds each logit differently depending on how the matrix library orders the sum
        (a batch and a single state differ), which flips the argmax wherever two logits are within float32 rounding
        (~1e-7 relative) of each other. In float64 every product of a float32 weight and a float32 observation is
        exact and the sum rounds ~1e-16 relative, so exported controllers, which sum in float64 in index order,
        make the same choice except where two logits agree to ~1e-15 (docs/export.md). The gate and the action
        stay in float32.
        """
        return F.linear(obs.to(torch.float64), self.router.weight.to(torch.float64),
                        self.router.bias.to(torch.float64))

    @torch.no_grad()
    def choose(self, obs: torch.Tensor) -> torch.Tensor:
        """The clean router's choice k(s) = argmax_m z_m(s) for each state (ties: lowest m): LongTensor [B]."""
        check_observations(obs)
        return self.decision_logits(obs).argmax(dim=-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, mode: DeterministicMode = "gated") -> tuple[torch.Tensor, torch.Tensor | None]:
        expert = self.choose(obs)
        return self._act_with(obs, expert, mode), expert

    @torch.no_grad()
    def act_with_experts(
        self, obs: torch.Tensor, expert: torch.Tensor, mode: DeterministicMode = "gated"
    ) -> torch.Tensor:
        """Deterministic action when ``expert`` (e.g. chosen by distilled trees) replaces the router's argmax."""
        check_observations(obs)
        return self._act_with(obs, expert, mode)

    def _act_with(self, obs: torch.Tensor, expert: torch.Tensor, mode: DeterministicMode) -> torch.Tensor:
        if mode == "gated":
            mean = self.mixture(obs, self.router(obs), expert).mean
            return torch.tanh(mean) * self.action_scale + self.action_bias
        if mode != "linear":
            raise ValueError(f"unknown deterministic mode {mode!r}; expected 'gated' or 'linear'")
        weight = self.expert_weight[expert, : self.n_act]  # [B, n_act, n_obs]
        bias = self.expert_bias[expert, : self.n_act]
        action = torch.bmm(weight, obs.unsqueeze(-1)).squeeze(-1) + bias
        return torch.maximum(torch.minimum(action, self.action_high), self.action_low)

    def architecture(self) -> dict:
        return {"algo": self.algo, "n_obs": self.n_obs, "n_act": self.n_act, "n_experts": self.n_experts}

    def parameter_counts(self) -> dict[str, int]:
        router = self.n_experts * (self.n_obs + 1)
        head = self.n_act * (self.n_obs + 1)
        return {
            "train": sum(p.numel() for p in self.parameters()),
            "deploy": router + self.n_experts * head,
            "active": router + head,
        }


class MLPActor(Actor):
    """Dense SAC actor: ReLU hidden layers, then a mean head and a log-std head."""

    def __init__(self, n_obs: int, n_act: int, action_low, action_high, hidden: tuple[int, ...], algo: str):
        super().__init__(n_obs, n_act, action_low, action_high)
        self.algo = algo
        self.hidden = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = []
        width = n_obs
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.mean_head = nn.Linear(width, n_act)
        self.log_std_head = nn.Linear(width, n_act)

    def forward(self, obs: torch.Tensor, router_noise: torch.Tensor | None = None) -> ActorOutput:
        h = self.trunk(obs)
        return ActorOutput(self.mean_head(h), squash_log_std(self.log_std_head(h)))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, mode: DeterministicMode = "gated") -> tuple[torch.Tensor, torch.Tensor | None]:
        if mode != "gated":
            raise ValueError(f"mode {mode!r} exists only for SMOSE; dense actors act with 'gated' (tanh of the mean)")
        return super().act(obs, mode)

    def architecture(self) -> dict:
        return {"algo": self.algo, "n_obs": self.n_obs, "n_act": self.n_act, "hidden": list(self.hidden)}

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        deploy = total - sum(p.numel() for p in self.log_std_head.parameters())
        return {"train": total, "deploy": deploy, "active": deploy}


def dense_hidden_size(algo: str, n_obs: int, n_act: int, n_experts: int) -> tuple[int, ...]:
    """Hidden layer sizes of the dense baselines (docs/method.md §4)."""
    if algo == "sac-l":
        return (256, 256)
    if algo == "sac-m":  # as many parameters as SMOSE in total
        return (math.ceil(n_experts * n_obs * (1 + 2 * n_act) / (n_obs + 2 * n_act)),)
    if algo == "sac-s":  # as many as the router plus one expert
        return (math.ceil(n_obs * (n_experts + 2 * n_act) / (n_obs + 2 * n_act)),)
    raise ValueError(f"unknown algorithm {algo!r}; expected one of {', '.join(ALGOS)}")


def make_actor(algo: str, n_obs: int, n_act: int, action_low, action_high, n_experts: int = 8) -> Actor:
    if algo == "smose":
        return SMOSEActor(n_obs, n_act, action_low, action_high, n_experts)
    return MLPActor(n_obs, n_act, action_low, action_high, dense_hidden_size(algo, n_obs, n_act, n_experts), algo)


def actor_from_architecture(arch: dict, action_low, action_high) -> Actor:
    """Rebuild an actor from the ``architecture()`` dict saved in model.json."""
    if arch["algo"] == "smose":
        return SMOSEActor(arch["n_obs"], arch["n_act"], action_low, action_high, arch["n_experts"])
    return MLPActor(arch["n_obs"], arch["n_act"], action_low, action_high, tuple(arch["hidden"]), arch["algo"])


class TwinQ(nn.Module):
    """Two Q networks [n_obs + n_act → 256 → 256 → 1] evaluated together with batched matmuls.

    Stacking the twins' weights turns six small GEMMs into three batched ones; the maths is that of two independent
    nn.Linear stacks with nn.Linear's initialisation.
    """

    def __init__(self, n_obs: int, n_act: int, hidden: int = 256, n_critics: int = 2):
        super().__init__()
        sizes = [n_obs + n_act, hidden, hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(n_critics, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_critics, 1, fan_out).uniform_(-bound, bound)))
        self.n_obs, self.n_act, self.n_critics = n_obs, n_act, n_critics

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q values of shape [n_critics, B]."""
        x = torch.cat([obs, action], dim=-1).unsqueeze(0).expand(self.n_critics, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.relu(x)
        return x.squeeze(-1)
