"""The twin critic's forward and backward passes written out by hand, into buffers allocated once.

These passes compute what autograd computes, with less around it. They write every activation and gradient into
buffers allocated once: each fresh [2, B, 256] tensor would cost an allocation and cache misses, which adds tens of µs
per tensor. Where autograd runs a batched GEMM with a single output column (the last layer), they run GEMVs or a
broadcast multiply, which is many times faster. And they skip work the SAC update never uses: gradients with respect
to the observations, and, in the actor step, the rows of the twin that is not the minimum, whose gradient is exactly
zero. ``tests/test_critic.py`` checks every gradient against autograd's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from smose.algo.policy import TwinQ


def relu_backward_(grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """In place: zero ``grad`` where the ReLU output ``activation`` is 0 (autograd's rule, without a new tensor)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0.0, grad_input=grad)


class TwinQPasses:
    """Passes through ``critic`` (and, for targets, through a copy of it with other weights).

    Buffers: ``h1``/``h2`` hold the hidden activations of the last ``forward`` (what a backward needs), ``s1``/``s2``
    are scratch for the target pass and then for the critic step's layer gradients. ``forward`` and ``min_q_with_grad``
    overwrite them, so each backward must follow its own forward before the next one, as in the SAC update.
    """

    def __init__(self, critic: TwinQ):
        if len(critic.weights) != 3:
            raise ValueError("the hand-written passes expect two hidden layers")
        self.critic = critic
        self.batch = -1

    def _buffers(self, batch: int) -> None:
        if batch != self.batch:
            c, hidden, dtype = self.critic.n_critics, self.critic.weights[1].shape[1], self.critic.weights[1].dtype
            self.h1, self.h2, self.s1, self.s2 = (torch.empty(c, batch, hidden, dtype=dtype) for _ in range(4))
            self.q = torch.empty(c, batch, dtype=dtype)
            self.batch = batch

    def _grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The critic's ``.grad`` tensors (weights, biases), created once and then overwritten with out=."""
        for p in self.critic.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return [w.grad for w in self.critic.weights], [b.grad for b in self.critic.biases]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, net: TwinQ | None = None) -> torch.Tensor:
        """Q values [n_critics, B] of x = [obs | action]. With ``net`` (the target twin) activations go to scratch."""
        self._buffers(x.shape[0])
        h1, h2 = (self.h1, self.h2) if net is None else (self.s1, self.s2)
        net = net if net is not None else self.critic
        w, b = net.weights, net.biases
        torch.baddbmm(b[0], x.expand(net.n_critics, -1, -1), w[0], out=h1).relu_()
        torch.baddbmm(b[1], h1, w[1], out=h2).relu_()
        for c in range(net.n_critics):  # a batched GEMM with one output column is many times slower than GEMVs
            torch.addmv(b[2][c, 0], h2[c], w[2][c, :, 0], out=self.q[c])
        return self.q

    @torch.no_grad()
    def backward_to_params(self, x: torch.Tensor, grad_q: torch.Tensor) -> None:
        """After ``forward(x)``: d loss / d parameters into the critic's ``.grad``; ``grad_q`` is [n_critics, B]."""
        w = self.critic.weights
        dw, db = self._grads()
        for c in range(self.critic.n_critics):
            torch.mv(self.h2[c].T, grad_q[c], out=dw[2][c, :, 0])
        torch.sum(grad_q, 1, keepdim=True, out=db[2][:, :, 0])
        g2 = relu_backward_(torch.mul(grad_q.unsqueeze(-1), w[2].transpose(1, 2), out=self.s2), self.h2)
        torch.bmm(self.h1.transpose(1, 2), g2, out=dw[1])
        torch.sum(g2, 1, keepdim=True, out=db[1])
        g1 = relu_backward_(torch.bmm(g2, w[1].transpose(1, 2), out=self.s1), self.h1)
        torch.bmm(x.expand(self.critic.n_critics, -1, -1).transpose(1, 2), g1, out=dw[0])
        torch.sum(g1, 1, keepdim=True, out=db[0])

    @torch.no_grad()
    def action_grad(self, grad_min: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """d loss / d action after ``forward``, for a loss of min_c Q_c; ``which`` says which twin was the minimum.

        Each row's gradient flows only through its minimal twin, so each twin's backward runs on its own rows.
        """
        w = self.critic.weights
        grad_action = grad_min.new_zeros(grad_min.shape[0], self.critic.n_act)
        for c in range(self.critic.n_critics):
            rows = (which == c).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            g2 = relu_backward_(grad_min[rows].unsqueeze(1) * w[2][c].T, self.h2[c].index_select(0, rows))
            g1 = relu_backward_(g2 @ w[1][c].T, self.h1[c].index_select(0, rows))
            grad_action[rows] = g1 @ w[0][c, self.critic.n_obs:].T
        return grad_action

    def min_q_with_grad(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, Callable]:
        """min(Q1, Q2) [B] and the function from d loss / d min Q to d loss / d action (before the next forward)."""
        q, which = self.forward(torch.cat([obs, action], dim=-1)).min(dim=0)
        return q, partial(self.action_grad, which=which)
