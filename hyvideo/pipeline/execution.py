"""How a pipeline's stages run: the small interface between the story and the runtime options.

The pipeline asks an :class:`Execution` five things and knows nothing else about offloading or
parallelism: keep a component on the device for a stage (``stage``), share the text conditioning
computed by the main process (``share_text``), evaluate the DiT on a batch (``predict``), decode
the latents (``decode``), and whether this process writes the outputs (``is_main``). This module's
:class:`Execution` is one process with every component where it was loaded;
:mod:`hyvideo.runtime` composes offloading and sequence/CFG parallelism behind the same methods.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from hyvideo.pipeline.denoise import StepCache, call_dit
from hyvideo.text.conditioning import TextConditioning


class Execution:
    """One process; components stay where they were loaded."""

    is_main = True

    def stage(self, component: str) -> AbstractContextManager:
        """Context in which ``component`` (``text_encoders``, ``dit``, ``vae``) is usable."""
        return nullcontext()

    def share_text(self, cond: TextConditioning | None, device: torch.device) -> TextConditioning:
        """The conditioning computed by the main process (the only one with text encoders)."""
        return cond

    def predict(self, dit, x, t, states, mask, pooled, guidance, *, cfg_pair: bool = False,
                step_cache: StepCache | None = None, **dit_kwargs) -> torch.Tensor:
        """The DiT on a batch (``cfg_pair``: [negative; positive] rows)."""
        return call_dit(dit, x, t, states, mask, pooled, guidance, step_cache=step_cache, **dit_kwargs)

    def decode(self, vae, z: torch.Tensor, tiling: bool) -> torch.Tensor | None:
        """Latents [1, C, T, H, W] (already / scaling_factor) -> pixels in [-1, 1], or None on
        processes that do not hold the result."""
        return vae.decode(z, tiling=tiling)

    def close(self) -> None:
        """Release what the execution holds (offload hooks, pinned memory)."""
