"""SMOSE: Sparse Mixture of Shallow Experts, interpretable controllers trained with Soft Actor-Critic.

``import smose`` stays light (no torch, gymnasium or matplotlib): ``smose.SMOSE`` is imported on first use, so the
command line, the feature names and the tree router start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smose._version import __version__
from smose.errors import SmoseError

if TYPE_CHECKING:
    from smose.api import SMOSE

__all__ = ["SMOSE", "SmoseError", "__version__"]


def __getattr__(name: str) -> Any:  # PEP 562: called only for names not defined above
    if name == "SMOSE":
        from smose.api import SMOSE

        return SMOSE
    raise AttributeError(f"module 'smose' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
