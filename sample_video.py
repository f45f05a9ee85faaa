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
    g.add_argument("--attention", default="auto", choices=["auto", "sdpa", "flash", "flex", "sage"],
                   help="attention kernel (default auto: the fastest exact one for the device; "
                   "flash and sage must be installed; sage is approximate, 8-bit QK)")
    g.add_argument("--cache", default="none", choices=["none", "teacache", "first-block"],
                   help="step cache: skip the transformer blocks on steps whose input changed less than "
                   "--cache-threshold, reusing the last residual (faster, slightly different video; "
                   "docs/benchmarks.md has the measured cost)")
    g.add_argument("--cache-threshold", type=float, metavar="T",
                   help="skip threshold (default: teacache 0.15, first-block 0.06; 0 never skips)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile each transformer block (regional, dynamic shapes: no recompile "
                   "per resolution); the first step includes the compile time")
    g.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode for --compile (default: default)")
    g.add_argument("--device", help="device to run on (default: the available accelerator, else cpu)")
    g.add_argument("--offload", choices=["none", "model", "sequential", "blocks"],
                   help="where weights live (default none): model = each component visits the device for "
                   "its stage; sequential = every layer streamed (lowest memory, slowest); blocks = K DiT "
                   "blocks on the device, the rest prefetched from pinned CPU memory (see --blocks-on-device)")
    g.add_argument("--blocks-on-device", type=int, default=2, metavar="K",
                   help="DiT blocks resident on the device with --offload blocks (default 2)")
    g.add_argument("--use-cpu-offload", action="store_true",
                   help="the official flag: the same as --offload model")
    g.add_argument("--fp8-matmul", action="store_true",
                   help="with --use-fp8: multiply in float8 (torch._scaled_mm with the official weight scales, "
                   "activations quantized per token); faster on float8 GPUs (sm_89+), ~3%% less accurate; "
                   "layers or devices that cannot stay weight-only")
    g.add_argument("--fp8-activation-scale", choices=["token", "tensor"], default="token",
                   help="activation scales for --fp8-matmul: per token (default) or per tensor")
    g.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=True,
                   help="decode in overlapping spatial/temporal tiles, as the official code (default on)")
    g.add_argument("--text-len", type=int, default=256, help="LLM tokens kept after the template (default 256)")
    g.add_argument("--hidden-state-skip-layer", type=int, default=2, help="LLM layer counted from the end (default 2)")
    g.add_argument("--apply-final-norm", action="store_true", help="apply the LLM's final norm (official: off)")
    g.add_argument("--text-len-2", type=int, default=77, help="CLIP tokens (default 77)")
    g.add_argument("--ulysses-degree", type=int, default=1, help="Ulysses sequence-parallel degree (under torchrun)")
    g.add_argument("--ring-degree", type=int, default=1, help="Ring sequence-parallel degree (under torchrun)")
    g.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="apply a HunyuanVideo LoRA (.safetensors in diffusers/PEFT, original-key or "
                   "ComfyUI/kohya format, or a PEFT folder) at SCALE (default 1.0); repeatable")
    g.add_argument("--lora-fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="merge LoRAs into the weights (default; FP8 layers are requantized); "
                   "--no-lora-fuse keeps them as side branches")


def add_rewrite_args(p: argparse.ArgumentParser) -> None:
    """The prompt-rewrite flags, shared with gradio_server.py."""
    r = p.add_argument_group("prompt rewrite (the prompt encoded is the rewritten one; both are recorded)")
    r.add_argument("--rewrite", choices=["normal", "master"],
                   help="rewrite each prompt first: normal clarifies the intent; master also adds "
                   "composition, lighting and camera movement")
    r.add_argument("--rewrite-endpoint", metavar="URL", help="OpenAI-compatible chat endpoint serving the "
                   "rewrite model, e.g. http://localhost:8000/v1 (vLLM); key from $HYVIDEO_REWRITE_API_KEY")
    r.add_argument("--rewrite-model", default="HunyuanVideo-PromptRewrite",
                   help="model name sent to the endpoint (default HunyuanVideo-PromptRewrite)")
    r.add_argument("--rewrite-model-path", type=Path, metavar="FOLDER",
                   help="a local transformers causal LM folder instead of an endpoint (greedy decoding)")
    r.add_argument("--rewrite-timeout", type=float, default=60.0, help="seconds per request (default 60)")
    r.add_argument("--rewrite-retries", type=int, default=2,
                   help="retries after a timeout, connection error, 429 or 5xx (default 2)")
    r.add_argument("--rewrite-max-tokens", type=int, default=512, help="longest rewrite in tokens (default 512)")
    r.add_argument("--rewrite-fallback", action="store_true",
                   help="if the rewrite fails, warn and use the original prompt (default: error)")


