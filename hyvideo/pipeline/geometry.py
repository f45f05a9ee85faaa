"""The one owner of a model's geometry: pixels -> latents -> tokens, and what is valid.

The VAE compresses time by ``time_compression_ratio`` (a causal VAE keeps frame 0, so a video has
``ratio * n + 1`` frames) and space by ``spatial_compression_ratio``; the DiT cuts the latent into
``patch_size`` patches and has ``heads`` attention heads. Every rule about sizes, frame counts
and sequence-parallel degrees follows from these four facts, so the request check, the CLI, the
web demo's limits and the parallel split all ask this class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hyvideo.pipeline.types import GenerationRequest, UsageError

# The official resolution presets (height, width), all at 129 frames; named by width:height.
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "540p-16:9": (544, 960), "540p-9:16": (960, 544), "540p-4:3": (624, 832),
    "540p-3:4": (832, 624), "540p-1:1": (720, 720),
    "720p-16:9": (720, 1280), "720p-9:16": (1280, 720), "720p-4:3": (832, 1104),
    "720p-3:4": (1104, 832), "720p-1:1": (960, 960),
}


@dataclass(frozen=True)
class Geometry:
    """Compression of the VAE and patching of the DiT (from the variant's configs)."""

    time_compression_ratio: int = 4
    spatial_compression_ratio: int = 8
    patch_size: tuple[int, int, int] = (1, 2, 2)
    heads: int = 24

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (one latent patch)."""
        return self.spatial_compression_ratio * max(self.patch_size[1:])

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Pixels (frames, height, width) -> latent (T, H, W)."""
        s = self.spatial_compression_ratio
        return (num_frames - 1) // self.time_compression_ratio + 1, height // s, width // s

    def token_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Pixels -> the DiT's token grid (T', H', W') = latent / patch."""
        latent = self.latent_shape(num_frames, height, width)
        return tuple(n // p for n, p in zip(latent, self.patch_size))

    def num_tokens(self, num_frames: int, height: int, width: int) -> int:
        return math.prod(self.token_grid(num_frames, height, width))

    def check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if value < m or value % m:
                low = max(m, value // m * m)
                fix = f"{low} or {low + m}" if low != value else str(value)
                raise UsageError(f"{name} {value} is not a positive multiple of {m}; use {fix}", name)

    def check_frames(self, num_frames: int) -> None:
        r = self.time_compression_ratio
        if num_frames < 1 or (num_frames - 1) % r:
            low = max(1, (num_frames - 1) // r * r + 1)
            raise UsageError(f"video length {num_frames} is not {r}n+1; use {low} or {low + r}",
                             "video_length")

    def check_request(self, request: GenerationRequest) -> None:
        """Raise :class:`UsageError` unless the model can make ``request``'s size and length."""
        self.check_size(request.height, request.width)
        self.check_frames(request.video_length)

    def valid_frames(self, at_most: int) -> int:
        """The longest valid frame count <= ``at_most`` (at least 1)."""
        return max(1, (at_most - 1) // self.time_compression_ratio * self.time_compression_ratio + 1)

    def valid_degrees(self, num_tokens: int, limit: int = 64) -> list[tuple[int, int]]:
        """(ulysses, ring) pairs that split ``num_tokens`` evenly and the heads for Ulysses."""
        return [(u, r) for u in range(1, limit + 1) for r in range(1, limit // u + 1)
                if self.heads % u == 0 and num_tokens % (u * r) == 0]
