"""Replay buffer: one preallocated float32 table, one row per transition, one gather per sampled batch."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

LOAD_CHUNK_ROWS = 65_536


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor  # 1.0 where the episode terminated (not where it was truncated)


class ReplayBuffer:
    """Row layout: [obs | action | reward | next_obs | done]; rows are overwritten oldest first once full.

    Keeping each transition in one contiguous row makes sampling a single fancy-index gather into a fresh array
    whose column slices become the batch tensors without another copy.
    """

    def __init__(self, capacity: int, n_obs: int, n_act: int):
        self.capacity, self.n_obs, self.n_act = capacity, n_obs, n_act
        self.width = 2 * n_obs + n_act + 2
        self.data = np.zeros((capacity, self.width), dtype=np.float32)
        self.pos = 0
        self.size = 0
        o, a = n_obs, n_act
        self._slices = (slice(0, o), slice(o, o + a), slice(o + a, o + a + 1), slice(o + a + 1, 2 * o + a + 1))

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        row = self.data[self.pos]
        s_obs, s_act, s_rew, s_next = self._slices
        row[s_obs] = obs
        row[s_act] = action
        row[s_rew] = reward
        row[s_next] = next_obs
        row[-1] = float(terminated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        rows = torch.from_numpy(self.data[rng.integers(0, self.size, size=batch_size)])
        s_obs, s_act, s_rew, s_next = self._slices
        return Batch(rows[:, s_obs], rows[:, s_act], rows[:, s_rew].squeeze(-1), rows[:, s_next], rows[:, -1])

    def state_dict(self) -> dict:
        """The filled rows (a view, not a copy), the next row to write and the number of filled rows."""
        return {"data": self.data[: self.size], "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        """``state["data"]`` may be any array-like sliced by rows (a checkpoint's rows are read from the file as they
        are copied): it is copied LOAD_CHUNK_ROWS rows at a time, so the extra memory stays small."""
        size = int(state["size"])
        if tuple(state["data"].shape) != (size, self.width) or size > self.capacity:
            raise ValueError(f"replay buffer of shape {tuple(state['data'].shape)} does not fit "
                             f"capacity {self.capacity} × {self.width}")
        for start in range(0, size, LOAD_CHUNK_ROWS):
            stop = min(start + LOAD_CHUNK_ROWS, size)
            self.data[start:stop] = state["data"][start:stop]
        self.pos, self.size = int(state["pos"]), size

    @property
    def nbytes(self) -> int:
        return self.data.nbytes
