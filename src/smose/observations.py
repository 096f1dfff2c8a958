"""What an observation the deterministic policy acts on must be, in numpy alone (the tree router and the exports
check it too): every component finite and within ±OBS_LIMIT.

2^60 ≈ 1.2e18 is exact in float32 and lies far beyond any physical state; the bound keeps the float32 arithmetic of
the library and of exported controllers from overflowing (``smose export`` checks the weights against it). NaN or
inf means a broken sensor or simulation.
"""

from __future__ import annotations

import numpy as np

from smose.errors import SmoseError

OBS_LIMIT_LOG2 = 60
OBS_LIMIT = 2.0**OBS_LIMIT_LOG2


def check_observations(obs) -> None:
    """Raise SmoseError unless every component of the (float32) observations is finite and within ±OBS_LIMIT;
    ``obs`` is a numpy array or a torch tensor."""
    values = obs.detach().cpu().numpy() if hasattr(obs, "detach") else np.asarray(obs)
    valid = np.abs(values) <= OBS_LIMIT  # False for NaN too
    if not valid.all():
        where = np.argwhere(~valid)[0]
        raise SmoseError(f"observation component {int(where[-1])} is {float(values[tuple(where)])!r}: observations "
                         f"must be finite numbers within ±2^{OBS_LIMIT_LOG2} (NaN or inf usually means a broken sensor "
                         "or simulation)")
