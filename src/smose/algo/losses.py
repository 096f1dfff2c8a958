"""Load-balancing losses for the router (docs/method.md §2). Pure functions of logits; no module state."""

from __future__ import annotations

import math

import torch

from smose.choices import LB_LOSSES, LBLoss, NoiseKind


def uses_router_noise(kind: LBLoss) -> bool:
    """Whether the actor update adds router noise: every loss kind but "none"."""
    return kind != "none"


def router_noise(batch: int, n_experts: int, kind: NoiseKind) -> torch.Tensor:
    """ε ~ N(0, (1/M)² I): one vector shared by the batch ([1, M]) or one per state ([B, M])."""
    rows = 1 if kind == "batch" else batch
    return torch.randn(rows, n_experts) / n_experts


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """(std / mean)² with the unbiased std; the epsilon only guards an all-zero vector. A single value (M = 1: one
    expert, nothing to balance) has no spread: 0, where the unbiased std would be NaN."""
    if values.numel() < 2:
        return values.sum() * 0.0
    return values.var(unbiased=True) / (values.mean().pow(2) + 1e-10)


def importance(noisy_logits: torch.Tensor) -> torch.Tensor:
    """Imp_m = Σ_s softmax(z̃(s))_m."""
    return torch.softmax(noisy_logits, dim=-1).sum(0)


def load(clean_logits: torch.Tensor, noisy_logits: torch.Tensor, noise_std: float) -> torch.Tensor:
    """V-MoE load: Load_m = Σ_s P(z_m(s) + ε_new ≥ τ(s)), τ(s) = max_m z̃_m(s), ε_new ~ N(0, noise_std²)."""
    threshold = noisy_logits.max(dim=-1, keepdim=True).values
    z = (threshold - clean_logits) / noise_std
    return (0.5 * torch.erfc(z / math.sqrt(2.0))).sum(0)  # 1 - Φ(z), computed without cancellation


def cv2_balance_loss(clean_logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
    """L_aux = ½ CV²(Imp) + ½ CV²(Load)."""
    noise_std = 1.0 / clean_logits.shape[-1]
    return 0.5 * cv_squared(importance(noisy_logits)) + 0.5 * cv_squared(load(clean_logits, noisy_logits, noise_std))


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of (Σ_m exp z_m)², the authors' alternative that keeps router logits small."""
    return logits.exp().sum(-1).pow(2).mean()


def balance_loss(kind: LBLoss, clean_logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
    if kind == "cv2":
        return cv2_balance_loss(clean_logits, noisy_logits)
    if kind == "z":
        return z_loss(clean_logits)
    if kind == "z-noisy":
        return z_loss(noisy_logits)
    if kind in ("none", "none-noisy"):
        return noisy_logits.new_zeros(())
    raise ValueError(f"unknown load-balancing loss {kind!r}; expected one of {', '.join(LB_LOSSES)}")
