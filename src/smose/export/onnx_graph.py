"""The ``onnx`` format: a graph built by ``torch.onnx`` (trees unrolled into ``where`` ops), checked with
``onnx.checker`` and run with onnxruntime against the library's policy (smose.export.self_check) before it is written.

Input ``obs [batch, n_obs]`` float32; outputs ``action [batch, n_act]`` float32 and, for SMOSE, ``expert [batch]``
int64. A graph cannot raise: invalid observations give NaN actions and expert -1.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smose import __version__
from smose.algo.policy import Actor, MLPActor, SMOSEActor
from smose.errors import SmoseError
from smose.export.exported_policy import ExportedPolicy, oblique_arrays, oblique_tests
from smose.export.formats import EXPORT_FORMAT, EXPORT_FORMAT_VERSION
from smose.export.self_check import check_onnx_model
from smose.observations import OBS_LIMIT

ONNX_OPSET = 17


def _yes_leaf(node: dict) -> torch.Tensor:
    return torch.tensor(node["probability"][1], dtype=torch.float64)


def _class_leaf(node: dict) -> torch.Tensor:
    """The leaf's most frequent expert, ties to the lowest index (as np.argmax in TreeRouter)."""
    return torch.tensor(int(np.argmax(node["probability"])), dtype=torch.int64)


def _valid_rows(obs: torch.Tensor) -> torch.Tensor:
    """[B] bool: every component finite and within ±OBS_LIMIT (the library's check_observations)."""
    return (obs.abs() <= OBS_LIMIT).all(dim=1)