def build_parser(variants: list[str], resolutions: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, variants)
    add_rewrite_args(p)
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
    from hyvideo.pipeline.components import PipelineOptions

    return PipelineOptions(
        model=args.model, model_base=args.model_base, dit_weight=args.dit_weight, vae_path=args.vae_path,
        text_encoder_path=args.text_encoder_path, text_encoder_2_path=args.text_encoder_2_path,
        load_key=args.load_key, precision=args.precision, vae_precision=args.vae_precision,
        text_encoder_precision=args.text_encoder_precision,
        text_encoder_precision_2=args.text_encoder_precision_2, use_fp8=args.use_fp8,
        vae_tiling=args.vae_tiling, use_cpu_offload=args.use_cpu_offload, offload=args.offload,
        blocks_on_device=args.blocks_on_device, fp8_matmul=args.fp8_matmul,
        fp8_activation_scale=args.fp8_activation_scale, attention=args.attention,
        text_len=args.text_len, hidden_state_skip_layer=args.hidden_state_skip_layer,
        apply_final_norm=args.apply_final_norm, text_len_2=args.text_len_2, device=args.device,
        loras=lora_specs(args), lora_fuse=args.lora_fuse, cache=args.cache,
        cache_threshold=args.cache_threshold, compile=args.compile,
        compile_mode=args.compile_mode,
    )


def lora_specs(args) -> tuple:
    """``--lora PATH[:SCALE]`` flags as LoraSpecs, each file checked to exist (before loading)."""
    from hyvideo.dit.lora import LoraSpec

    specs = tuple(LoraSpec.parse(text) for text in args.lora)
    for spec in specs:
        if not spec.path.exists():
            raise ValueError(f"LoRA file not found: {spec.path} (--lora PATH[:SCALE])")
    return specs


def rewrite_options(args):
    """The ``--rewrite*`` flags as RewriteOptions; None without --rewrite."""
    from hyvideo.apps.rewrite import RewriteOptions

    given = [f for f in ("rewrite_endpoint", "rewrite_model_path") if getattr(args, f)]
    if args.rewrite is None:
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --rewrite normal|master")
        return None
    if len(given) != 1:
        raise ValueError("--rewrite needs exactly one of --rewrite-endpoint URL or --rewrite-model-path FOLDER")
    if args.rewrite_timeout <= 0 or args.rewrite_retries < 0 or args.rewrite_max_tokens < 1:
        raise ValueError("--rewrite-timeout must be > 0, --rewrite-retries >= 0, --rewrite-max-tokens >= 1")
    if args.rewrite_model_path and not args.rewrite_model_path.is_dir():
        raise ValueError(f"--rewrite-model-path {args.rewrite_model_path} is not a folder")
    return RewriteOptions(mode=args.rewrite, endpoint=args.rewrite_endpoint, model=args.rewrite_model,
                          model_path=args.rewrite_model_path, timeout=args.rewrite_timeout,
                          retries=args.rewrite_retries, fallback=args.rewrite_fallback,
                          max_new_tokens=args.rewrite_max_tokens,
                          api_key=os.environ.get("HYVIDEO_REWRITE_API_KEY"), device=args.device)


def rewrite_jobs(jobs, args) -> dict:
    """job id -> Rewrite for every job (before the models load: fails fast, frees the rewriter)."""
    from hyvideo.apps.rewrite import build_rewriter

    opts = rewrite_options(args)
    if opts is None:
        return {}
    rewriter = build_rewriter(opts)
    return {job.id: rewriter.rewrite_result(job.prompt) for job in jobs}


