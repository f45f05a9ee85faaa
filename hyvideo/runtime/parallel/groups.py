"""This process's place in a torchrun world: the sequence-parallel, Ulysses, ring and CFG groups."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hyvideo import compat
from hyvideo.runtime.parallel.config import ParallelConfig


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
        compat.set_device_index(device.index if device.index is not None else
                                rank % compat.device_count())
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
