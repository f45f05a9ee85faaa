"""``VAEConfig``: the official ``vae/config.json`` as a frozen dataclass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DOWN_BLOCK = "DownEncoderBlockCausal3D"
UP_BLOCK = "UpDecoderBlockCausal3D"
# diffusers' AutoencoderKLHunyuanVideo has the same weights (identical keys) under other config
# names; its config.json is accepted too.
DIFFUSERS_NAMES = {"temporal_compression_ratio": "time_compression_ratio",
                   "HunyuanVideoDownBlock3D": DOWN_BLOCK, "HunyuanVideoUpBlock3D": UP_BLOCK}


@dataclass(frozen=True)
class VAEConfig:
    """Hyperparameters of ``AutoencoderKLCausal3D`` under their official ``config.json`` names.

    The model dimensions (``block_out_channels``, ``layers_per_block``, ``latent_channels``,
    ``norm_num_groups``) have no defaults. Keys the released ``config.json`` leaves out take the
    reference class defaults. ``sample_size`` / ``sample_tsize`` only set the default tile sizes.
    """

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    latent_channels: int
    norm_num_groups: int
    in_channels: int = 3
    out_channels: int = 3
    act_fn: str = "silu"
    down_block_types: tuple[str, ...] = ()  # () = DownEncoderBlockCausal3D per width
    up_block_types: tuple[str, ...] = ()  # () = UpDecoderBlockCausal3D per width
    sample_size: int = 256
    sample_tsize: int = 64
    scaling_factor: float = 0.476986
    time_compression_ratio: int = 4
    spatial_compression_ratio: int = 8
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        set_ = object.__setattr__  # frozen: normalise lists from JSON into tuples once
        set_(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        for name, default in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
            types = tuple(DIFFUSERS_NAMES.get(t, t) for t in getattr(self, name))
            set_(self, name, types or (default,) * n)
        problems = []
        if n < 1:
            problems.append("block_out_channels is empty")
        if set(self.down_block_types) != {DOWN_BLOCK} or len(self.down_block_types) != n:
            problems.append(f"down_block_types must be {n} x {DOWN_BLOCK}")
        if set(self.up_block_types) != {UP_BLOCK} or len(self.up_block_types) != n:
            problems.append(f"up_block_types must be {n} x {UP_BLOCK}")
        if self.act_fn not in ("silu", "swish"):
            problems.append(f"act_fn {self.act_fn!r} is not supported (only silu)")
        if self.time_compression_ratio != 4:
            problems.append("only time_compression_ratio 4 is supported (as in the reference)")
        spatial_layers = math.log2(self.spatial_compression_ratio)
        if not spatial_layers.is_integer() or spatial_layers > n:
            problems.append(f"spatial_compression_ratio {self.spatial_compression_ratio} needs "
                            f"a power of two <= 2**{n}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            problems.append(f"norm_num_groups {self.norm_num_groups} must divide every width")
        if problems:
            raise ValueError("invalid VAE config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VAEConfig:
        """Build from official ``config.json`` keys (diffusers' names also accepted); other keys
        (``_class_name``, ``_diffusers_version``, ``force_upcast`` ...) are ignored."""
        names = {f.name for f in fields(cls)}
        data = {DIFFUSERS_NAMES.get(k, k): v for k, v in data.items()}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> VAEConfig:
        from hyvideo.checkpoints.reading import read_json

        return cls.from_dict(read_json(Path(path), "the VAE folder's config.json, as released"))

    @property
    def num_blocks(self) -> int:
        return len(self.block_out_channels)

    def downsample_strides(self) -> list[tuple[int, int, int] | None]:
        """(t, h, w) stride of each encoder block's downsampler, None for no downsampler.

        Spatial halvings go in the first log2(spatial ratio) blocks, the two time halvings in
        the blocks just before the last: for 4 blocks (1,2,2), (2,2,2), (2,2,2), None.
        """
        n = self.num_blocks
        spatial = int(math.log2(self.spatial_compression_ratio))
        time = int(math.log2(self.time_compression_ratio))
        strides: list[tuple[int, int, int] | None] = []
        for i in range(n):
            s = 2 if i < spatial else 1
            t = 2 if (n - 1 - time) <= i < n - 1 else 1
            strides.append((t, s, s) if (s, t) != (1, 1) else None)
        return strides


def vae_config_to_diffusers(config: VAEConfig) -> dict[str, object]:
    """Our (official) VAE config -> ``AutoencoderKLHunyuanVideo`` keyword arguments: the official
    names and block types renamed back through :data:`DIFFUSERS_NAMES`."""
    theirs = {official: diffusers for diffusers, official in DIFFUSERS_NAMES.items()}
    return {
        "in_channels": config.in_channels, "out_channels": config.out_channels,
        "latent_channels": config.latent_channels,
        "down_block_types": [theirs[t] for t in config.down_block_types],
        "up_block_types": [theirs[t] for t in config.up_block_types],
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block, "act_fn": "silu",
        "norm_num_groups": config.norm_num_groups, "scaling_factor": config.scaling_factor,
        "spatial_compression_ratio": config.spatial_compression_ratio,
        theirs["time_compression_ratio"]: config.time_compression_ratio,
        "mid_block_add_attention": config.mid_block_add_attention,
    }
