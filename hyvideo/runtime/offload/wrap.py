"""Wrapping a pipeline's components for an offload mode (the engines are imported only when
their mode is used)."""

from __future__ import annotations

import torch

from hyvideo.runtime.offload.config import Offload, OffloadConfig


def offload_components(components: dict[str, object], device: torch.device | str,
                       config: OffloadConfig) -> Offload:
    """Wrap ``components`` (``{"text_encoders": ..., "dit": ..., "vae": ...}``) for ``config.mode``."""
    from hyvideo.runtime.offload.modes import ModelOffload, NoOffload, SequentialOffload

    device = torch.device(device)
    if config.mode == "none":
        return NoOffload(components, device)
    if config.mode == "model":
        return ModelOffload(components, device)
    if config.mode == "sequential":
        return SequentialOffload(components, device, pin_memory=config.pin_memory)
    from hyvideo.runtime.offload.block_swap import BlockSwapOffload  # imported only when used

    return BlockSwapOffload(components, device, config.blocks_on_device, pin_memory=config.pin_memory)

