"""The causal 3D VAE "884-16c-hy" (official ``AutoencoderKLCausal3D``): encoder, decoder, geometry.

Compression: 4x in time (causally: pixel frame 0 <-> latent frame 0, pixel frames 4k-3..4k <->
latent frame k), 8x in height and width, 3 -> 16 channels. A video of T = 4n+1 frames encodes to
n+1 latent frames; a single image (T = 1) encodes to one latent frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hyvideo.vae.blocks import (
    GROUP_NORM_EPS,
    CausalConv3d,
    DownEncoderBlockCausal3D,
    MidBlockCausal3D,
    UpDecoderBlockCausal3D,
)
from hyvideo.vae.config import VAEConfig
from hyvideo.vae.tiling import TilePlan, TilingConfig, spatial_tiled, temporal_tiled

LOGVAR_RANGE = (-30.0, 20.0)  # the reference clamps the posterior log-variance to this range


class EncoderCausal3D(nn.Module):
    """[B,3,T,H,W] pixels -> [B,2*latent,T',H/8,W/8] (mean and log-variance, before quant_conv)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = CausalConv3d(config.in_channels, widths[0], 3)
        self.down_blocks = nn.ModuleList(
            DownEncoderBlockCausal3D(widths[max(i - 1, 0)], widths[i], config.layers_per_block,
                                     groups, stride)
            for i, stride in enumerate(config.downsample_strides())
        )
        self.mid_block = MidBlockCausal3D(widths[-1], groups, config.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=GROUP_NORM_EPS)
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # [B,c0,T,H,W]
        for block in self.down_blocks:
            x = block(x)  # ... -> [B,c_last,T',H/8,W/8]
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x), inplace=True))  # [B,2*latent,T',h,w]


