"""Model-level CPU offload: each component lives on the CPU and visits the device for its stage.

``--use-cpu-offload`` (the official flag) selects this mode: the text encoders are moved to the
GPU for encoding, then back; the DiT for the denoising loop, then back; the VAE for decoding,
then back. Peak GPU memory is then the largest single component plus its activations instead of
all of them together. Results are identical to running without offload.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _modules(component) -> list[nn.Module]:
    if isinstance(component, nn.Module):
        return [component]
    # The text encoders are a small object holding two models (``llm.model``, ``clip.model``).
    found = []
    for part in vars(component).values():
        if isinstance(part, nn.Module):
            found.append(part)
        elif hasattr(part, "model") and isinstance(part.model, nn.Module):
            found.append(part.model)
    return found


class ModelOffload:
    """Moves named components to ``device`` inside :meth:`use` and back to the CPU after."""

    def __init__(self, components: dict[str, object], device: torch.device):
        self.components = components
        self.device = torch.device(device)
        for name in components:
            self._move(name, torch.device("cpu"))

    def _move(self, name: str, device: torch.device) -> None:
        for module in _modules(self.components[name]):
            module.to(device)

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        self._move(name, self.device)
        try:
            yield
        finally:
            self._move(name, torch.device("cpu"))
            if self.device.type != "cpu":
                torch.accelerator.empty_cache()
