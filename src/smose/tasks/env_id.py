"""Environment ids read as Gymnasium reads them: ``[namespace/]name[-vN]``, so that "Hopper-v4" and "Hopper-v5" are
versions of the task "Hopper" and "dm_control/walker-walk-v0" is the task "walker-walk" of the namespace "dm_control".

Gymnasium's own grammar (``gymnasium.envs.registration.ENV_ID_RE``), repeated here so that the modules that name
observations and route with trees need the standard library only.
"""

from __future__ import annotations

import re
from typing import NamedTuple

ENV_ID_RE = re.compile(r"^(?:(?P<namespace>[\w:-]+)\/)?(?:(?P<name>[\w:.-]+?))(?:-v(?P<version>\d+))?$")


class EnvId(NamedTuple):
    namespace: str | None
    name: str  # the task: the same for every version
    version: int | None


def parse_env_id(env_id: str) -> EnvId:
    """The parts of ``env_id``; an id Gymnasium would refuse as malformed is all name (no namespace, no version)."""
    match = ENV_ID_RE.fullmatch(env_id)
    if match is None:
        return EnvId(None, env_id, None)
    version = match.group("version")
    return EnvId(match.group("namespace"), match.group("name"), None if version is None else int(version))


def task_name(env_id: str) -> str:
    """"Hopper-v4" -> "Hopper"; "ns/Hopper-v5" -> "Hopper"."""
    return parse_env_id(env_id).name
