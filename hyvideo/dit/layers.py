"""Small building blocks shared by the double-stream, single-stream and refiner blocks.

Attribute names follow the official checkpoint (``linear``, ``fc1``/``fc2``, ``mlp.0``/``mlp.2``,
``in_layer``/``out_layer``, ``linear_1``/``linear_2``) so state dicts load without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm without affine parameters, computed in float32."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, N, C] * (1 + scale[B, C]) + shift[B, C]."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


def gated(residual: torch.Tensor, update: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """residual + gate[B, C] * update [B, N, C]."""
    return torch.addcmul(residual, update, gate.unsqueeze(1))


class RMSNorm(nn.Module):
    """Per-head RMS norm on q and k: normalised in float32, cast back, then scaled."""

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)
        return normed * self.weight


@dataclass
class Mod:
    """One modulation triple: shift and scale for the norm, gate for the residual."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor


class Modulation(nn.Module):
    """``linear(SiLU(vec))`` split into ``n`` (shift, scale, gate) triples (``*_mod.linear``)."""

    def __init__(self, hidden: int, triples: int, device=None, dtype=None):
        super().__init__()
        self.triples = triples
        self.linear = nn.Linear(hidden, 3 * triples * hidden, device=device, dtype=dtype)

    def forward(self, vec: torch.Tensor) -> list[Mod]:
        chunks = self.linear(F.silu(vec)).chunk(3 * self.triples, dim=-1)
        return [Mod(*chunks[3 * i: 3 * i + 3]) for i in range(self.triples)]


class MLP(nn.Module):
    """fc1 -> activation -> fc2 (``*_mlp`` and the refiner's ``mlp``)."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu_tanh", device=None, dtype=None):
        super().__init__()
        self.act = act
        self.fc1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(activation(self.fc1(x), self.act))


def activation(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if kind == "silu":
        return F.silu(x)
    raise ValueError(f"unknown activation {kind!r}")


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] = [cos(t f_i), sin(t f_i)], f_i = max_period^(-i/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid(256) -> Linear -> SiLU -> Linear (``time_in``, ``guidance_in``, refiner ``t_embedder``)."""

    def __init__(self, hidden: int, freq_dim: int = 256, device=None, dtype=None):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden, device=device, dtype=dtype),
            nn.SiLU(),
            nn.Linear(hidden, hidden, device=device, dtype=dtype),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class MLPEmbedder(nn.Module):
    """``vector_in``: Linear -> SiLU -> Linear on the pooled CLIP vector."""

    def __init__(self, in_dim: int, hidden: int, device=None, dtype=None):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden, device=device, dtype=dtype)
        self.out_layer = nn.Linear(hidden, hidden, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class TextProjection(nn.Module):
    """``linear_1`` -> SiLU -> ``linear_2`` (the refiner's ``c_embedder``; ``txt_in`` when linear)."""

    def __init__(self, in_dim: int, hidden: int, device=None, dtype=None):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden, device=device, dtype=dtype)
        self.linear_2 = nn.Linear(hidden, hidden, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """``img_in``: Conv3d with kernel = stride = patch, then tokens t-major, h, w."""

    def __init__(self, patch: tuple[int, int, int], in_ch: int, hidden: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv3d(in_ch, hidden, patch, stride=patch, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C, T, H, W] -> [B, N, hidden]; contiguous, so every block sees one memory layout
        # (compiled blocks would otherwise specialise on the first block's strided view).
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()


class FinalLayer(nn.Module):
    """LayerNorm -> modulate(shift, scale) -> linear to patch pixels.

    The reference builds ``linear`` without the dtype factory kwargs, so it stays float32 in a
    bf16 model; the loader keeps it float32 and its input is cast to match.
    """

    def __init__(self, hidden: int, patch: tuple[int, int, int], out_ch: int, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(hidden, math.prod(patch) * out_ch, device=device, dtype=torch.float32)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden, 2 * hidden, device=device, dtype=dtype)
        )

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=-1)  # official order: shift first
        x = modulate(layer_norm(x), shift, scale)
        return self.linear(x.to(self.linear.weight.dtype))
