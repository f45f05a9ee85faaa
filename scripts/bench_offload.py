"""Offload modes against ``none``: DiT forward time (alternated in one process) and peak device memory.

Every mode runs the same random DiT on the same inputs, round-robin, ``--repeats`` times; the
script prints the median seconds per forward, the ratio to ``none``, whether the output is
bit-identical to ``none``, and on an accelerator the peak memory allocated during the forward
(weights that the mode keeps on the device included).

    python scripts/bench_offload.py                            # CPU, small config: hook overhead
    python scripts/bench_offload.py --device cuda --hidden 3072 --heads 24 --double 4 --single 8 \\
        --latent 16 9 48 80 --dtype bf16 --blocks 2            # accelerator: overlap and memory
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyvideo import compat
from hyvideo.dit.config import DiTConfig
from hyvideo.dit.loader import build_dit
from hyvideo.runtime.offload import MODES, OffloadConfig, offload_components


def build(args) -> tuple[torch.nn.Module, tuple]:
    head_dim = args.hidden // args.heads
    rope = [head_dim - 2 * (head_dim * 7 // 16), head_dim * 7 // 16, head_dim * 7 // 16]
    config = DiTConfig(hidden_size=args.hidden, heads_num=args.heads, mm_double_blocks_depth=args.double,
                       mm_single_blocks_depth=args.single, text_states_dim=256, text_states_dim_2=64,
                       rope_dim_list=tuple(rope), guidance_embed=True)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    dit = build_dit(config, dtype=dtype, device="cpu").eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.02)
    g = torch.Generator().manual_seed(1)
    device = torch.device(args.device)
    x = torch.randn(1, *args.latent, generator=g).to(device)
    states = torch.randn(1, 64, 256, generator=g).to(device)
    mask = torch.ones(1, 64, dtype=torch.int64, device=device)
    pooled = torch.randn(1, 64, generator=g).to(device)
    t, guidance = torch.full((1,), 500.0, device=device), torch.full((1,), 6000.0, device=device)
    return dit, (x, t, states, mask, pooled, guidance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--double", type=int, default=4)
    parser.add_argument("--single", type=int, default=8)
    parser.add_argument("--latent", type=int, nargs=4, default=[16, 3, 16, 16], metavar=("C", "T", "H", "W"))
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--blocks", type=int, default=2, help="blocks on device for --offload blocks")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    device = torch.device(args.device)
    accelerator = compat.is_accelerator(device)
    times = {m: [] for m in args.modes}
    peaks, outputs = {}, {}
    for _ in range(args.repeats):
        for mode in args.modes:  # round-robin: machine noise spreads over every mode alike
            dit, inputs = build(args)
            if accelerator:
                compat.synchronize(device)
                compat.reset_peak_memory_stats(device)
                base = compat.memory_allocated(device)
            offload = offload_components({"dit": dit}, device, OffloadConfig(mode, args.blocks))
            with offload.use("dit"), torch.inference_mode():
                start = time.perf_counter()
                out = dit(*inputs)
                if accelerator:
                    compat.synchronize(device)
                times[mode].append(time.perf_counter() - start)
                outputs[mode] = out.float().cpu()
            if accelerator:
                peaks[mode] = compat.max_memory_allocated(device) - base
            offload.close()
            del dit, offload
    base_time = statistics.median(times[args.modes[0]])
    print(f"device {device}, {args.double}+{args.single} blocks, hidden {args.hidden}, latent {args.latent}, "
          f"{args.dtype}, {args.repeats} alternated repeats; ratios against {args.modes[0]}")
    for mode in args.modes:
        med = statistics.median(times[mode])
        same = torch.equal(outputs[mode], outputs[args.modes[0]])
        peak = f"  peak {peaks[mode] / 2**20:9.1f} MiB" if mode in peaks else ""
        print(f"{mode:>10}: {med:8.4f} s/forward  x{med / base_time:5.2f}  identical={same}{peak}")


if __name__ == "__main__":
    main()
