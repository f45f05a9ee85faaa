"""Run under torchrun (gloo, CPU) by tests/test_i2v_dit.py: the token_replace I2V DiT with sequence
and CFG parallelism, results to a file.

    python -m torch.distributed.run --nproc_per_node=N tests/i2v_parallel_worker.py MODE OUT U R CFG

``compute`` is also what the test runs in one process, so both sides make the same call.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from hyvideo.pipeline.denoise import call_dit
from hyvideo.pipeline.i2v_denoise import denoise_i2v, i2v_start
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.text.conditioning import TextConditioning
from tests.dit_utils import random_dit, random_inputs, tiny_config

# Latent (T, H, W) = (3, 4, 8): 24 image tokens, 8 of them in frame 0. Two ranks get 12 tokens
# each (rank 0: 8 frame-0 tokens + 4 others, rank 1: none); four ranks get 6 each (rank 0: all
# frame 0, rank 1: 2 of 6, ranks 2-3: none) -- every case of the frame-0 boundary.
THW = (3, 4, 8)


def compute(mode: str, predict=call_dit) -> torch.Tensor:
    """One token_replace forward (batch 2, mixed text lengths) or a short I2V denoising run with
    real CFG, evaluated through ``predict``."""
    config = tiny_config(heads_num=4, rope_dim_list=(4, 6, 6), i2v_condition_type="token_replace")
    dit = random_dit(config)  # the same seed on every rank: identical weights
    x, t, states, mask, pooled, guidance = random_inputs(config, batch=2, thw=THW, text_len=9, valid=(7, 3))
    with torch.inference_mode():
        if mode == "forward":
            return predict(dit, x, t, states, mask, pooled, guidance)
        img = torch.randn(1, 16, 1, *THW[1:], generator=torch.Generator().manual_seed(5))
        pos = TextConditioning(states[:1], mask[:1], pooled[:1])
        neg = TextConditioning(states[1:], mask[1:], pooled[1:])
        latents = i2v_start(x[:1], img, stability=True)
        return denoise_i2v(dit, latents, FlowMatchSchedule.create(3, 17.0), pos, img, negative=neg,
                           cfg_scale=4.0, embedded_cfg_scale=6.0, predict=predict)


def main(mode: str, out: str, u: int, r: int, cfg_degree: int) -> None:
    from hyvideo.runtime.parallel import ParallelConfig, ParallelExecution, init_parallel

    torch.set_num_threads(1)
    state = init_parallel(ParallelConfig(u, r, cfg_degree), torch.device("cpu"))
    result = compute(mode, ParallelExecution(state).predict)
    if state.rank == 0:
        torch.save({"out": result}, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
