"""Sequence-parallel scaling: seconds per DiT step, speed-up over one process, communication.

Run under torchrun with any number of processes (gloo on CPU, NCCL on GPUs):

    torchrun --standalone --nproc_per_node=2 scripts/bench_parallel.py --ulysses-degree 2
    torchrun --standalone --nproc_per_node=8 scripts/bench_parallel.py --full --ulysses-degree 8

Rank 0 also times the same forward on one process (same weights, no parallelism) and prints
the speed-up. Communication volume per rank and step is counted from the tensor sizes each
collective moves (a forward = one step with embedded guidance):
  Ulysses: 4 all-to-alls (q, k, v out; attention output back) per attention call, each sending
           (U-1)/U of the local [B, N/P, H, D] tensor; plus the text outputs' all-gather.
  Ring:    (R-1) hops of the local K and V [B, N/R, H/U, D] per attention call.
  Gather:  the final image tokens [B, N/P, 64], all-gathered once per forward.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyvideo import compat  # noqa: E402
from hyvideo.dit.config import DiTConfig  # noqa: E402
from hyvideo.dit.loader import build_dit  # noqa: E402
from hyvideo.pipeline.denoise import call_dit  # noqa: E402
from hyvideo.pipeline.geometry import Geometry  # noqa: E402
from hyvideo.pipeline.variants import load_variant  # noqa: E402
from hyvideo.runtime.parallel import ParallelConfig, ParallelExecution, check_degrees, init_parallel  # noqa: E402

TINY = dict(hidden_size=256, heads_num=8, mm_double_blocks_depth=2, mm_single_blocks_depth=4,
            text_states_dim=256, text_states_dim_2=64, rope_dim_list=[8, 12, 12], guidance_embed=True)


def comm_bytes(cfg: DiTConfig, n_img: int, n_txt: int, par: ParallelConfig, elem: int) -> float:
    """Bytes one rank sends per forward (formula in the module docstring)."""
    u, r, p = par.ulysses_degree, par.ring_degree, par.sp_degree
    calls = cfg.mm_double_blocks_depth + cfg.mm_single_blocks_depth
    local = n_img / p * cfg.hidden_size * elem  # [N/P, H*D]
    ulysses = 4 * local * (u - 1) / u + n_txt * cfg.hidden_size / u * elem * (u - 1)
    ring = (r - 1) * 2 * (n_img / r) * (cfg.hidden_size / u) * elem
    gather = n_img / p * 64 * 4 * (p - 1)
    return calls * (ulysses + ring) + gather


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ulysses-degree", type=int, default=1)
    parser.add_argument("--ring-degree", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="the full-size DiT in bf16 at 720x1280x129f")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    acc = compat.accelerator_type()
    device = torch.device(acc, local) if acc is not None else torch.device("cpu")
    if args.full:
        cfg = load_variant("HYVideo-T/2-cfgdistill").dit
        latent, dtype, n_txt = (16, 33, 90, 160), torch.bfloat16, 256
    else:
        cfg, latent, dtype, n_txt = DiTConfig.from_dict(TINY), (16, 9, 32, 32), torch.float32, 64
    par = ParallelConfig(args.ulysses_degree, args.ring_degree)
    grid = (latent[1], latent[2] // 2, latent[3] // 2)
    geometry = Geometry(patch_size=tuple(cfg.patch_size), heads=cfg.heads_num)
    check_degrees(par, world_size=world, geometry=geometry, video_length=(latent[1] - 1) * 4 + 1,
                  height=latent[2] * 8, width=latent[3] * 8)
    state = init_parallel(par, device)

    torch.manual_seed(0)
    single = build_dit(cfg, dtype=dtype, device="meta").to_empty(device=device)
    with torch.no_grad():
        for p in single.parameters():
            p.normal_(0, 0.02)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, *latent, generator=g).to(device, dtype)
    t = torch.tensor([900.0], device=device)
    states = torch.randn(1, n_txt, cfg.text_states_dim, generator=g).to(device, dtype)
    mask = torch.ones(1, n_txt, dtype=torch.int64, device=device)
    pooled = torch.randn(1, cfg.text_states_dim_2, generator=g).to(device, dtype)
    guidance = torch.tensor([6000.0], device=device)

    def timed(model, everyone: bool) -> float:
        times = []
        with torch.inference_mode():
            model(single, x, t, states, mask, pooled, guidance)
            for _ in range(args.repeats):
                if everyone:
                    dist.barrier()
                start = time.perf_counter()
                model(single, x, t, states, mask, pooled, guidance)
                compat.synchronize(device)  # no-op on the CPU
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    one = timed(call_dit, False) if state.is_main else None  # others wait at the next barrier
    dist.barrier()
    many = timed(ParallelExecution(state).predict, True)
    if state.is_main:
        n_img = grid[0] * grid[1] * grid[2]
        volume = comm_bytes(cfg, n_img, n_txt, par, torch.finfo(dtype).bits // 8)
        print(f"{'full' if args.full else 'tiny'} DiT, {n_img} image + {n_txt} text tokens, {dtype}, {device.type}")
        print(f"1 process: {one:.3f} s/step; {world} processes (ulysses {par.ulysses_degree} x ring "
              f"{par.ring_degree}): {many:.3f} s/step; speed-up {one / many:.2f}x")
        print(f"communication per rank and step: {volume / 2**20:.1f} MiB")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
