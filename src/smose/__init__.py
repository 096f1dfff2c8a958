"""SMOSE: Sparse Mixture of Shallow Experts, interpretable controllers trained with Soft Actor-Critic."""

__version__ = "0.1.0"

from smose.api import SMOSE  # noqa: E402
from smose.errors import SmoseError  # noqa: E402

__all__ = ["SMOSE", "SmoseError", "__version__"]
