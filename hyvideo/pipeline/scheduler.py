"""Flow-matching Euler sampler, written as arithmetic.

The model predicts the velocity ``v = d latents / d sigma``. With ``s_k = 1 - k/steps``:

    sigma_k   = shift * s_k / (1 + (shift - 1) * s_k)        (time shift; reverse=True)
    sigma_k   = 1 - that                                       (reverse=False)
    t_k       = 1000 * sigma_k                                  (what the DiT receives)
    latents  <- latents + v * (sigma_{k+1} - sigma_k)          (Euler, in float32)

``reverse=True`` (sigma from 1 down to 0) is what the released model needs: the official CLI
defaults ``--flow-reverse`` to off, yet every official script turns it on, and without it the
model produces noise. Here it is on by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def flow_sigmas(steps: int, shift: float = 7.0, reverse: bool = True) -> torch.Tensor:
    """[steps + 1] float32 sigmas, from 1 to 0 when ``reverse``."""
    if steps < 1:
        raise ValueError(f"the number of inference steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"flow shift must be > 0, got {shift}")
    s = torch.linspace(1, 0, steps + 1, dtype=torch.float32)
    sigmas = shift * s / (1 + (shift - 1) * s)
    return sigmas if reverse else 1 - sigmas


@dataclass(frozen=True)
class FlowMatchSchedule:
    """The sigmas of one sampling run and the timesteps the DiT sees."""

    sigmas: torch.Tensor  # [steps + 1] float32

    @classmethod
    def create(cls, steps: int, shift: float = 7.0, reverse: bool = True) -> FlowMatchSchedule:
        return cls(flow_sigmas(steps, shift, reverse))

    @property
    def timesteps(self) -> torch.Tensor:
        """[steps] float32 = sigma_k * 1000 (the DiT's ``t``)."""
        return self.sigmas[:-1] * 1000

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def step(self, k: int, latents: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        """One Euler step from sigma_k to sigma_{k+1}, computed and returned in float32."""
        dt = self.sigmas[k + 1] - self.sigmas[k]
        return latents.float() + velocity.float() * dt.to(latents.device)

    def index_of(self, timestep: float | torch.Tensor) -> int:
        """The step index of a timestep value. Like the reference, when a value occurs twice the
        second occurrence is taken."""
        hits = (self.timesteps == torch.as_tensor(timestep, dtype=torch.float32).cpu()).nonzero()
        if len(hits) == 0:
            raise ValueError(f"timestep {float(timestep)} is not in this schedule")
        return int(hits[1 if len(hits) > 1 else 0])
