"""The text conditioning the denoising loop consumes (no model imports: cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextConditioning:
    """What the DiT is conditioned on for a batch of prompts.

    Attributes:
        states: LLM hidden states [B, L, D] (L = text_len, or 315 for the 1-frame image template).
        mask: LLM token mask [B, L] int64, 1 = prompt token (valid tokens first).
        pooled: CLIP pooled embedding [B, D2] (the reference's ``text_states_2``).
    """

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.states.shape[0]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TextConditioning:
        """Move to ``device``; cast the floating tensors (not the mask) to ``dtype``."""
        return TextConditioning(
            self.states.to(device=device, dtype=dtype),
            self.mask.to(device=device),
            self.pooled.to(device=device, dtype=dtype),
        )
