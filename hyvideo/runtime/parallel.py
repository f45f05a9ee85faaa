"""Multi-process generation: Ulysses x Ring sequence parallelism, CFG parallelism, and a
parallel tiled VAE decode, on ``torch.distributed`` (NCCL on GPUs, gloo on CPU).

Sequence parallelism is composition, not patching: the DiT gets a :class:`TokenSplit` (keep
this rank's contiguous chunk of image tokens and RoPE rows after patch embedding; all-gather the
final tokens once per forward) and a :class:`SequenceParallelAttention` backend for its one
attention entry point. Inside attention, image tokens are exchanged with yunchang's Ulysses
all-to-all (``SeqAllToAll4D``) and passed around the ring with yunchang's ``RingComm``; the
partial results are merged by log-sum-exp (yunchang's ``update_out_and_lse``). Text tokens are
replicated on every rank: each rank takes its Ulysses head slice, the valid text keys/values join
the ring's key/value blocks exactly once, and the text queries ride along with the image queries,
so the result is the single-device result (padding never leaks: it keeps its own group).
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hyvideo.dit.attention import AttentionGroups, attention

log = logging.getLogger(__name__)


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


def valid_degrees(num_img_tokens: int, heads: int, limit: int = 64) -> list[tuple[int, int]]:
    """(ulysses, ring) pairs that split ``num_img_tokens`` evenly and ``heads`` for Ulysses."""
    return [
        (u, r) for u in range(1, limit + 1) for r in range(1, limit // u + 1)
        if heads % u == 0 and num_img_tokens % (u * r) == 0
    ]


def check_degrees(cfg: ParallelConfig, *, world_size: int, heads: int, token_grid: tuple[int, int, int]) -> None:
    """Raise :class:`ParallelError` (before any model loads) unless the degrees can run."""
    n = math.prod(token_grid)
    if cfg.ulysses_degree < 1 or cfg.ring_degree < 1:
        raise ParallelError("--ulysses-degree and --ring-degree must be >= 1")
    if cfg.world_size != world_size:
        raise ParallelError(
            f"ulysses {cfg.ulysses_degree} x ring {cfg.ring_degree}"
            f"{' x cfg 2' if cfg.cfg_degree == 2 else ''} = {cfg.world_size} processes, but "
            f"{world_size} were started; launch with torchrun --nproc_per_node={cfg.world_size}")
    if heads % cfg.ulysses_degree or n % cfg.sp_degree:
        pairs = [f"{u}x{r}" for u, r in valid_degrees(n, heads, limit=max(8, cfg.sp_degree))
                 if u * r == cfg.sp_degree] or ["none"]
        raise ParallelError(
            f"ulysses {cfg.ulysses_degree} x ring {cfg.ring_degree} cannot split this size "
            f"({n} image tokens = {'x'.join(map(str, token_grid))}, {heads} heads): ulysses must "
            f"divide the heads and ulysses*ring the tokens; valid ulysses x ring for "
            f"{cfg.sp_degree} processes: {', '.join(pairs)}")


@dataclass
class ParallelState:
    """This process's place in the world: its sequence-parallel, Ulysses, ring and CFG groups."""

    config: ParallelConfig
    rank: int
    world_size: int
    sp_group: object
    ulysses_group: object
    ring_group: object
    cfg_group: object | None

    @property
    def sp_rank(self) -> int:
        return dist.get_rank(self.sp_group)

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.config.sp_degree

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(cfg: ParallelConfig, device: torch.device, timeout_s: float = 600) -> ParallelState:
    """Join the process group started by torchrun and build the sub-groups.

    Layout: ranks [c*P, (c+1)*P) form the sequence-parallel group of CFG branch c (P = U*R);
    inside it, Ulysses groups are consecutive ranks and ring groups are strided (yunchang's
    ``set_seq_parallel_pg`` layout). A stuck collective raises after ``timeout_s``.
    """
    from yunchang import set_seq_parallel_pg
    from yunchang.globals import PROCESS_GROUP

    if not dist.is_initialized():
        backend = "gloo" if device.type == "cpu" else None  # None: torch picks NCCL for CUDA
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type != "cpu":
        torch.accelerator.set_device_index(device.index if device.index is not None else
                                           rank % torch.accelerator.device_count())
    set_seq_parallel_pg(cfg.ulysses_degree, cfg.ring_degree, rank, world)
    p = cfg.sp_degree
    sp_group = cfg_group = None
    for c in range(cfg.cfg_degree):  # every rank must create every group, in the same order
        group = dist.new_group(list(range(c * p, (c + 1) * p)))
        if rank // p == c:
            sp_group = group
    if cfg.cfg_degree > 1:
        for i in range(p):
            group = dist.new_group([i + c * p for c in range(cfg.cfg_degree)])
            if rank % p == i:
                cfg_group = group
    return ParallelState(cfg, rank, world, sp_group, PROCESS_GROUP.ULYSSES_PG,
                         PROCESS_GROUP.RING_PG, cfg_group)


