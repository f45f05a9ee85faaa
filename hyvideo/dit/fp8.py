"""Weight-only FP8 for the official ``*_fp8.pt`` checkpoints.

The official FP8 file stores the ``.weight`` of every ``nn.Linear`` inside ``double_blocks`` and
``single_blocks`` as ``float8_e4m3fn``; the companion ``*_fp8_map.pt`` maps each such module name
to a per-tensor float32 scale. The effective weight is ``weight.to(dtype) * scale.to(dtype)``
(under bf16 the scale is rounded to bf16 first, as in the reference). Here that is a Linear
subclass swapped in by :func:`convert_to_fp8`; nothing rebinds ``forward`` from outside.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hyvideo.loading import CheckpointError

FP8_DTYPE = torch.float8_e4m3fn
QUANTIZED_PARENTS = ("double_blocks", "single_blocks")


class FP8Linear(nn.Linear):
    """A Linear whose weight is float8 with one float32 scale (non-persistent ``fp8_scale``)."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FP8Linear:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        device = linear.weight.device
        new.weight = nn.Parameter(
            torch.empty(linear.out_features, linear.in_features, dtype=FP8_DTYPE, device=device),
            requires_grad=False,
        )
        new.bias = linear.bias
        new.register_buffer("fp8_scale", torch.ones((), device=device), persistent=False)
        return new

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight.to(dtype) * self.fp8_scale.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)


def fp8_layer_names(model: nn.Module) -> list[str]:
    """Names of the Linear modules the official FP8 checkpoint quantizes."""
    return [
        name for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(p in name.split(".") for p in QUANTIZED_PARENTS)
    ]


def convert_to_fp8(model: nn.Module) -> list[str]:
    """Swap the quantized Linears of ``model`` for :class:`FP8Linear` in place; return their names."""
    names = fp8_layer_names(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, FP8Linear.from_linear(getattr(parent, child)))
    return names


def set_fp8_scales(model: nn.Module, scales: Mapping[str, torch.Tensor], source: str = "fp8 map") -> None:
    """Set every FP8Linear's scale from the official map (module name -> [] or [1] tensor)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, FP8Linear)}
    missing = sorted(set(layers) - set(scales))
    unexpected = sorted(set(scales) - set(layers))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the FP8 layers: {len(missing)} missing "
            f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}"
        )
    for name, layer in layers.items():
        scale = scales[name]
        if scale.numel() != 1:
            raise CheckpointError(f"{source}: scale of {name} has shape {tuple(scale.shape)}, expected [] or [1]")
        layer.fp8_scale = scale.reshape(()).to(device=layer.weight.device, dtype=torch.float32)
