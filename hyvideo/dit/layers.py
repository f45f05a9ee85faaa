"""Small building blocks shared by the double-stream, single-stream and refiner blocks.

Attribute names follow the official checkpoint (``linear``, ``fc1``/``fc2``, ``mlp.0``/``mlp.2``,
``in_layer``/``out_layer``, ``linear_1``/``linear_2``) so state dicts load without renaming.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm(x: torch.Tensor, eps: float = 1e-6, *, autocast: torch.dtype | None = None) -> torch.Tensor:
    """LayerNorm without affine parameters.

    ``autocast`` (the official placement, :meth:`~hyvideo.dit.model.HYVideoDiffusionTransformer.set_autocast`):
    CUDA autocast runs layer_norm in float32 and returns float32, so ``modulate`` then computes in
    float32 too. Without it (``--disable-autocast``, or a float32 model) the norm runs in x's
    dtype, as the reference's ``nn.LayerNorm`` does without autocast.
    """
    return F.layer_norm(x.float() if autocast is not None else x, x.shape[-1:], eps=eps)


def lowered(x: torch.Tensor, autocast: torch.dtype | None) -> torch.Tensor:
    """``x`` as CUDA autocast hands it to a linear: in the autocast dtype (unchanged without)."""
    return x if autocast is None or x.dtype == autocast else x.to(autocast)


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


# The 128 frequencies of the 256-dim timestep embedding, f_i = 10000^(-i/128). The reference
# computes them with torch.exp in float32 on the CPU, whose last bit depends on the machine's vector
# math library; through 50 guided steps (guidance reaches the embedding as 6000) a 1-ulp difference
# grows to the size of the conformance tolerance. So the tables are fixed, the same on every
# machine and device: the values of the reference runs of the two releases. The text-to-video
# run's table (as big-endian float32 words); the image-to-video run's exp rounded two entries the
# other way (12 one ulp up, 13 one ulp down). A correctly rounded exp differs from both.
_T2V_FREQS_HEX = (
    "3f8000003f6e39f83f5dafd63f4e4bac3f3ff9113f32a5063f263de03f1ab32b3f0ff59a3f05f6ee3ef953ce3ee80460"
    "3ed7e89a3ec8eb243ebaf81b3eadfcff3ea1e89b3e96aaea3e8c35033e8279083e72d4223e61f8363e5247ed3e43ae7c"
    "3e3618873e2974093e1db03f3e12bd903e088d773dfe24df3dec7fd53ddc14643dcccccc3dbe94c73db159783da50957"
    "3d99940d3d8eea6c3d84fe4c3d7785113d6655c13d5657e33d4776403d399d183d2cba163d20bc1b3d1593483d0b30cb"
    "3d0186e23cf111773ce054d13cd0c1a83cc2434e3cb4c6913ca839893c9c8b963c91ad393c8790093c7c4d303c6ac8e6"
    "3c5a7bf13c4b50b53c3d330e3c3010503c23d70a3c1877063c0de12e3c0407773bf5b9ad3be4aa453bd4ca153bc6040a"
    "3bb8449a3bab79823b9f91cc3b947daf3b8a2e753b80967c3b6f520d3b5eb47a3b4f3e333b40dac23b33770d3b270153"
    "3b1b690d3b109ed83b06946d3afa78f03ae915283ad8e6753ac9d7593abbd3eb3aaec98e3aa2a6f73a975c0b3a8cd9d9"
    "3a83126e3a73f1a23a6301e33a533f243a44948a3a36ee9d3a2a3b443a1e69a23a136a143a092e0139ff4fac39ed95e4"
    "39dd172139cdbd9339bf74d639b229fb39a5cb61399a48a0398f927539859aa43978a80d3967648c395753e2394860c0"
    "393a7753392d852a3921791939164326390bd46d39021f2838f22cdd38e15c8e"
)
_I2V_ULP_CHANGES = {12: 1, 13: -1}


@functools.cache
def reference_frequencies(table: str = "t2v") -> torch.Tensor:
    """[128] float32 on the CPU: the ``t2v`` or ``i2v`` reference run's frequency table."""
    words = [int(_T2V_FREQS_HEX[i:i + 8], 16) for i in range(0, len(_T2V_FREQS_HEX), 8)]
    if table == "i2v":
        words = [w + _I2V_ULP_CHANGES.get(i, 0) for i, w in enumerate(words)]  # positive floats: +1 word = +1 ulp
    elif table != "t2v":
        raise ValueError(f"unknown frequency table {table!r}; use t2v or i2v")
    return torch.tensor(words, dtype=torch.int64).to(torch.int32).view(torch.float32)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0,
                       table: str = "t2v") -> torch.Tensor:
    """Sinusoidal embedding [B, dim] = [cos(t f_i), sin(t f_i)], f_i = max_period^(-i/(dim/2))
    (the official 256/10000 embedding takes the reference run's ``table``)."""
    half = dim // 2
    if (half, max_period) == (128, 10000.0):
        freqs = reference_frequencies(table).to(t.device)
    else:
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid(256) -> Linear -> SiLU -> Linear (``time_in``, ``guidance_in``, refiner ``t_embedder``)."""

    def __init__(self, hidden: int, freq_dim: int = 256, device=None, dtype=None, table: str = "t2v"):
        super().__init__()
        self.freq_dim = freq_dim
        self.table = table  # which reference run's frequency table (see reference_frequencies)
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden, device=device, dtype=dtype),
            nn.SiLU(),
            nn.Linear(hidden, hidden, device=device, dtype=dtype),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim, table=self.table).to(self.mlp[0].weight.dtype))


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
    bf16 model; the loader keeps it float32. Under the official autocast placement it computes in
    bf16 (autocast casts the weight); without autocast its input is cast up to float32.
    """

    autocast: torch.dtype | None = None  # the official placement (HYVideoDiffusionTransformer.set_autocast)

    def __init__(self, hidden: int, patch: tuple[int, int, int], out_ch: int, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(hidden, math.prod(patch) * out_ch, device=device, dtype=torch.float32)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden, 2 * hidden, device=device, dtype=dtype)
        )

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=-1)  # official order: shift first
        x = modulate(layer_norm(x, autocast=self.autocast), shift, scale)  # float32 under autocast
        if self.autocast is not None:  # autocast runs the linear in bf16, its float32 weight cast too
            w, b = self.linear.weight, self.linear.bias
            return F.linear(x.to(self.autocast), w.to(self.autocast), None if b is None else b.to(self.autocast))
        return self.linear(x.to(self.linear.weight.dtype))
