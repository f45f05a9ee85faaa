"""Running the pipeline's stages over several processes: the text broadcast from rank 0, the DiT
with sequence and CFG parallelism, and a tiled VAE decode shared by every rank."""

from __future__ import annotations

import torch
import torch.distributed as dist

from hyvideo import compat
from hyvideo.pipeline.execution import Execution
from hyvideo.runtime.parallel.attention import TokenSplit
from hyvideo.runtime.parallel.groups import ParallelState
from hyvideo.text.conditioning import TextConditioning


def broadcast_tensors(tensors: list[torch.Tensor] | None, src: int = 0, device=None) -> list[torch.Tensor]:
    """Send rank ``src``'s tensors to every rank (shapes and dtypes travel first)."""
    meta = [[(tuple(t.shape), t.dtype) for t in tensors] if dist.get_rank() == src else None]
    dist.broadcast_object_list(meta, src=src)
    out = []
    for i, (shape, dtype) in enumerate(meta[0]):
        t = tensors[i].to(device).contiguous() if dist.get_rank() == src else torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(t, src=src)
        out.append(t)
    return out


def parallel_tiled_decode(vae, z: torch.Tensor, tiling) -> torch.Tensor | None:
    """Tiled decode with the tiles shared round-robin across all ranks; rank 0 blends them
    exactly as the single-device tiled decode does and returns the video (others: None)."""
    inputs: list[torch.Tensor] = []

    def record(tile: torch.Tensor) -> torch.Tensor:  # dry run: learn the tiles and their order
        inputs.append(tile)
        return torch.zeros(vae.decoded_shape(tile.shape), dtype=tile.dtype, device=tile.device)

    vae.decode(z, tiling=tiling, tile_fn=record)
    rank, world = dist.get_rank(), dist.get_world_size()
    results: dict[int, torch.Tensor] = {}
    for i, tile in enumerate(inputs):
        if i % world == rank:
            results[i] = vae.decode_tile(tile)
    for i, tile in enumerate(inputs):  # collect on rank 0
        owner = i % world
        if owner == 0:
            continue
        if rank == owner:
            dist.send(results.pop(i).contiguous(), dst=0)
        elif rank == 0:
            buf = torch.empty(vae.decoded_shape(tile.shape), dtype=z.dtype, device=z.device)
            dist.recv(buf, src=owner)
            results[i] = buf
    if rank != 0:
        return None
    order = iter(range(len(inputs)))
    return vae.decode(z, tiling=tiling, tile_fn=lambda tile: results[next(order)])




class ParallelExecution(Execution):
    """The pipeline's stages over a torchrun world (``offload``: an optional offload wrapper).

    Only rank 0 holds text encoders: their output is broadcast. The DiT keeps each rank's share
    of the image tokens (sequence parallelism, when ulysses x ring > 1) and, with CFG parallelism,
    each CFG group evaluates half of a [negative; positive] batch. The tiled VAE decode shares
    its tiles among all ranks; rank 0 blends them and alone returns the video.
    """

    def __init__(self, state: ParallelState, offload=None):
        self.state = state
        self.offload = offload
        self.token_split = TokenSplit(state) if state.config.sp_degree > 1 else None

    @property
    def is_main(self) -> bool:
        return self.state.is_main

    def stage(self, component: str):
        return self.offload.use(component) if self.offload is not None else super().stage(component)

    def share_text(self, cond: TextConditioning | None, device: torch.device) -> TextConditioning:
        parts = [cond.states, cond.mask, cond.pooled] if cond is not None else None
        return TextConditioning(*broadcast_tensors(parts, device=device))

    def predict(self, dit, x, t, states, mask, pooled, guidance, *, cfg_pair: bool = False,
                step_cache=None, **dit_kwargs) -> torch.Tensor:
        if not (cfg_pair and self.state.config.cfg_degree == 2):
            return dit(x, t, states, mask, pooled, guidance, step_cache=step_cache,
                       token_split=self.token_split, **dit_kwargs)
        half = x.shape[0] // 2  # CFG rank 0 takes the negative rows, CFG rank 1 the positive
        rows = slice(self.state.cfg_rank * half, (self.state.cfg_rank + 1) * half)
        mine = dit(x[rows], t[rows], states[rows], mask[rows], pooled[rows],
                   None if guidance is None else guidance[rows], step_cache=step_cache,
                   token_split=self.token_split, **{k: _rows(v, rows, x.shape[0]) for k, v in dit_kwargs.items()})
        # [negative; positive], as the sequential batch
        return torch.cat(compat.all_gather(mine, self.state.cfg_group))

    def decode(self, vae, z: torch.Tensor, tiling: bool) -> torch.Tensor | None:
        if self.state.world_size == 1:
            return vae.decode(z, tiling=tiling)
        if tiling:
            return parallel_tiled_decode(vae, z, vae.tiling_config())
        return vae.decode(z, tiling=False) if self.is_main else None

    def close(self) -> None:
        if self.offload is not None:
            self.offload.close()


def _rows(value, rows: slice, batch: int):
    """A per-row DiT input cut to this CFG group's rows (anything else passes unchanged)."""
    return value[rows] if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch else value
