"""Run under torchrun (gloo, CPU) by tests/test_cache.py: cached generations, one per
MODE:THRESHOLD, with the image tokens split over ring 2 and, with 4 processes, the CFG branches
on two rank groups; rank 0 saves the latents and every rank's cache statistics.

    python -m torch.distributed.run --nproc_per_node=2|4 tests/cache_worker.py OUT MODE:THRESHOLD...
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch
import torch.distributed as dist

from hyvideo.runtime.cache import CacheConfig, make_step_cache
from hyvideo.runtime.parallel import ParallelConfig, ParallelExecution, init_parallel
from tests.dit_utils import random_dit
from tests.test_cache import CONFIG, generate


def main(out: str, runs: list[str]) -> None:
    torch.set_num_threads(1)
    cfg_degree = int(os.environ["WORLD_SIZE"]) // 2
    state = init_parallel(ParallelConfig(1, 2, cfg_degree), torch.device("cpu"))
    execution = ParallelExecution(state)
    dit = random_dit(CONFIG)  # the same seed on every rank: identical weights
    result = {}
    for run in runs:
        mode, threshold = run.split(":")
        groups = (state.cfg_group,) if state.cfg_group is not None else ()
        cache = make_step_cache(CacheConfig(mode, float(threshold)), groups)
        latents = generate(dit, steps=10, cfg=cfg_degree == 2, cache=cache, predict=execution.predict)
        stats = [None] * state.world_size
        dist.all_gather_object(stats, dataclasses.asdict(cache.stats))
        result[run] = {"latents": latents, "stats": stats}
    if state.rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
