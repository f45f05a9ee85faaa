"""Building blocks of the causal 3D VAE: causal convolution, resnet, up/down samplers, mid block.

Attribute names follow the official ``AutoencoderKLCausal3D`` exactly (``conv1.conv.weight``,
``downsamplers.0.conv.conv.weight``, ``attentions.0.to_out.0.weight`` ...), so the official
``vae/pytorch_model.pt`` loads strictly with no renaming.

Layout everywhere: ``[B, C, T, H, W]`` (channels first, then time, height, width).

Causality: every convolution pads time in front only and the mid-block attention is
frame-causal, but ``nn.GroupNorm`` (as in the reference) takes its statistics over all frames,
so a later frame still shifts earlier outputs slightly through the normalisation. We reproduce
that; the tests check exact causality of everything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]

GROUP_NORM_EPS = 1e-6  # the reference uses 1e-6 in every GroupNorm of the VAE


def _triple(value: int | Triple) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    return tuple(value)  # type: ignore[return-value]


class CausalConv3d(nn.Module):
    """``nn.Conv3d`` after replicate padding: H and W by k//2 on both sides, T by k-1 in front.

    Padding time in front only makes output frame t depend on input frames <= t (with stride s
    in time, output t depends on inputs <= s*t). Replicate (not zero) padding is the official
    choice; the weight lives at ``<name>.conv.weight``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Triple = 3,
                 stride: int | Triple = 1, bias: bool = True) -> None:
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        # F.pad order is last dim first: (W left, W right, H top, H bottom, T front, T back).
        self.padding = (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0)
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), _triple(stride), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = F.pad(x, self.padding, mode="replicate")  # [B,C,T+kt-1,H+2(kh//2),W+2(kw//2)]
        return self.conv(x)


class ResnetBlockCausal3D(nn.Module):
    """``norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2`` plus a (1x1x1 when widths differ)
    shortcut. The reference's dropout has no parameters and is the identity at inference."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=GROUP_NORM_EPS)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=GROUP_NORM_EPS)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.conv_shortcut = (
            CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B,Cin,T,H,W] -> [B,Cout,T,H,W]. The norms return fresh tensors, so SiLU can run in
        # place; conv2's output is fresh too, so the residual is added into it.
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return h.add_(shortcut)  # the reference divides by output_scale_factor = 1


class DownsampleCausal3D(nn.Module):
    """A strided causal conv (kernel 3). Stride (2,2,2) maps T = 2n+1 -> n+1, H -> H/2."""

    def __init__(self, channels: int, stride: Triple) -> None:
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UpsampleCausal3D(nn.Module):
    """Nearest upsampling that keeps frame 0 single, then a causal conv (kernel 3).

    Official quirk reproduced: frame 0 is upsampled in H and W only; frames 1.. are repeated
    ``factor`` times in T too, so T goes n -> 1 + ft*(n-1) and pixel frame 0 stays tied to
    latent frame 0.
    """

    def __init__(self, channels: int, factor: Triple) -> None:
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fh, fw = self.factor
        num_frames = x.shape[2]
        if ft > 1 and num_frames > 1:
            # Frame index map [0, 1,1, 2,2, ...]: one gather instead of split + interpolate + cat.
            index = torch.arange(num_frames, device=x.device).repeat_interleave(ft)[ft - 1:]
            x = x.index_select(2, index)  # [B,C,1+ft*(T-1),H,W]
        if fh > 1 or fw > 1:
            x = F.interpolate(x, scale_factor=(1, fh, fw), mode="nearest")  # [B,C,T',fh*H,fw*W]
        return self.conv(x)


class CausalSelfAttention(nn.Module):
    """Single-head self-attention over all (t, h, w) tokens with a frame-causal mask.

    Head dim = channels, scale 1/sqrt(C), GroupNorm first, q/k/v/out Linear with bias, residual
    added. A token of frame t attends to every token of frames <= t.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # key: to_out.0.*

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # [B,N,C], N = T*H*W, t-major
        q, k, v = (proj(tokens).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))
        mask = frame_causal_mask(t, h * w, x.device)  # [N,N] bool, shared by batch and head
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B,1,N,C]
        out = self.to_out[0](out.squeeze(1))  # [B,N,C]
        return out.transpose(1, 2).reshape(b, c, t, h, w).add_(x)


def frame_causal_mask(num_frames: int, tokens_per_frame: int, device: torch.device) -> torch.Tensor:
    """Boolean [N, N] mask (True = may attend), N = num_frames * tokens_per_frame:
    query token i sees key j iff frame(j) <= frame(i)."""
    frame = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)  # [N]
    return frame[None, :] <= frame[:, None]


class MidBlockCausal3D(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution (attention optional by config)."""

    def __init__(self, channels: int, groups: int, add_attention: bool) -> None:
        super().__init__()
        # Registered before `resnets` so state-dict order matches the official file.
        self.attentions = nn.ModuleList(
            [CausalSelfAttention(channels, groups)] if add_attention else []
        )
        self.resnets = nn.ModuleList(
            [ResnetBlockCausal3D(channels, channels, groups) for _ in range(2)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class DownEncoderBlockCausal3D(nn.Module):
    """``num_layers`` resnets, then an optional strided downsampler."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int,
                 downsample_stride: Triple | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlockCausal3D(in_channels if i == 0 else out_channels, out_channels, groups)
            for i in range(num_layers)
        )
        self.downsamplers = (
            nn.ModuleList([DownsampleCausal3D(out_channels, downsample_stride)])
            if downsample_stride is not None else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for downsampler in self.downsamplers or ():
            x = downsampler(x)
        return x


class UpDecoderBlockCausal3D(nn.Module):
    """``num_layers`` resnets, then an optional upsampler."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int,
                 upsample_factor: Triple | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlockCausal3D(in_channels if i == 0 else out_channels, out_channels, groups)
            for i in range(num_layers)
        )
        self.upsamplers = (
            nn.ModuleList([UpsampleCausal3D(out_channels, upsample_factor)])
            if upsample_factor is not None else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for upsampler in self.upsamplers or ():
            x = upsampler(x)
        return x