def base_request(args, defaults, resolutions):
    """The request every job starts from: variant defaults, then the flags given."""
    from hyvideo.pipeline.t2v import GenerationRequest

    size = args.video_size or (resolutions[args.resolution] if args.resolution else (None, None))
    return GenerationRequest.from_defaults(
        defaults, prompt=args.prompt or "", negative_prompt=args.neg_prompt, height=size[0], width=size[1],
        video_length=args.video_length, infer_steps=args.infer_steps, cfg_scale=args.cfg_scale,
        embedded_cfg_scale=args.embedded_cfg_scale, flow_shift=args.flow_shift,
        flow_reverse=args.flow_reverse, num_videos=args.num_videos, batch_size=args.batch_size,
        seed=args.seed if args.seed is not None else random.randrange(2**31),
    )


def make_jobs(args, request):
    from hyvideo.apps.batch import Manifest, PromptJob, read_prompt_file

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


def check_save_path(path: Path, flag: str = "--save-path") -> None:
    """Create the output folder now and check it is writable (before any model loads)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {flag} {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is not writable; choose another folder")


def write_output(result, index: int, job, args, pipe, extra: dict | None = None) -> tuple[Path, dict]:
    from hyvideo.apps.video_io import slug, unique_path, write_frames, write_latents, write_mp4

    seed = result.seeds[index]
    meta = {**result.request.settings(), "seed": seed, "model": pipe.name, "id": job.id,
            "random_weights": pipe.name == "tiny-random", **(extra or {})}
    stem = f"{job.id}_seed{seed}_{slug(job.prompt, 40)}"
    if args.output_type == "latents":
        return write_latents(result.latents[index:index + 1], unique_path(args.save_path, stem, ".safetensors"), meta), meta
    if args.output_type == "frames":
        return write_frames(result.videos[index], unique_path(args.save_path, stem, ""), meta), meta
    return write_mp4(result.videos[index], unique_path(args.save_path, stem, ".mp4"), meta), meta


def parallel_config(args, request, variant):
    """The parallel layout from the degrees and torchrun's WORLD_SIZE; None for one process.

    With --cfg-scale > 1 and twice as many processes as ulysses x ring, the negative and
    positive branches run on two rank groups (CFG parallel).
    """
    from hyvideo.runtime.parallel import ParallelConfig, check_degrees

    world = int(os.environ.get("WORLD_SIZE", "1"))
    sp = args.ulysses_degree * args.ring_degree
    if world == 1 and sp == 1:
        return None
    cfg_degree = 2 if request.cfg_scale > 1 and world == 2 * sp else 1
    config = ParallelConfig(args.ulysses_degree, args.ring_degree, cfg_degree)
    pt, ph, pw = variant.dit.patch_size
    t, h, w = (request.video_length - 1) // 4 + 1, request.height // 8, request.width // 8
    check_degrees(config, world_size=world, heads=variant.dit.heads_num,
                  token_grid=(t // pt, h // ph, w // pw))
    return config


def start_parallel(config, args):
    """Join torchrun's process group (gloo on CPU, NCCL on GPUs); pin this rank's device."""
    from hyvideo.pipeline.components import device_for_rank
    from hyvideo.runtime.parallel import init_parallel

    if args.device is None:
        args.device = str(device_for_rank(int(os.environ.get("LOCAL_RANK", "0"))))
    import torch

    state = init_parallel(config, torch.device(args.device))
    if not state.is_main:
        logging.getLogger().setLevel(logging.WARNING)
        args.quiet = True
    return state


def share_from_main(obj):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cache_metadata(pipe) -> dict:
    """The step cache's settings and what it skipped in the last generation, for the metadata."""
    cache = getattr(pipe.dit, "step_cache", None)
    if cache is None:
        return {}
    log.info("step cache: %s", cache.stats.summary())
    return {"cache": {"mode": cache.config.mode, "threshold": cache.config.threshold,
                      "skipped_steps": cache.stats.skipped_steps}}


