"""Step caches (TeaCache, First Block Cache): steps skipped, DiT speed-up and quality loss.

The tiny-random pipeline's text encoders and VAE with a somewhat larger random DiT (the real
block structure, 1 double : 2 single blocks as in the 20 : 40 model), one fixed-seed generation
per setting. Every round runs the uncached generation and then each cached setting, in one
process; a setting's speed-up is the median over rounds of (uncached denoise time / its denoise
time), each cached run timed right after an uncached one; "ideal" is steps / steps computed. Quality: max |latent difference| and PSNR of the decoded frames against the uncached run.
Threshold-0 rows check exactness (they must show 0 skipped, 0 difference, PSNR inf).

    python scripts/bench_cache.py                       # CPU, 30 steps, 2 rounds
    python scripts/bench_cache.py --steps 50 --rounds 3 --device cuda

Random weights: the step-to-step change of a random model is unlike the trained one's, so the
thresholds at which steps get skipped (and the quality at a given threshold) do not transfer to
the released model; the speed-up per skipped step does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_thresholds(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def build(args):
    """(pipeline with a larger random DiT, text conditioning, starting noise, schedule)."""
    import torch

    from hyvideo.pipeline.options import TINY, LoadOptions
    from hyvideo.pipeline.tiny import randomize
    from hyvideo.pipeline.variants import load_variant
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline
    from hyvideo.dit.loader import build_dit
    from hyvideo.pipeline.t2v import draw_noise
    from hyvideo.pipeline.scheduler import FlowMatchSchedule

    device = torch.device(args.device) if args.device else None
    pipe = load_pipeline(LoadOptions(model=TINY), RuntimeOptions(device=device))
    head_dim = args.hidden // args.heads
    t_dim = head_dim // 8 // 2 * 2  # the released model's split, 16 : 56 : 56 of 128
    rope = (t_dim, (head_dim - t_dim) // 2, (head_dim - t_dim) // 2)
    config = dataclasses.replace(load_variant(TINY).dit, hidden_size=args.hidden, heads_num=args.heads,
                                 mm_double_blocks_depth=args.double, mm_single_blocks_depth=args.single,
                                 rope_dim_list=rope)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe.dit = build_dit(config, dtype=torch.float32, device=pipe.device)
        randomize(pipe.dit)
    request = pipe.request("a red kite over the sea at dawn", height=args.size[0], width=args.size[1],
                           video_length=args.size[2], infer_steps=args.steps, seed=42)
    with torch.inference_mode():
        cond = pipe.encode_text([request.prompt], request.video_length)
    latent_thw = pipe.vae.latent_shape(request.video_length, request.height, request.width)
    noise = draw_noise((config.in_channels, *latent_thw), [request.seed], pipe.device, cond.states.dtype)
    schedule = FlowMatchSchedule.create(request.infer_steps, request.flow_shift, request.flow_reverse)
    return pipe, request, cond, noise, schedule


def timed_denoise(pipe, request, cond, noise, schedule, cache_config):
    """(latents, seconds, stats or None) for one generation's denoising loop."""
    import torch

    from hyvideo.pipeline.denoise import denoise
    from hyvideo.runtime.cache import make_step_cache

    cache = make_step_cache(cache_config)
    with torch.inference_mode():
        _synchronize(pipe.device)
        start = time.perf_counter()
        latents = denoise(pipe.dit, noise, schedule, cond, embedded_cfg_scale=request.embedded_cfg_scale,
                          step_cache=cache)
        _synchronize(pipe.device)
        seconds = time.perf_counter() - start
    return latents, seconds, (cache.stats if cache is not None else None)


def _synchronize(device) -> None:
    from hyvideo import compat

    compat.synchronize(device)  # no-op on the CPU


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="alternated timing rounds")
    parser.add_argument("--teacache", type=parse_thresholds, default=[0.0, 0.05, 0.1, 0.15, 0.2])
    parser.add_argument("--first-block", type=parse_thresholds, default=[0.0, 0.03, 0.05, 0.1, 0.2, 0.4, 0.6])
    parser.add_argument("--size", type=int, nargs=3, default=[96, 128, 17], metavar=("HEIGHT", "WIDTH", "FRAMES"))
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--double", type=int, default=4, help="double-stream blocks")
    parser.add_argument("--single", type=int, default=8, help="single-stream blocks")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.steps < 3 or args.rounds < 1:
        parser.error("--steps must be >= 3 and --rounds >= 1")

    import torch

    from hyvideo.runtime.cache import CacheConfig

    torch.manual_seed(0)
    pipe, request, cond, noise, schedule = build(args)
    settings = [CacheConfig("teacache", t) for t in args.teacache] + \
               [CacheConfig("first-block", t) for t in args.first_block]
    timed_denoise(pipe, request, cond, noise, schedule, CacheConfig())  # warm-up, not timed
    ratios = {s: [] for s in settings}
    results = {}
    base_times = []
    for r in range(args.rounds):
        for s in settings:  # each setting right after an uncached run: a ratio from neighbours
            base, base_s, _ = timed_denoise(pipe, request, cond, noise, schedule, CacheConfig())
            latents, seconds, stats = timed_denoise(pipe, request, cond, noise, schedule, s)
            base_times.append(base_s)
            ratios[s].append(base_s / seconds)
            results[s] = (latents, stats)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    with torch.inference_mode():
        base_video = pipe.decode(base, show_progress=False)
        print(f"# {args.steps} steps, {request.height}x{request.width}x{request.video_length} "
              f"({math.prod(pipe.dit.token_grid(tuple(noise.shape[2:])))} image tokens), DiT hidden {args.hidden}, "
              f"{args.double}+{args.single} blocks, {args.device}, random weights; uncached denoise "
              f"{statistics.median(base_times):.2f} s (median of {len(base_times)})")
        print("| mode | threshold | steps computed | skipped | DiT speed-up | ideal | max abs latent diff "
              "| PSNR (dB) | median distance |")
        print("|---|---|---|---|---|---|---|---|---|")
        for s in settings:
            latents, stats = results[s]
            video = pipe.decode(latents, show_progress=False)
            measured = [d for d in stats.distances if d is not None]
            print(f"| {s.mode} | {s.threshold:g} | {stats.computed}/{args.steps} | {stats.skipped} | "
                  f"{statistics.median(ratios[s]):.2f}x | {args.steps / stats.computed:.2f}x | "
                  f"{(latents - base).abs().max():.3g} | "
                  f"{psnr(video, base_video):.1f} | {statistics.median(measured):.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