class DecoderCausal3D(nn.Module):
    """[B,latent,T',h,w] -> [B,3,4(T'-1)+1,8h,8w]. Up blocks have layers_per_block + 1 resnets."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths, groups = config.block_out_channels[::-1], config.norm_num_groups
        self.conv_in = CausalConv3d(config.latent_channels, widths[0], 3)
        self.up_blocks = nn.ModuleList(
            UpDecoderBlockCausal3D(widths[max(i - 1, 0)], widths[i], config.layers_per_block + 1,
                                   groups, factor)
            for i, factor in enumerate(config.downsample_strides())  # same schedule, mirrored
        )
        self.mid_block = MidBlockCausal3D(widths[0], groups, config.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=GROUP_NORM_EPS)
        self.conv_out = CausalConv3d(widths[-1], config.out_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))  # [B,c_last,T',h,w]
        for block in self.up_blocks:
            x = block(x)  # ... -> [B,c0,T,H,W]
        return self.conv_out(F.silu(self.conv_norm_out(x), inplace=True))  # [B,3,T,H,W]


@dataclass(frozen=True)
class LatentPosterior:
    """Diagonal Gaussian posterior; ``mean``/``logvar`` are [B,latent,T',h,w]."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                            device=self.mean.device)
        return self.mean + self.std * noise


class AutoencoderKLCausal3D(nn.Module):
    """The causal 3D VAE with optional tiling and batch slicing.

    Tiling (``enable_tiling`` or ``tiling=`` per call) follows the reference: temporal tiles when
    the video is longer than one tile, spatial tiles (inside each temporal tile) when it is wider
    or taller than one. Slicing runs one batch item at a time.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = EncoderCausal3D(config)
        self.decoder = DecoderCausal3D(config)
        self.quant_conv = nn.Conv3d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(config.latent_channels, config.latent_channels, 1)
        self.tiling: TilingConfig | None = None
        self.use_slicing = False  # True: encode/decode one batch item at a time (less memory, same result)

    # ---- geometry (the VAE owns it) ----------------------------------------------------------
    @property
    def scaling_factor(self) -> float:
        """Latents are multiplied by this for the DiT and divided by it before decoding."""
        return self.config.scaling_factor

    @property
    def time_compression_ratio(self) -> int:
        return self.config.time_compression_ratio

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.spatial_compression_ratio

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(latent_frames, latent_height, latent_width) for a video; raises a ValueError that
        says what to change when the frame count is not 4n+1 or a size is not a multiple of 8."""
        t, s = self.time_compression_ratio, self.spatial_compression_ratio
        if num_frames < 1 or (num_frames - 1) % t:
            below = max(1, (num_frames - 1) // t * t + 1)
            raise ValueError(
                f"num_frames must be {t}n+1 (1, {t + 1}, {2 * t + 1}, ..., 129), got {num_frames}; "
                f"use {below} or {below + t}"
            )
        if height < s or width < s or height % s or width % s:
            raise ValueError(
                f"height and width must be positive multiples of {s}, got {height}x{width}; "
                f"use {max(s, round(height / s) * s)}x{max(s, round(width / s) * s)}"
            )
        return (num_frames - 1) // t + 1, height // s, width // s

    # ---- switches ---------------------------------------------------------------------------
    @property
    def default_tiling(self) -> TilingConfig:
        """Tiles from the model config (official: sample_size / sample_tsize, overlap 0.25)."""
        return TilingConfig(self.config.sample_size, self.config.sample_tsize)

    def enable_tiling(self, tiling: TilingConfig | None = None) -> None:
        """Tile every later encode/decode (``None``: the config's tile sizes, overlap 0.25)."""
        self.tiling = tiling or self.default_tiling
        self.check_tiling(self.tiling)

    def disable_tiling(self) -> None:
        self.tiling = None

    def _resolve(self, tiling: TilingConfig | bool | None) -> TilingConfig | None:
        if tiling is None:
            tiling = self.tiling
        elif tiling is True:
            tiling = self.tiling or self.default_tiling
        if tiling:
            self.check_tiling(tiling)
        return tiling or None

    def check_tiling(self, tiles: TilingConfig) -> None:
        """Reject tile sizes whose tiles do not line up in pixel and latent space.

        The reference's arithmetic (stride int(in*(1-f)), keep out - int(out*f), no final crop)
        only puts every kept output where it belongs when stride * ratio == keep on each axis, in
        both directions; otherwise it silently returns misaligned, wrongly sized videos. All
        official and conformance geometries satisfy this.
        """
        ls, lt = self.latent_tile_sizes(tiles)
        bad = []
        axes = (("spatial", tiles.sample_size, ls, self.spatial_compression_ratio),
                ("temporal", tiles.sample_tsize, lt, self.time_compression_ratio))
        for axis, big, small, ratio in axes:
            enc = TilePlan.make(big, small, tiles.overlap)  # pixels -> latents
            dec = TilePlan.make(small, big, tiles.overlap)  # latents -> pixels
            if small < 1 or enc.stride != ratio * enc.keep or ratio * dec.stride != dec.keep:
                bad.append(f"{axis} ({big} -> {small}, stride {enc.stride}/{dec.stride}, "
                           f"keep {enc.keep}/{dec.keep})")
        if bad:
            raise ValueError(
                f"tiling {tiles} gives misaligned tiles: {'; '.join(bad)}. Use sizes where "
                f"size*(1-overlap) is a multiple of the compression ratio, e.g. 256 px / 64 "
                f"frames / 0.25 or 128 / 16 / 0.25")

    # ---- encode / decode --------------------------------------------------------------------
    def encode(self, x: torch.Tensor, *, tiling: TilingConfig | bool | None = None
               ) -> LatentPosterior:
        """Pixels [B,3,T,H,W] in [-1,1] (T = 4n+1) -> posterior over [B,16,n+1,H/8,W/8].

        ``tiling``: None uses the model's setting, False disables, True enables (model or default
        tiles), a ``TilingConfig`` overrides.
        """
        if x.dim() != 5:
            raise ValueError(f"expected pixels [B,C,T,H,W], got shape {tuple(x.shape)}")
        self.latent_shape(*x.shape[2:])  # validate geometry
        tiles = self._resolve(tiling)
        items = x.split(1) if self.use_slicing and x.shape[0] > 1 else (x,)
        moments = torch.cat([self._encode_moments(item, tiles) for item in items])
        mean, logvar = moments.chunk(2, dim=1)  # [B,16,T',h,w] each
        return LatentPosterior(mean, logvar.clamp(*LOGVAR_RANGE))

    def decode(self, z: torch.Tensor, *, tiling: TilingConfig | bool | None = None,
               tile_fn=None) -> torch.Tensor:
        """Latents [B,16,T',h,w] (already divided by ``scaling_factor``) -> pixels
        [B,3,4(T'-1)+1,8h,8w], roughly in [-1,1].

        ``tile_fn`` replaces the decoding of each leaf tile (default :meth:`decode_tile`), in
        the order the tiling visits them: the parallel decode uses it to share tiles among
        processes and to blend results decoded elsewhere.
        """
        if z.dim() != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents [B,{self.config.latent_channels},T,H,W], "
                             f"got shape {tuple(z.shape)}")
        tiles = self._resolve(tiling)
        items = z.split(1) if self.use_slicing and z.shape[0] > 1 else (z,)
        return torch.cat([self._decode_pixels(item, tiles, tile_fn or self.decode_tile)
                          for item in items])

    def decode_tile(self, z: torch.Tensor) -> torch.Tensor:
        """Decode one tile (or a whole latent) without tiling: [B,16,T',h,w] -> [B,3,T,H,W]."""
        return self._decode_plain(z)

    def decoded_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The pixel shape :meth:`decode_tile` gives for a latent of ``latent_shape``."""
        b, _, t, h, w = latent_shape
        s = self.spatial_compression_ratio
        return (b, self.config.out_channels, (t - 1) * self.time_compression_ratio + 1, h * s, w * s)

    def tiling_config(self) -> TilingConfig:
        """The tiles in use (``enable_tiling``'s, or the model's defaults)."""
        return self._resolve(True)

    def _encode_plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))  # [B,32,T',h,w]

    def _decode_plain(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))  # [B,3,T,H,W]

    def _encode_moments(self, x: torch.Tensor, tiles: TilingConfig | None) -> torch.Tensor:
        if tiles is None:
            return self._encode_plain(x)
        s, ts = tiles.sample_size, tiles.sample_tsize
        ls, lt = self.latent_tile_sizes(tiles)
        spatial = TilePlan.make(s, ls, tiles.overlap)

        def encode_spatial(v: torch.Tensor) -> torch.Tensor:
            # The reference tests the *tile's* size here: H or W > S -> spatial tiles.
            if v.shape[-1] > s or v.shape[-2] > s:
                return spatial_tiled(v, self._encode_plain, spatial)
            return self._encode_plain(v)

        if x.shape[2] > ts:
            return temporal_tiled(x, encode_spatial, TilePlan.make(ts, lt, tiles.overlap))
        return encode_spatial(x)

    def _decode_pixels(self, z: torch.Tensor, tiles: TilingConfig | None, decode_fn) -> torch.Tensor:
        if tiles is None:
            return decode_fn(z)
        s, ts = tiles.sample_size, tiles.sample_tsize
        ls, lt = self.latent_tile_sizes(tiles)
        spatial = TilePlan.make(ls, s, tiles.overlap)

        def decode_spatial(v: torch.Tensor) -> torch.Tensor:
            if v.shape[-1] > ls or v.shape[-2] > ls:
                return spatial_tiled(v, decode_fn, spatial)
            return decode_fn(v)

        if z.shape[2] > lt:
            return temporal_tiled(z, decode_spatial, TilePlan.make(lt, ts, tiles.overlap))
        return decode_spatial(z)

    def latent_tile_sizes(self, tiles: TilingConfig) -> tuple[int, int]:
        """Latent tile sizes as the reference derives them: spatial S // 2**(blocks-1) (not
        S // spatial ratio; equal for the released 4-block model), temporal Ts // 4."""
        return (tiles.sample_size // 2 ** (self.config.num_blocks - 1),
                tiles.sample_tsize // self.time_compression_ratio)
