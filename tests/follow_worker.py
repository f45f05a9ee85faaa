"""Run under torchrun (gloo, CPU) by tests/test_gpu_defects.py: the web demo's leader and follower
with a short collective timeout on the default group, and an idle period longer than it.

    python -m torch.distributed.run --nproc_per_node=2 tests/follow_worker.py TIMEOUT_S IDLE_S OUT
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from hyvideo.pipeline.types import Progress
from hyvideo.pipeline.variants import load_variant
from hyvideo.runtime.parallel.config import ParallelConfig
from hyvideo.runtime.parallel.follow import LeaderPipeline, follow
from hyvideo.runtime.parallel.groups import ParallelState


class StepsOnly:
    """A pipeline stand-in: three denoising steps, each reported through the callback; the
    default group's barrier in each step stands for the model's own collectives."""

    def __init__(self, geometry):
        self.geometry, self.device, self.runs = geometry, torch.device("cpu"), []

    def __call__(self, request, *, callback=None, decode=True, show_progress=False):
        for step in range(3):
            dist.barrier()
            if callback is not None:
                callback(Progress("denoise", step + 1, 3))
        self.runs.append(request.prompt)
        return request.prompt


def main(timeout_s: float, idle_s: float, out: str) -> None:
    # The rendezvous gets a generous timeout (on a loaded 2-core CI runner the two ranks can start
    # seconds apart); the short timeout is then set on the default group's collectives only.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    dist.barrier()
    dist.distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    variant = load_variant("tiny-random")
    pipe = StepsOnly(variant.geometry)
    state = ParallelState(ParallelConfig(ulysses_degree=world), rank, world, None, None, None, None)
    if rank == 0:
        leader = LeaderPipeline(pipe, state)
        time.sleep(idle_s)  # the page is idle longer than the default group's timeout
        leader(variant.request(prompt="after a long idle", height=32, width=48, video_length=5))
        time.sleep(idle_s)
        leader(variant.request(prompt="and again", height=32, width=48, video_length=5))
        leader.close()
    else:
        follow(pipe)
    Path(f"{out}.{rank}").write_text("\n".join(pipe.runs))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
