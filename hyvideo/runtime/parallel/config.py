"""Parallel layouts: the degrees, and whether they can split a size (checked before any load)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hyvideo.pipeline.geometry import Geometry


class ParallelError(ValueError):
    """Degrees that cannot run for this size or world; the message lists the valid ones."""


@dataclass(frozen=True)
class ParallelConfig:
    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_degree: int = 1  # 2: the negative and positive branches run on two rank groups

    @property
    def sp_degree(self) -> int:
        return self.ulysses_degree * self.ring_degree

    @property
    def world_size(self) -> int:
        return self.sp_degree * self.cfg_degree


def check_degrees(cfg: ParallelConfig, *, world_size: int, geometry: Geometry,
                  video_length: int, height: int, width: int) -> None:
    """Raise :class:`ParallelError` (before any model loads) unless the degrees can split this
    size over ``world_size`` processes."""
    token_grid = geometry.token_grid(video_length, height, width)
    n, heads = math.prod(token_grid), geometry.heads
    if cfg.ulysses_degree < 1 or cfg.ring_degree < 1:
        raise ParallelError("--ulysses-degree and --ring-degree must be >= 1")
    if cfg.world_size != world_size:
        raise ParallelError(
            f"ulysses {cfg.ulysses_degree} x ring {cfg.ring_degree}"
            f"{' x cfg 2' if cfg.cfg_degree == 2 else ''} = {cfg.world_size} processes, but "
            f"{world_size} were started; launch with torchrun --nproc_per_node={cfg.world_size}")
    if heads % cfg.ulysses_degree or n % cfg.sp_degree:
        pairs = [f"{u}x{r}" for u, r in geometry.valid_degrees(n, limit=max(8, cfg.sp_degree))
                 if u * r == cfg.sp_degree] or ["none"]
        raise ParallelError(
            f"ulysses {cfg.ulysses_degree} x ring {cfg.ring_degree} cannot split this size "
            f"({n} image tokens = {'x'.join(map(str, token_grid))}, {heads} heads): ulysses must "
            f"divide the heads and ulysses*ring the tokens; valid ulysses x ring for "
            f"{cfg.sp_degree} processes: {', '.join(pairs)}")