def run_jobs(pipe, jobs, request, args, rewrites: dict | None = None) -> None:
    import dataclasses

    import torch

    from hyvideo.apps.batch import Manifest

    manifest = Manifest(args.save_path)
    for job in jobs:
        rewrite = (rewrites or {}).get(job.id)  # the prompt encoded is the rewritten one
        req = dataclasses.replace(request, prompt=rewrite.prompt if rewrite else job.prompt, seed=job.seed,
                                  negative_prompt=job.negative_prompt or request.negative_prompt)
        req.validate()
        if pipe.device.type != "cpu":
            torch.accelerator.reset_peak_memory_stats()
        start = time.perf_counter()
        result = pipe(req, decode=args.output_type != "latents", show_progress=not args.quiet)
        seconds = time.perf_counter() - start
        peak = torch.accelerator.max_memory_allocated() / 2**30 if pipe.device.type != "cpu" else None
        if not pipe.is_main:  # only rank 0 writes files and the manifest
            continue
        for i in range(req.num_videos):
            extra = {**(rewrite.metadata() if rewrite else {}),
                     **({"loras": [{"path": str(x.path), "scale": x.scale} for x in lora_specs(args)]}
                        if args.lora else {}),
                     **cache_metadata(pipe)}
            path, meta = write_output(result, i, job, args, pipe, extra)
            vid = job.id if req.num_videos == 1 else f"{job.id}.{i}"
            manifest.append({**meta, "id": vid, "job": job.id, "output": str(path),
                             "seconds": round(seconds, 2), "peak_memory_gib": peak})
            log.info("saved %s (seed %d, %.1f s)", path, result.seeds[i], seconds)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from hyvideo.pipeline.variants import variant_names
    from hyvideo.pipeline.t2v import RESOLUTIONS

    variants = variant_names()
    args = build_parser(variants, list(RESOLUTIONS)).parse_args(argv)
    try:
        return generate(args, variants)
    except KeyboardInterrupt:
        return fail("interrupted; finished videos are saved and listed in the manifest (use --resume)")


def generate(args, variants) -> int:
    import torch

    from hyvideo.apps.batch import PromptFileError
    from hyvideo.pipeline.components import load_pipeline
    from hyvideo.pipeline.variants import load_variant
    from hyvideo.checkpoints.reading import CheckpointError
    from hyvideo.pipeline.t2v import RESOLUTIONS, UsageError
    from hyvideo.apps.rewrite import RewriteError

    if args.model not in variants:
        return fail(f"unknown model {args.model!r}; choose one of: {', '.join(variants)}")
    if bool(args.prompt) == bool(args.prompt_file):
        return fail("give either --prompt \"...\" or --prompt-file FILE")
    if args.video_size and args.resolution:
        return fail("give either --video-size or --resolution, not both")
    try:
        variant = load_variant(args.model)
        request = base_request(args, variant.sampling, RESOLUTIONS)
        request.validate(require_prompt=args.prompt_file is None)  # before any model loads
        parallel = parallel_config(args, request, variant)  # validated before any model loads
        state = start_parallel(parallel, args) if parallel else None
        if state is None or state.is_main:
            check_save_path(args.save_path)
        jobs = make_jobs(args, request) if state is None or state.is_main else None
        if state is not None:  # every rank runs the same jobs with the same seeds
            jobs = share_from_main(jobs)
        options = pipeline_options(args)
        options.check()  # contradictory loading flags, before any model loads
        # Only rank 0 encodes text, so only it rewrites (before any model loads).
        rewrites = rewrite_jobs(jobs, args) if state is None or state.is_main else {}
        pipe = load_pipeline(options, parallel=state)
        run_jobs(pipe, jobs, request, args, rewrites)
    except (UsageError, PromptFileError, CheckpointError, RewriteError, ValueError) as exc:
        return fail(str(exc))
    except torch.OutOfMemoryError:
        return fail("out of memory while generating; lower memory with --offload model (or blocks), --use-fp8, "
                    "--vae-tiling, a smaller --video-size or a shorter --video-length")
    return 0


if __name__ == "__main__":
    sys.exit(main())