def _reject_invalid(valid: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """NaN actions for invalid observations: a graph cannot raise, and NaN cannot pass unnoticed downstream."""
    return torch.where(valid.unsqueeze(1), action, torch.full_like(action, float("nan")))


class _OnnxSMOSE(nn.Module):
    """The deterministic SMOSE policy written with ops the ONNX exporter maps one to one (batch axis dynamic).

    The neural choice is the argmax of float64 logits, as in the library (``SMOSEActor.decision_logits``); the gate
    uses float32 logits, as the library's action does. With ``trees`` the expert comes from the distilled trees,
    unrolled into nested ``where`` ops; as in the library's TreeRouter, each test compares a float32 input in float64
    with the threshold. Invalid observations give NaN actions and expert -1.
    """

    def __init__(self, actor: SMOSEActor, mode: str, trees: dict | None = None):
        super().__init__()
        n_act, n_obs = actor.n_act, actor.n_obs
        self.mode, self.n_experts, self.n_act, self.trees = mode, actor.n_experts, n_act, trees
        self.register_buffer("router_weight", actor.router.weight.detach().clone())
        self.register_buffer("router_bias", actor.router.bias.detach().clone())
        self.register_buffer("router_weight64", actor.router.weight.detach().to(torch.float64).clone())
        self.register_buffer("router_bias64", actor.router.bias.detach().to(torch.float64).clone())
        self.register_buffer("mean_weight", actor.expert_weight.detach()[:, :n_act].reshape(-1, n_obs).clone())
        self.register_buffer("mean_bias", actor.expert_bias.detach()[:, :n_act].reshape(-1).clone())
        for name in ("action_scale", "action_bias", "action_low", "action_high"):
            self.register_buffer(name, getattr(actor, name).detach().clone())
        if trees is not None and trees["kind"] == "oblique":
            mean, scale, weight, bias = (torch.from_numpy(a) for a in oblique_arrays(trees))
            self.register_buffer("oblique_mean", mean)
            self.register_buffer("oblique_scale", scale)
            self.register_buffer("hyperplane_weight64", weight.to(torch.float64))
            self.register_buffer("hyperplane_bias64", bias.to(torch.float64))

    def _tree(self, nodes: list[dict], i: int, inputs: torch.Tensor, leaf: Callable[[dict], torch.Tensor]):
        node = nodes[i]
        if node["leaf"]:
            return leaf(node)
        go_left = inputs[:, node["feature"]].to(torch.float64) <= node["threshold"]
        return torch.where(go_left, self._tree(nodes, node["left"], inputs, leaf),
                           self._tree(nodes, node["right"], inputs, leaf))

    def _oblique_route(self, obs: torch.Tensor) -> torch.Tensor:
        """The oblique tree as the library computes it (smose.interpret.oblique.node_activations): the
        standardisation in float32, each hyperplane in float64 summed feature by feature (exact products, index
        order)."""
        assert self.trees is not None
        nodes = self.trees["trees"][0]["nodes"]
        _, rows = oblique_tests(self.trees)
        if not rows:  # a single leaf
            return _class_leaf(nodes[0]).expand(obs.shape[0])
        x = ((obs - self.oblique_mean) / self.oblique_scale).to(torch.float64)
        weight = self.hyperplane_weight64
        activation = self.hyperplane_bias64 + x[:, 0:1] * weight[:, 0]
        for f in range(1, weight.shape[1]):
            activation = activation + x[:, f:f + 1] * weight[:, f]
        go_left = activation <= 0

        def walk(i: int) -> torch.Tensor:
            node = nodes[i]
            if node["leaf"]:
                return _class_leaf(node)
            return torch.where(go_left[:, rows[i]], walk(node["left"]), walk(node["right"]))

        return walk(0).expand(obs.shape[0])

    def _tree_route(self, obs: torch.Tensor) -> torch.Tensor:
        assert self.trees is not None
        if self.trees["kind"] == "oblique":
            return self._oblique_route(obs)
        if self.trees["kind"] == "per-expert":
            yes = []
            for m, tree in enumerate(self.trees["trees"]):
                inputs = obs * self.router_weight[m]  # u_m = Θ_m ⊙ s in float32
                yes.append(self._tree(tree["nodes"], 0, inputs, _yes_leaf).expand(obs.shape[0]))
            return torch.argmax(torch.stack(yes, dim=1), dim=1)  # first maximum: ties to the lowest index
        return self._tree(self.trees["trees"][0]["nodes"], 0, obs, _class_leaf).expand(obs.shape[0])

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = F.linear(obs, self.router_weight, self.router_bias)
        if self.trees is None:
            expert = torch.argmax(F.linear(obs.to(torch.float64), self.router_weight64, self.router_bias64), dim=-1)
        else:
            expert = self._tree_route(obs)
        means = F.linear(obs, self.mean_weight, self.mean_bias).reshape(-1, self.n_experts, self.n_act)
        index = expert.reshape(-1, 1, 1).expand(-1, 1, self.n_act)
        chosen = torch.gather(means, 1, index).squeeze(1)
        if self.mode == "gated":
            gate = torch.gather(torch.softmax(logits, dim=-1), 1, expert.reshape(-1, 1))
            action = torch.tanh(gate * chosen) * self.action_scale + self.action_bias
        else:
            action = torch.maximum(torch.minimum(chosen, self.action_high), self.action_low)
        valid = _valid_rows(obs)
        return _reject_invalid(valid, action), torch.where(valid, expert, torch.full_like(expert, -1))


class _OnnxDense(nn.Module):
    def __init__(self, actor: MLPActor):
        super().__init__()
        self.trunk, self.mean_head = actor.trunk, actor.mean_head
        self.register_buffer("action_scale", actor.action_scale.detach().clone())
        self.register_buffer("action_bias", actor.action_bias.detach().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        action = torch.tanh(self.mean_head(self.trunk(obs))) * self.action_scale + self.action_bias
        return _reject_invalid(_valid_rows(obs), action)


def onnx_bytes(actor: Actor, p: ExportedPolicy) -> bytes:
    """The ONNX model, checked with onnx.checker and compared with the library's policy under onnxruntime."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise SmoseError(f"ONNX export needs the 'export' extra (pip install 'smose[export]'): {exc}") from None
    module: nn.Module = (_OnnxSMOSE(actor, p.mode, p.routing_trees) if isinstance(actor, SMOSEActor)
                         else _OnnxDense(actor))
    module.eval()
    outputs = ["action", "expert"] if p.is_smose else ["action"]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) needs no extra packages and handles these small graphs; its
        # deprecation notice is not actionable for users of the exported file.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, p.n_obs),), buffer, dynamo=False, input_names=["obs"],
                          output_names=outputs, opset_version=ONNX_OPSET,
                          dynamic_axes={name: {0: "batch"} for name in ["obs", *outputs]})
    model = onnx.load_from_string(buffer.getvalue())
    model.doc_string = "\n".join([f"SMOSE policy for {p.env} ({p.algo}, mode {p.mode}); produced by {p.command}",
                                  "input obs [batch, n_obs] float32; output action [batch, n_act] float32"
                                  + ("; expert [batch] int64" if p.is_smose else "")])
    meta = {"format": EXPORT_FORMAT, "format_version": str(EXPORT_FORMAT_VERSION), "smose_version": __version__,
            "env_id": p.env_id, "env_kwargs": json.dumps(p.env_kwargs),
            "algo": p.algo, "mode": p.mode, "command": p.command,
            "observation_names": "\n".join(p.obs_names), "action_names": "\n".join(p.act_names)}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    check_onnx_model(onnxruntime, data, actor, p)
    return data