# ---- the DiT side --------------------------------------------------------------------------

class TokenSplit:
    """Keep this rank's contiguous chunk of the image tokens; gather the outputs once."""

    def __init__(self, state: ParallelState):
        self.group = state.sp_group
        self.parts = state.config.sp_degree
        self.index = state.sp_rank

    def scatter(self, img: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        """img [B, N, C], rope ([N, D], [N, D]) -> this rank's [B, N/P, C] and rope rows."""
        n = img.shape[1]
        if n % self.parts:
            raise ParallelError(f"{n} image tokens cannot be split over {self.parts} ranks")
        chunk = n // self.parts
        rows = slice(self.index * chunk, (self.index + 1) * chunk)
        return img[:, rows], (rope[0][rows], rope[1][rows])

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N/P, C] on every rank -> [B, N, C] on every rank (rank order)."""
        parts = [torch.empty_like(tokens) for _ in range(self.parts)]
        dist.all_gather(parts, tokens.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Unmasked attention on [B, S, H, D] returning (out [B, S, H, D], lse [B, H, S] float32)."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            qt, kt, vt, None, compute_log_sumexp=True)[:2]
    return out.transpose(1, 2), lse.float()


class SequenceParallelAttention:
    """Attention backend for a DiT whose image tokens are split across the SP group."""

    def __init__(self, state: ParallelState):
        self.ulysses = state.ulysses_group
        self.ring = state.ring_group
        self.u_size = state.config.ulysses_degree
        self.r_size = state.config.ring_degree
        self.u_rank = dist.get_rank(self.ulysses) if self.u_size > 1 else 0

    def __call__(self, q, k, v, groups: AttentionGroups) -> torch.Tensor:
        """q, k, v [B, n_local + L, H, D] (local image chunk, then all text) -> [B, n+L, H*D]."""
        b, s, h, d = q.shape
        n_local = groups.num_img
        outs = []
        for i, first in enumerate(groups.for_batch(b)):  # items may differ in valid text length
            sel = slice(i, i + 1)
            outs.append(self._one(q[sel], k[sel], v[sel], n_local, first - n_local))
        return torch.cat(outs).reshape(b, s, h * d)

    def _one(self, q, k, v, n_local: int, n_text: int) -> torch.Tensor:
        from yunchang.comm.all_to_all import SeqAllToAll4D

        h = q.shape[2]
        heads = slice(self.u_rank * h // self.u_size, (self.u_rank + 1) * h // self.u_size)
        img = [t[:, :n_local] for t in (q, k, v)]
        if self.u_size > 1:  # [B, n/P, H, D] -> [B, n/R, H/U, D]
            img = [SeqAllToAll4D.apply(self.ulysses, t.contiguous(), 2, 1, False) for t in img]
        txt = [t[:, n_local:n_local + n_text, heads] for t in (q, k, v)]
        queries = torch.cat([img[0], txt[0]], dim=1)
        out = self._ring(queries, img[1], img[2], txt[1], txt[2]).to(q.dtype)
        img_out, txt_out = out[:, :img[0].shape[1]], out[:, img[0].shape[1]:]
        if self.u_size > 1:
            img_out = SeqAllToAll4D.apply(self.ulysses, img_out.contiguous(), 1, 2, False)
            parts = [torch.empty_like(txt_out) for _ in range(self.u_size)]
            dist.all_gather(parts, txt_out.contiguous(), group=self.ulysses)
            txt_out = torch.cat(parts, dim=2)  # heads back in Ulysses rank order
        pad = q[:, n_local + n_text:]  # padding queries: their own group, as in varlen
        pad_out = [attention(pad, k[:, n_local + n_text:], v[:, n_local + n_text:])
                   .unflatten(-1, (h, -1))] if pad.shape[1] else []
        return torch.cat([img_out, txt_out, *pad_out], dim=1)

    def _ring(self, q, k, v, text_k, text_v) -> torch.Tensor:
        """Queries against every rank's image K/V (passed round the ring) and the text K/V."""
        from yunchang.ring.utils import RingComm, update_out_and_lse

        out, lse = update_out_and_lse(None, None, *attention_with_lse(q, text_k, text_v))
        comm = RingComm(self.ring) if self.r_size > 1 else None
        for step in range(self.r_size):
            if comm is not None and step + 1 < self.r_size:
                next_k, next_v = comm.send_recv(k.contiguous()), comm.send_recv(v.contiguous())
                comm.commit()
            out, lse = update_out_and_lse(out, lse, *attention_with_lse(q, k, v))
            if comm is not None and step + 1 < self.r_size:
                comm.wait()
                k, v = next_k, next_v
        return out


