"""Registering toy envs with Gymnasium for a test's duration (shared by the test modules that define such envs)."""

import contextlib
from typing import Any, Iterator

import gymnasium as gym


@contextlib.contextmanager
def registered_env(env_id: str, entry_point: Any, **kwargs: Any) -> Iterator[str]:
    """``env_id`` is makeable inside the block (``gym.register(id=env_id, entry_point=..., **kwargs)``) and removed
    from the registry after it, whatever the block raises."""
    gym.register(id=env_id, entry_point=entry_point, **kwargs)
    try:
        yield env_id
    finally:
        del gym.registry[env_id]
