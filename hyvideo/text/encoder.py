"""Both text encoders together: the text conditioning the pipeline consumes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from hyvideo.text.conditioning import TextConditioning
from hyvideo.text.clip import CLIPTextEncoder, load_clip_encoder
from hyvideo.text.llm import LLMTextEncoder, load_llm_encoder

__all__ = ["TextConditioning", "TextEncoders", "load_text_encoders", "text_conditioning"]


def text_conditioning(
    prompts: list[str],
    encode_states: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    clip: CLIPTextEncoder,
) -> TextConditioning:
    """The DiT's conditioning of ``prompts``, each stripped of surrounding whitespace first (as
    ``inference.py`` does): ``encode_states(prompts)`` gives the states [B, L, D] and mask [B, L]
    (LLM or LLaVA), CLIP the pooled [B, D2], moved to the states' device."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a string")
    prompts = [p.strip() for p in prompts]
    states, mask = encode_states(prompts)
    pooled, _ = clip.encode(prompts)  # [B, D2]; its token mask is unused downstream
    return TextConditioning(states, mask, pooled.to(states.device))


class TextEncoders:
    """The LLM encoder (``text_encoder``) and the CLIP encoder (``text_encoder_2``)."""

    def __init__(self, llm: LLMTextEncoder, clip: CLIPTextEncoder) -> None:
        self.llm, self.clip = llm, clip

    def encode(self, prompts: list[str], *, num_frames: int) -> TextConditioning:
        """Encode ``prompts`` for a video of ``num_frames`` frames (1 = image template).

        Each prompt is stripped of surrounding whitespace first, as ``inference.py`` does.
        Outputs stay on each encoder's device and dtype; ``TextConditioning.to`` moves them.
        """
        return text_conditioning(
            prompts, lambda stripped: self.llm.encode(stripped, num_frames=num_frames), self.clip
        )


def load_text_encoders(
    text_encoder: str | Path,
    text_encoder_2: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    dtype_2: torch.dtype | None = None,
    device: torch.device | str | None = None,
    text_len: int = 256,
    hidden_state_skip_layer: int = 2,
    apply_final_norm: bool = False,
    text_len_2: int = 77,
) -> TextEncoders:
    """Load ``ckpts/text_encoder`` and ``ckpts/text_encoder_2``.

    Args:
        dtype: precision of the LLM (``--text-encoder-precision``, float16 by default).
        dtype_2: precision of CLIP (``--text-encoder-precision-2``); default: ``dtype``.
    """
    llm = load_llm_encoder(
        text_encoder,
        dtype=dtype,
        device=device,
        text_len=text_len,
        hidden_state_skip_layer=hidden_state_skip_layer,
        apply_final_norm=apply_final_norm,
    )
    clip = load_clip_encoder(
        text_encoder_2, dtype=dtype_2 or dtype, device=device, max_length=text_len_2
    )
    return TextEncoders(llm, clip)
