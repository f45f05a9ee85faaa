"""Spatial and temporal tiling of VAE encode/decode, blended exactly as the reference does.

The functions here are generic: they cut an input into overlapping tiles, run ``fn`` on each
tile (the encoder, the decoder, or a spatially tiled version of either) and blend neighbours
linearly. The reference's quirks are reproduced on purpose, because the released pipeline's
videos depend on them:

* Blending writes into the tile *in place*, so a tile is blended with its upper and left
  neighbours *after* their own blending (row-major order).
* The spatial result is the concatenation of the kept parts, with no final crop.
* Temporal tiles hold ``tile + 1`` frames (latents); every tile but the first drops its first
  output frame, and the first tile keeps ``keep + 1`` frames.
* Trailing temporal tiles that are empty after the drop are still run (the output is the same).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TilingConfig:
    """Tile sizes in *pixel* space and the overlap factor.

    ``sample_size`` (S) is the spatial tile in pixels, ``sample_tsize`` (Ts) the temporal tile in
    frames; the latent tile sizes follow from the model (``VAEConfig``). ``overlap`` is the
    reference's ``tile_overlap_factor`` (0.25 there, hard-coded).
    """

    sample_size: int
    sample_tsize: int
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.sample_size < 8 or self.sample_tsize < 4:
            raise ValueError(f"tiles too small: sample_size {self.sample_size} (>= 8 px) and "
                             f"sample_tsize {self.sample_tsize} (>= 4 frames) are required")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {self.overlap}")


@dataclass(frozen=True)
class TilePlan:
    """One axis of tiling: input tiles of ``size`` every ``stride``; ``blend`` output elements
    are cross-faded with the previous tile; ``keep`` output elements are kept per tile."""

    size: int
    stride: int
    blend: int
    keep: int

    @classmethod
    def make(cls, in_size: int, out_size: int, overlap: float) -> TilePlan:
        """The reference's arithmetic: stride = int(in*(1-f)), blend = int(out*f)."""
        blend = int(out_size * overlap)
        return cls(in_size, max(1, int(in_size * (1 - overlap))), blend, out_size - blend)


def _fade(length: int, like: torch.Tensor) -> torch.Tensor:
    # Weights y/e for y < e, computed in float64 like the reference's Python floats.
    return (torch.arange(length, dtype=torch.float64) / length).to(like.device, like.dtype)


def blend_(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """In place: ``b[y] = a[-e+y]*(1-y/e) + b[y]*(y/e)`` for y < e along ``dim``,
    e = min(a.size(dim), b.size(dim), extent). Returns ``b``."""
    e = min(a.shape[dim], b.shape[dim], extent)
    if e <= 0:
        return b
    shape = [1] * b.dim()
    shape[dim] = e
    w = _fade(e, b).view(shape)
    head = b.narrow(dim, 0, e)
    tail = a.narrow(dim, a.shape[dim] - e, e)
    head.copy_(torch.lerp(tail, head, w))  # tail*(1-w) + head*w
    return b


def spatial_tiled(x: torch.Tensor, fn: TileFn, plan: TilePlan) -> torch.Tensor:
    """Run ``fn`` on overlapping H x W tiles of ``x`` [B,C,T,H,W] and blend the outputs.

    Tiles are ``x[..., i:i+size, j:j+size]`` for i, j in range(0, H or W, stride); edge tiles
    may be smaller. Returns the concatenated kept parts [B,C',T',~H',~W'] (no crop).
    """
    height, width = x.shape[-2:]
    rows = [
        [fn(x[..., i:i + plan.size, j:j + plan.size]) for j in range(0, width, plan.stride)]
        for i in range(0, height, plan.stride)
    ]
    out_rows = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                blend_(rows[i - 1][j], tile, plan.blend, dim=-2)  # above, already blended
            if j > 0:
                blend_(row[j - 1], tile, plan.blend, dim=-1)  # left, already blended
            kept.append(tile[..., :plan.keep, :plan.keep])
        out_rows.append(torch.cat(kept, dim=-1))
    return torch.cat(out_rows, dim=-2)


def temporal_tiled(x: torch.Tensor, fn: TileFn, plan: TilePlan) -> torch.Tensor:
    """Run ``fn`` on overlapping time tiles of ``x`` [B,C,T,H,W] and blend the outputs.

    Tiles are ``x[:, :, i:i+size+1]`` (size + 1 frames, so each tile starts with the frame its
    causal first output is tied to) for i in range(0, T, stride). Tiles after the first drop
    their first output frame; the first keeps keep + 1 frames, the others keep frames.
    """
    outputs = []
    for n, i in enumerate(range(0, x.shape[2], plan.stride)):
        out = fn(x[:, :, i:i + plan.size + 1])
        outputs.append(out if n == 0 else out[:, :, 1:])
    kept = [outputs[0][:, :, :plan.keep + 1]]
    for n in range(1, len(outputs)):
        blend_(outputs[n - 1], outputs[n], plan.blend, dim=2)
        kept.append(outputs[n][:, :, :plan.keep])
    return torch.cat(kept, dim=2)
