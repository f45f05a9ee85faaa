"""Generate videos with HunyuanVideo from the command line.

    python sample_video.py --prompt "A cat walks on the grass, realistic style."
    python sample_video.py --model tiny-random --prompt "a test"          # offline demo
    python sample_video.py --prompt-file prompts.csv --resume --save-path results/

Defaults are the released model's (720x1280, 129 frames, 50 steps, flow shift 7, embedded
guidance 6, reverse schedule on), so a bare command makes a correct video. Bad input gets one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

EXIT_USAGE = 2
log = logging.getLogger("sample_video")


def add_model_args(p: argparse.ArgumentParser, variants: list[str]) -> None:
    """The loading flags, shared with gradio_server.py (one pipeline, the same flags)."""
    g = p.add_argument_group("model and weights")
    g.add_argument("--model", default="HYVideo-T/2-cfgdistill", help=f"model variant: {', '.join(variants)}; "
                   "tiny-random builds small random-weight components in memory (offline demo)")
    g.add_argument("--model-base", type=Path, default=Path("ckpts"),
                   help="checkpoint root; every component path below is derived from it (default: ckpts)")
    g.add_argument("--dit-weight", type=Path, help="DiT weights (default: <model-base>/hunyuan-video-t2v-720p/"
                   "transformers/mp_rank_00_model_states.pt, or ..._fp8.pt with --use-fp8)")
    g.add_argument("--vae-path", type=Path, help="VAE folder (default: <model-base>/hunyuan-video-t2v-720p/vae)")
    g.add_argument("--text-encoder-path", type=Path, help="LLM text encoder folder (default: <model-base>/text_encoder)")
    g.add_argument("--text-encoder-2-path", type=Path, help="CLIP folder (default: <model-base>/text_encoder_2)")
    g.add_argument("--load-key", default="module", choices=["module", "ema"], help="container key of the DiT file")
    g.add_argument("--use-fp8", action="store_true",
                   help="load the official FP8 DiT (*_fp8.pt + *_fp8_map.pt): ~10 GB less memory")
    for flag, default, what in (("--precision", "bf16", "DiT"), ("--vae-precision", "fp16", "VAE"),
                                ("--text-encoder-precision", "fp16", "LLM text encoder"),
                                ("--text-encoder-precision-2", "fp16", "CLIP text encoder")):
        g.add_argument(flag, default=default, choices=["fp32", "fp16", "bf16"], help=f"{what} precision (default {default})")
    g.add_argument("--attention", default="sdpa", choices=["sdpa", "flash"],
                   help="attention kernel: PyTorch SDPA (any device) or flash-attn varlen (must be installed)")
    g.add_argument("--device", help="device to run on (default: the available accelerator, else cpu)")
    g.add_argument("--use-cpu-offload", action="store_true",
                   help="keep every component in CPU memory and move each to the device only for its stage "
                   "(text encoders for encoding, the DiT for denoising, the VAE for decoding)")
    g.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=True,
                   help="decode in overlapping spatial/temporal tiles, as the official code (default on)")
    g.add_argument("--text-len", type=int, default=256, help="LLM tokens kept after the template (default 256)")
    g.add_argument("--hidden-state-skip-layer", type=int, default=2, help="LLM layer counted from the end (default 2)")
    g.add_argument("--apply-final-norm", action="store_true", help="apply the LLM's final norm (official: off)")
    g.add_argument("--text-len-2", type=int, default=77, help="CLIP tokens (default 77)")
    g.add_argument("--ulysses-degree", type=int, default=1, help="Ulysses sequence-parallel degree (under torchrun)")
    g.add_argument("--ring-degree", type=int, default=1, help="Ring sequence-parallel degree (under torchrun)")


def build_parser(variants: list[str], resolutions: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, variants)
    s = p.add_argument_group("sampling (defaults: the model variant's)")
    s.add_argument("--prompt", help="text describing the video")
    s.add_argument("--neg-prompt", help="negative prompt for --cfg-scale > 1 (default: the official one)")
    s.add_argument("--prompt-file", type=Path, help="batch: .csv (Penguin benchmark layout: ',prompt'), .txt "
                   "(one per line) or .jsonl (prompt, optional seed/negative_prompt/id)")
    s.add_argument("--resume", action="store_true", help="skip prompt-file ids already in <save-path>/manifest.jsonl")
    s.add_argument("--video-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="multiples of 16")
    s.add_argument("--resolution", choices=resolutions, help="an official size preset, e.g. 720p-16:9 (HxW 720x1280)")
    s.add_argument("--video-length", type=int, help="frames, 4n+1 (default 129)")
    s.add_argument("--infer-steps", type=int, help="denoising steps (default 50)")
    s.add_argument("--seed", type=int, help="base seed; video i uses seed+i (default: random, logged)")
    s.add_argument("--cfg-scale", type=float, help="real classifier-free guidance; > 1 runs a negative branch (default 1)")
    s.add_argument("--embedded-cfg-scale", type=float, help="distilled guidance fed to the DiT (default 6.0)")
    s.add_argument("--flow-shift", type=float, help="time shift of the sigma schedule (default 7.0)")
    s.add_argument("--flow-reverse", action=argparse.BooleanOptionalAction, default=None,
                   help="sigmas from 1 to 0 (default on: the released model needs it)")
    s.add_argument("--flow-solver", default="euler", choices=["euler"], help="ODE solver (euler)")
    s.add_argument("--num-videos", type=int, default=1, help="videos per prompt (seeds seed, seed+1, ...)")
    s.add_argument("--batch-size", type=int, default=1, help="videos per DiT call")

    o = p.add_argument_group("output")
    o.add_argument("--save-path", type=Path, default=Path("results"), help="output folder (default results/)")
    o.add_argument("--output-type", default="mp4", choices=["mp4", "frames", "latents"],
                   help="mp4 (24 fps, settings in its metadata), a PNG frame folder, or float32 latents (.safetensors)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def pipeline_options(args):
    from hyvideo.components import PipelineOptions

    return PipelineOptions(
        model=args.model, model_base=args.model_base, dit_weight=args.dit_weight, vae_path=args.vae_path,
        text_encoder_path=args.text_encoder_path, text_encoder_2_path=args.text_encoder_2_path,
        load_key=args.load_key, precision=args.precision, vae_precision=args.vae_precision,
        text_encoder_precision=args.text_encoder_precision,
        text_encoder_precision_2=args.text_encoder_precision_2, use_fp8=args.use_fp8,
        vae_tiling=args.vae_tiling, use_cpu_offload=args.use_cpu_offload, attention=args.attention,
        text_len=args.text_len, hidden_state_skip_layer=args.hidden_state_skip_layer,
        apply_final_norm=args.apply_final_norm, text_len_2=args.text_len_2, device=args.device,
    )


def base_request(args, defaults, resolutions):
    """The request every job starts from: variant defaults, then the flags given."""
    from hyvideo.pipeline import GenerationRequest

    size = args.video_size or (resolutions[args.resolution] if args.resolution else (None, None))
    return GenerationRequest.from_defaults(
        defaults, prompt=args.prompt or "", negative_prompt=args.neg_prompt, height=size[0], width=size[1],
        video_length=args.video_length, infer_steps=args.infer_steps, cfg_scale=args.cfg_scale,
        embedded_cfg_scale=args.embedded_cfg_scale, flow_shift=args.flow_shift,
        flow_reverse=args.flow_reverse, num_videos=args.num_videos, batch_size=args.batch_size,
        seed=args.seed if args.seed is not None else random.randrange(2**31),
    )


def make_jobs(args, request):
    from hyvideo.batch import Manifest, PromptJob, read_prompt_file

    if args.prompt_file:
        jobs = read_prompt_file(args.prompt_file, request.seed)
    else:
        jobs = [PromptJob(time.strftime("%Y%m%d-%H%M%S"), request.prompt, request.seed, request.negative_prompt)]
    if args.resume:
        manifest = Manifest(args.save_path)
        if not manifest.path.is_file():
            raise ValueError(f"--resume: no manifest at {manifest.path}; run the batch once without --resume")
        for stale in args.save_path.glob(".*.partial"):  # left by a kill mid-write
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        done = manifest.done_ids()
        skipped = [j for j in jobs if j.id in done]
        jobs = [j for j in jobs if j.id not in done]
        log.info("resume: %d done, %d to go", len(skipped), len(jobs))
    return jobs


def check_save_path(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create --save-path {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"--save-path {path} is not writable; choose another folder")


def write_output(result, index: int, job, args, pipe) -> tuple[Path, dict]:
    from hyvideo.video_io import slug, unique_path, write_frames, write_latents, write_mp4

    seed = result.seeds[index]
    meta = {**result.request.settings(), "seed": seed, "model": pipe.name, "id": job.id,
            "random_weights": pipe.name == "tiny-random"}
    stem = f"{job.id}_seed{seed}_{slug(job.prompt, 40)}"
    if args.output_type == "latents":
        return write_latents(result.latents[index:index + 1], unique_path(args.save_path, stem, ".safetensors"), meta), meta
    if args.output_type == "frames":
        return write_frames(result.videos[index], unique_path(args.save_path, stem, ""), meta), meta
    return write_mp4(result.videos[index], unique_path(args.save_path, stem, ".mp4"), meta), meta


def run_jobs(pipe, jobs, request, args) -> None:
    import dataclasses

    import torch

    from hyvideo.batch import Manifest

    manifest = Manifest(args.save_path)
    for job in jobs:
        req = dataclasses.replace(request, prompt=job.prompt, seed=job.seed,
                                  negative_prompt=job.negative_prompt or request.negative_prompt)
        req.validate()
        if pipe.device.type != "cpu":
            torch.accelerator.reset_peak_memory_stats()
        start = time.perf_counter()
        result = pipe(req, decode=args.output_type != "latents", show_progress=not args.quiet)
        seconds = time.perf_counter() - start
        peak = torch.accelerator.max_memory_allocated() / 2**30 if pipe.device.type != "cpu" else None
        for i in range(req.num_videos):
            path, meta = write_output(result, i, job, args, pipe)
            vid = job.id if req.num_videos == 1 else f"{job.id}.{i}"
            manifest.append({**meta, "id": vid, "job": job.id, "output": str(path),
                             "seconds": round(seconds, 2), "peak_memory_gib": peak})
            log.info("saved %s (seed %d, %.1f s)", path, result.seeds[i], seconds)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from hyvideo.config import variant_files
    from hyvideo.pipeline import RESOLUTIONS

    variants = list(variant_files())
    args = build_parser(variants, list(RESOLUTIONS)).parse_args(argv)
    try:
        return generate(args, variants)
    except KeyboardInterrupt:
        return fail("interrupted; finished videos are saved and listed in the manifest (use --resume)")


def generate(args, variants) -> int:
    import torch

    from hyvideo.batch import PromptFileError
    from hyvideo.components import load_pipeline
    from hyvideo.config import load_variant
    from hyvideo.loading import CheckpointError
    from hyvideo.pipeline import RESOLUTIONS, UsageError

    if args.model not in variants:
        return fail(f"unknown model {args.model!r}; choose one of: {', '.join(variants)}")
    if args.ulysses_degree * args.ring_degree != 1:
        return fail("sequence parallelism (--ulysses-degree/--ring-degree > 1) is not available yet; use 1")
    if bool(args.prompt) == bool(args.prompt_file):
        return fail("give either --prompt \"...\" or --prompt-file FILE")
    if args.video_size and args.resolution:
        return fail("give either --video-size or --resolution, not both")
    try:
        request = base_request(args, load_variant(args.model).sampling, RESOLUTIONS)
        request.validate(require_prompt=args.prompt_file is None)  # before any model loads
        check_save_path(args.save_path)
        jobs = make_jobs(args, request)
        pipe = load_pipeline(pipeline_options(args))
        run_jobs(pipe, jobs, request, args)
    except (UsageError, PromptFileError, CheckpointError, ValueError) as exc:
        return fail(str(exc))
    except torch.OutOfMemoryError:
        return fail("out of memory while generating; lower memory with --use-cpu-offload, --use-fp8, "
                    "--vae-tiling, a smaller --video-size or a shorter --video-length")
    return 0


if __name__ == "__main__":
    sys.exit(main())
