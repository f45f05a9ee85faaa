"""Run under torchrun (gloo, CPU) by tests/test_parallel.py: one parallel mode, results to a file.

    python -m torch.distributed.run --nproc_per_node=N tests/parallel_worker.py MODE OUT U R CFG
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from hyvideo.runtime.parallel import ParallelConfig, ParallelExecution, init_parallel
from hyvideo.text.conditioning import TextConditioning
from hyvideo.pipeline.denoise import denoise
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from tests.dit_utils import random_dit, random_inputs, tiny_config


def main(mode: str, out: str, u: int, r: int, cfg_degree: int) -> None:
    torch.set_num_threads(1)
    state = init_parallel(ParallelConfig(u, r, cfg_degree), torch.device("cpu"))
    config = tiny_config(heads_num=4, rope_dim_list=(4, 6, 6))
    dit = random_dit(config)  # the same seed on every rank: identical weights
    if mode == "raise":
        if state.rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        dist.barrier()  # the other ranks wait here until the failure tears the job down
        return
    if mode == "decode":
        result = {"video": decode_in_parallel()}
        if state.rank == 0:
            torch.save(result, out)
        dist.barrier()
        dist.destroy_process_group()
        return
    execution = ParallelExecution(state)
    x, t, states, mask, pooled, guidance = random_inputs(config, batch=2, thw=(3, 4, 8), text_len=9, valid=(7, 3))
    with torch.inference_mode():
        if mode == "forward":
            result = {"out": execution.predict(dit, x, t, states, mask, pooled, guidance)}
        else:  # a short denoising run, with real CFG when cfg_degree is 2
            schedule = FlowMatchSchedule.create(3, 5.0)
            pos = TextConditioning(states[:1], mask[:1], pooled[:1])
            neg = TextConditioning(states[1:], mask[1:], pooled[1:])
            result = {"latents": denoise(dit, x[:1], schedule, pos, negative=neg, cfg_scale=4.0,
                                         embedded_cfg_scale=6.0, predict=execution.predict)}
    if state.rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


def tiny_vae_and_latents():
    """A tiny random VAE with small tiles, so a 17-frame 64x80 video has 2 x 3 x 4 decoder tiles."""
    from hyvideo.vae import TilingConfig, VAEConfig, build_vae

    torch.manual_seed(3)
    vae = build_vae(VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=16,
                              norm_num_groups=4, sample_size=32,
                              sample_tsize=16), device="cpu")
    z = torch.randn(1, 16, 5, 8, 10, generator=torch.Generator().manual_seed(4))
    return vae, z, TilingConfig(32, 16, 0.25)


def decode_in_parallel():
    from hyvideo.runtime.parallel import parallel_tiled_decode

    vae, z, tiling = tiny_vae_and_latents()
    with torch.inference_mode():
        return parallel_tiled_decode(vae, z, tiling)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
