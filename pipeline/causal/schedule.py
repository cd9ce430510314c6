"""The causal recipe's noise schedule: a flow-matching table of 1000 training timesteps warped by a shift, a few
denoising timesteps picked from it, and the two updates of a step (x0 from the flow prediction, re-noising to the
next timestep with fresh noise).

The arithmetic follows the published recipe (Self-Forcing's FlowMatchScheduler with sigma_min 0 and one extra step,
its `warp_denoising_step`, and its conversion of a flow prediction to x0), and the precision does too: the table
in float32, the x0 conversion in float64 (tests/test_causal.py compares the whole engine with the original code).
"""
from __future__ import annotations

import torch

TRAIN_TIMESTEPS = 1000


class FlowTable:
    """sigmas[i] and timesteps[i] = 1000 sigmas[i] for i in 0..999, sigma from 1 down to 0.001 before the shift."""

    def __init__(self, shift: float):
        if not shift > 0:
            raise ValueError(f"the flow shift must be > 0, got {shift}")
        raw = torch.linspace(1.0, 0.0, TRAIN_TIMESTEPS + 1)[:-1]  # float32, as the recipe's table
        self.sigmas = shift * raw / (1 + (shift - 1) * raw)
        self.timesteps = self.sigmas * TRAIN_TIMESTEPS

    def denoising_timesteps(self, steps: int) -> torch.Tensor:
        """The `steps` timesteps a block is denoised at: 1000, 1000 - 1000/steps, ... before warping, each warped
        through the table (4 steps at shift 5: 1000, 937.5, 833.3, 625)."""
        if not 1 <= steps <= TRAIN_TIMESTEPS:
            raise ValueError(f"steps must be in 1..{TRAIN_TIMESTEPS}, got {steps}")
        raw = [TRAIN_TIMESTEPS - k * TRAIN_TIMESTEPS // steps for k in range(steps)]
        return self.timesteps[torch.tensor([TRAIN_TIMESTEPS - r for r in raw])]

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """The sigma of the table entry nearest to `timestep` (a 0-d or 1-d tensor)."""
        t = timestep.reshape(-1).to(self.timesteps.dtype)
        idx = torch.argmin((self.timesteps.unsqueeze(0) - t.unsqueeze(1)).abs(), dim=1)
        return self.sigmas[idx].reshape(timestep.shape)

    def to_x0(self, flow: torch.Tensor, xt: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """x0 = x_t - sigma_t v, in float64, returned in flow's dtype."""
        sigma = self.sigma(timestep).double()
        return (xt.double() - sigma * flow.double()).to(flow.dtype)

    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """(1 - sigma) x0 + sigma noise at `timestep`, in noise's dtype."""
        sigma = self.sigma(timestep).to(noise.dtype)
        return ((1 - sigma) * x0 + sigma * noise).type_as(noise)