def enable_sequence_parallel(dit, state: ParallelState) -> None:
    """Wire sequence parallelism into a DiT (at pipeline construction)."""
    if state.config.sp_degree > 1:
        dit.set_parallel(TokenSplit(state), SequenceParallelAttention(state))


# ---- CFG parallel, text broadcast, parallel VAE decode ------------------------------------

class CfgParallel:
    """Run the negative rows on CFG rank 0 and the positive rows on CFG rank 1."""

    def __init__(self, state: ParallelState):
        self.group = state.cfg_group
        self.index = state.cfg_rank

    def __call__(self, dit, x, t, states, mask, pooled, guidance):
        half = x.shape[0] // 2
        rows = slice(self.index * half, (self.index + 1) * half)
        mine = dit(x[rows], t[rows], states[rows], mask[rows], pooled[rows],
                   None if guidance is None else guidance[rows])
        parts = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(parts, mine.contiguous(), group=self.group)
        return torch.cat(parts)  # [negative; positive], as the sequential batch


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


# ---- the web demo under torchrun: rank 0 serves, the other ranks follow -------------------

class LeaderPipeline:
    """Rank 0's pipeline when the other ranks follow it (the web demo under torchrun).

    Each call first sends the request to the followers; at every denoising step rank 0
    broadcasts whether to go on, so a cancel stops every rank at the same step. Attributes are
    the wrapped pipeline's.
    """

    def __init__(self, pipe, state: ParallelState, heads: int, patch: tuple[int, int, int]):
        self.pipe, self.state, self.heads, self.patch = pipe, state, heads, patch

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)

    def __call__(self, request, *, callback=None, decode: bool = True, show_progress: bool = False):
        from hyvideo.pipeline.t2v import UsageError

        request.validate()
        t, h, w = (request.video_length - 1) // 4 + 1, request.height // 8, request.width // 8
        try:
            check_degrees(self.state.config, world_size=self.state.world_size, heads=self.heads,
                          token_grid=(t // self.patch[0], h // self.patch[1], w // self.patch[2]))
        except ParallelError as exc:
            raise UsageError(str(exc)) from None
        dist.broadcast_object_list([(request, decode)], src=0)
        return self.pipe(request, callback=_StepSync(self.pipe.device, callback),
                         decode=decode, show_progress=show_progress)

    def close(self) -> None:
        """Release the followers (they return from :func:`follow`)."""
        dist.broadcast_object_list([None], src=0)


class _StepSync:
    """Progress callback that agrees with every rank, at each denoising step, whether to stop.

    On rank 0 it runs the page's callback; a cancel raised there (at any stage) is held until
    the next denoising step, where it is broadcast and then raised on every rank.
    """

    def __init__(self, device: torch.device, callback=None):
        self.device, self.callback, self.pending = device, callback, None

    def __call__(self, event) -> None:
        from hyvideo.pipeline.t2v import GenerationCancelled

        if self.callback is not None:
            try:
                self.callback(event)
            except GenerationCancelled as exc:
                self.pending = exc
        if event.stage != "denoise":
            return
        flag = torch.tensor([1 if self.pending is not None else 0], device=self.device)
        dist.broadcast(flag, src=0)
        if flag.item():
            raise self.pending or GenerationCancelled("cancelled by rank 0")


def follow(pipe) -> None:
    """Ranks > 0: run every request rank 0 sends, in step with it, until it closes."""
    from hyvideo.pipeline.t2v import GenerationCancelled

    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is None:
            return
        request, decode = box[0]
        try:
            pipe(request, callback=_StepSync(pipe.device), decode=decode, show_progress=False)
        except GenerationCancelled:
            log.info("rank %d: generation cancelled by rank 0", dist.get_rank())
