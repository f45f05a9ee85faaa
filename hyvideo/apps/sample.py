"""Generate videos with HunyuanVideo from the command line (``sample_video.py``, ``hyvideo-sample``).

    python sample_video.py --prompt "A cat walks on the grass, realistic style."
    python sample_video.py --model tiny-random --prompt "a test"          # offline demo
    python sample_video.py --prompt-file prompts.csv --resume --save-path results/

Defaults are the released model's (720x1280, 129 frames, 50 steps, flow shift 7, embedded
guidance 6, reverse schedule on), so a bare command makes a correct video. Every flag, prompt and
file is checked before any model loads; bad input gets one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hyvideo.apps import cli
from hyvideo.apps import i2v as i2v_cli

log = logging.getLogger("hyvideo.sample")


def build_parser(variants: list[str], resolutions: list[str], *, i2v: bool = False) -> argparse.ArgumentParser:
    from hyvideo.apps.output import OUTPUT_TYPES

    p = cli.OneLineParser(description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    cli.add_model_args(p, variants)
    if i2v:  # sample_image2video.py: the released image-to-video model by default
        p.set_defaults(model=i2v_cli.I2V_DEFAULT_MODEL)
    i2v_cli.add_i2v_args(p, default_on=i2v)
    cli.add_runtime_args(p)
    cli.add_rewrite_args(p)
    s = p.add_argument_group("sampling (defaults: the model variant's)")
    s.add_argument("--prompt", help="text describing the video")
    s.add_argument("--neg-prompt", help="negative prompt for --cfg-scale > 1 (default: the official one)")
    s.add_argument("--prompt-file", type=Path, help="batch: .csv (Penguin benchmark layout: ',prompt'), .txt "
                   "(one per line) or .jsonl (prompt, optional seed/negative_prompt/id, and image for "
                   "--i2v-mode: a path relative to the file)")
    s.add_argument("--prompt-ids", metavar="IDS", help="only these ids of --prompt-file, e.g. 0-9,172")
    s.add_argument("--resume", action="store_true", help="skip prompt-file ids already in <save-path>/manifest.jsonl")
    s.add_argument("--video-size", type=cli.whole, nargs=2, metavar=("HEIGHT", "WIDTH"), help="multiples of 16")
    s.add_argument("--resolution", choices=resolutions, help="an official size preset, e.g. 720p-16:9 (HxW 720x1280)")
    s.add_argument("--video-length", type=cli.whole, help="frames, 4n+1 (default 129)")
    s.add_argument("--infer-steps", type=cli.whole, help="denoising steps (default 50)")
    s.add_argument("--seed", type=cli.whole, help="base seed; video i uses seed+i (default: random, logged)")
    s.add_argument("--seed-type", choices=["auto", "random", "fixed"], default="auto",
                   help="auto: --seed (or a random one) + i per video; random: a random base seed even "
                   "with --seed; fixed: --seed for the single video of each prompt")
    s.add_argument("--cfg-scale", type=cli.finite, help="real classifier-free guidance; > 1 runs a negative branch (default 1)")
    s.add_argument("--embedded-cfg-scale", type=cli.finite, help="distilled guidance fed to the DiT (default 6.0)")
    s.add_argument("--flow-shift", type=cli.finite, help="time shift of the sigma schedule (default 7.0)")
    s.add_argument("--flow-reverse", action=argparse.BooleanOptionalAction, default=None,
                   help="sigmas from 1 to 0 (default on: the released model needs it)")
    s.add_argument("--num-videos", type=cli.whole, default=1, help="videos per prompt (seeds seed, seed+1, ...)")
    s.add_argument("--batch-size", type=cli.whole, default=1, help="videos per DiT call")
    o = p.add_argument_group("output")
    o.add_argument("--save-path", type=Path, default=Path("results"), help="output folder (default results/)")
    o.add_argument("--save-path-suffix", default="", help="official: save under <save-path>_<suffix>")
    o.add_argument("--name-suffix", default="", help="official: appended to every output file name")
    o.add_argument("--output-type", default="mp4", choices=OUTPUT_TYPES,
                   help="mp4 (24 fps, settings in its metadata), a PNG frame folder, or float32 latents (.safetensors)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _version() -> str:
    from hyvideo import __version__

    return __version__


@dataclass
class Job:
    """One prompt to generate: its id, its checked request and the rewrite it went through."""

    id: str
    prompt: str  # as written (the request holds the prompt encoded, possibly rewritten)
    request: object
    rewrite: object | None = None


@dataclass
class Plan:
    """Everything a run needs, checked before any model loads."""

    load: object
    runtime: object
    save_path: Path
    jobs: list[Job] = field(default_factory=list)
    parallel: object | None = None
    done: set[str] = field(default_factory=set)  # --resume: the videos an earlier run finished


@dataclass
class Resumed:
    """What --resume found in the manifest (read before any write)."""

    done: set[str] = field(default_factory=set)  # the videos finished, recorded or not
    lost: list[dict] = field(default_factory=list)  # the records a kill lost: begin writes them again


def main_i2v(argv: list[str] | None = None) -> int:
    """``sample_image2video.py``: the same program with --i2v-mode on and the I2V model."""
    return main(argv, i2v=True)


def main(argv: list[str] | None = None, *, i2v: bool = False) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from hyvideo.pipeline.geometry import RESOLUTIONS
    from hyvideo.pipeline.variants import variant_names

    args = build_parser(variant_names(), list(RESOLUTIONS), i2v=i2v).parse_or_exit_code(argv)
    if isinstance(args, int):
        return args
    try:
        plan = prepare(args)
        if not plan.jobs:
            print("nothing to do: every prompt is already in the manifest", file=sys.stderr)
            return 0
        from hyvideo import compat
        from hyvideo.runtime.build import load_pipeline

        pipe = load_pipeline(plan.load, plan.runtime, parallel=plan.parallel)
        for job in plan.jobs:
            compat.reset_peak_memory_stats(plan.runtime.resolved_device())
            start = time.perf_counter()
            result = pipe(job.request, decode=args.output_type != "latents", show_progress=not args.quiet)
            if pipe.is_main:  # only rank 0 writes files and the manifest
                save(result, job, plan, args, pipe.name, time.perf_counter() - start)
    except KeyboardInterrupt:
        return cli.fail("interrupted; finished videos are saved and listed in the manifest (use --resume)")
    except Exception as exc:  # noqa: BLE001 (the expected failures become one line)
        return cli.report(exc)
    return 0


def prepare(args: argparse.Namespace) -> Plan:
    """Check every flag, prompt and path and build the jobs before anything heavy is imported or
    loaded (the paths and prompts before torch; everything before transformers, unless a speed
    flag was given: see cli.RUNTIME_FLAGS); then join the torchrun group."""
    from hyvideo.pipeline.variants import load_variant

    i2v_cli.select_model(args)  # --i2v-mode: the image-to-video sibling of --model
    args.lora += i2v_cli.official_lora(args)
    check_prompt_flags(args)
    cli.check_flags_used(args)
    load = cli.load_options(args)
    variant = load_variant(args.model)
    fields = sampling_fields(args, variant)
    cli.rewrite_options(args, None)  # the rewrite flags now; the rewrite itself runs last
    checked = check_runtime(args, load, variant, fields) if cli.runtime_flags_given(args) else None
    main_rank = cli.is_main_rank()
    save_path = save_path_of(args)
    jobs, resumed = [], Resumed()
    if main_rank:
        cli.check_output_folder(save_path, "--save-path")
        jobs, resumed = make_jobs(args, variant, fields, save_path)
    cli.check_paths_early(args)
    runtime, config = checked or check_runtime(args, load, variant, fields)
    if config is not None and variant.is_i2v:  # every image's size must split over the ranks
        cli.check_split(config, variant, [(job.request.video_length, job.request.height, job.request.width)
                                          for job in jobs])
    parallel, runtime = cli.join_parallel(config, runtime)
    if parallel is not None and not main_rank:
        args.quiet = True
    if main_rank and (jobs or resumed.lost):
        begin(args, save_path, jobs, resumed.lost)
    if parallel is not None:  # every rank runs the same jobs with the same seeds
        jobs = share_from_main(jobs)
    return Plan(load, runtime, save_path, jobs, parallel=parallel, done=resumed.done)


def begin(args: argparse.Namespace, save_path: Path, jobs: list[Job], lost: list[dict]) -> None:
    """After every check, the run's first writes: the manifest exists from the start (a kill
    before the first video still resumes) with a torn last line set aside; on --resume the
    leftovers of a killed run are removed and finished outputs whose record was lost (``lost``,
    found by :func:`resume_rows`) are recorded (not rendered twice). Then the prompts are
    rewritten (--rewrite)."""
    from hyvideo.apps.batch import Manifest

    if args.prompt_file:
        manifest = Manifest(save_path)
        manifest.create()
        if args.resume:
            manifest.remove_partials()
            manifest.recover(lost)
    rewrite_jobs(jobs, args)


def check_prompt_flags(args: argparse.Namespace) -> None:
    """Which prompt flags go together (each given flag must act)."""
    if bool(args.prompt) == bool(args.prompt_file):
        raise ValueError("give either --prompt \"...\" or --prompt-file FILE")
    for flag, given in (("--prompt-ids", args.prompt_ids), ("--resume", args.resume)):
        if given and not args.prompt_file:
            raise ValueError(f"{flag} works on the rows of --prompt-file; give --prompt-file too")
    if args.seed_type == "random" and args.seed is not None:
        raise ValueError("--seed-type random draws a random base seed and ignores --seed; drop one of them")
    if args.batch_size > args.num_videos >= 1:
        raise ValueError(f"--batch-size {args.batch_size} is more than --num-videos {args.num_videos}: "
                         "a DiT call holds at most the videos of one prompt")


def save_path_of(args: argparse.Namespace) -> Path:
    return Path(f"{args.save_path}_{args.save_path_suffix}") if args.save_path_suffix else args.save_path


def sampling_fields(args: argparse.Namespace, variant) -> dict:
    """The sampling flags as request fields (the variant's defaults fill in the rest), checked as
    a request is (with the size and frame count against the model's geometry)."""
    from hyvideo.pipeline.geometry import RESOLUTIONS

    if args.video_size and args.resolution:
        raise ValueError("give either --video-size or --resolution, not both")
    if variant.is_i2v and (args.video_size or args.resolution):
        flag = "--video-size" if args.video_size else "--resolution"
        raise ValueError(f"{flag}: in image-to-video the image picks the video size (its aspect ratio's "
                         "bucket); choose the bucket set with --i2v-resolution 360p|540p|720p")
    if args.seed_type == "fixed" and args.num_videos > 1:
        raise ValueError("--seed-type fixed gives every video of a prompt the same seed; use --num-videos 1")
    size = args.video_size or RESOLUTIONS.get(args.resolution)
    height, width = size if size is not None else (variant.sampling.height, variant.sampling.width)
    if args.embedded_cfg_scale is not None and variant.sampling.embedded_cfg_scale is None:
        raise ValueError(f"--embedded-cfg-scale: model {variant.name} has no guidance embedding; use "
                         "--cfg-scale (real guidance), or a cfg-distilled model")
    fields = dict(height=height, width=width,  # 0 is refused below, never read as "the default"
                  video_length=variant.sampling.video_length if args.video_length is None else args.video_length,
                  infer_steps=args.infer_steps, cfg_scale=args.cfg_scale,
                  embedded_cfg_scale=args.embedded_cfg_scale, flow_shift=args.flow_shift,
                  flow_reverse=args.flow_reverse, num_videos=args.num_videos, batch_size=args.batch_size)
    fields["seed"] = args.seed if args.seed is not None and args.seed_type != "random" else random.randrange(2**31)
    variant.request(**fields, prompt="flags")  # every value: types and ranges, then the geometry
    return fields


def check_runtime(args: argparse.Namespace, load, variant, fields: dict):
    """The speed and memory flags as RuntimeOptions, and the torchrun layout (None for one
    process) with its degrees checked for the size. -> (runtime, parallel config)"""
    cfg_scale = variant.sampling.cfg_scale if fields["cfg_scale"] is None else fields["cfg_scale"]
    runtime, config = cli.check_runtime(args, load, cfg_scale)
    if config is not None and not variant.is_i2v:  # image to video: each image's size, in prepare
        cli.check_split(config, variant, [(fields["video_length"], fields["height"], fields["width"])])
    return runtime, config


def make_jobs(args: argparse.Namespace, variant, fields: dict, save_path: Path) -> tuple[list[Job], Resumed]:
    """The prompts to run (a file's rows or --prompt), minus those done (--resume), each a
    checked request; a row's bad value is reported with its file and line."""
    from hyvideo.apps.batch import PromptJob, read_prompt_file, select_ids

    resumed = Resumed()
    if args.prompt_file:
        rows = select_ids(read_prompt_file(args.prompt_file, fields["seed"]), args.prompt_ids)
        if args.resume:
            rows, resumed = resume_rows(rows, args.num_videos, save_path)
    else:
        rows = [PromptJob(time.strftime("%Y%m%d-%H%M%S"), args.prompt, fields["seed"], args.neg_prompt)]
    images = i2v_cli.ImageCache(args, variant) if variant.is_i2v else None
    jobs = [Job(row.id, row.prompt, row_request(variant, fields, row, args.neg_prompt, images)) for row in rows]
    return jobs, resumed


def resume_rows(rows: list, num_videos: int, save_path: Path) -> tuple[list, Resumed]:
    """--resume (reads only): the rows with a video still to make, once. A video counts as done
    when recorded with its output present, or finished with its record lost (found by the id in
    its embedded settings; :func:`begin` records it again)."""
    from hyvideo.apps.batch import Expected, Manifest, video_ids
    from hyvideo.apps.output import output_prefix

    manifest = Manifest(save_path)
    manifest.require()
    done = manifest.done_ids()
    lost = manifest.lost_records([Expected(vid, row.id, output_prefix(row.id))
                                  for row in rows for vid in video_ids(row.id, num_videos)], done)
    done |= {record["id"] for record in lost}
    return manifest.pending(rows, num_videos, done), Resumed(done, lost)


def row_request(variant, fields: dict, row, neg_prompt: str | None, images=None):
    """The request of one row: the flags' fields with the row's prompt, seed and negative prompt
    (and, in image to video, its image, which picks the size)."""
    from hyvideo.apps.batch import PromptFileError
    from hyvideo.pipeline.types import UsageError

    negative = row.negative_prompt or neg_prompt
    if images is None and row.image is not None:
        raise PromptFileError(f"{row.where}: an image column is read only in image-to-video mode (--i2v-mode)")
    try:
        request = variant.request(**{**fields, "prompt": row.prompt, "seed": row.seed, "negative_prompt": negative})
        request = images.request(request, row) if images is not None else request
    except UsageError as exc:
        if not row.where or exc.field not in ("prompt", "seed", "negative_prompt", "i2v_image_path"):
            raise
        raise PromptFileError(f"{row.where}: {exc}") from None
    if negative is not None and request.cfg_scale <= 1:
        where = f"{row.where}: the negative prompt" if row.negative_prompt and row.where else "--neg-prompt"
        raise ValueError(f"{where} is used only with real guidance, --cfg-scale > 1 (this run's is "
                         f"{request.cfg_scale:g}); raise --cfg-scale or drop the negative prompt")
    return request


def rewrite_jobs(jobs: list[Job], args: argparse.Namespace) -> None:
    """Rewrite every prompt first (before the models load: fails fast, frees the rewriter)."""
    from hyvideo.apps.rewrite import build_rewriter

    opts = cli.rewrite_options(args, os.environ.get("HYVIDEO_REWRITE_API_KEY"))
    if opts is None or not jobs:
        return
    rewriter = build_rewriter(opts)
    for job in jobs:
        job.rewrite = rewriter.rewrite_result(job.prompt)
        job.request = job.request.replace(prompt=job.rewrite.prompt)


def share_from_main(obj):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def save(result, job: Job, plan: Plan, args: argparse.Namespace, model: str, seconds: float) -> None:
    """Write every video of ``result`` and record it in the manifest."""
    from hyvideo import compat
    from hyvideo.apps.batch import Manifest, video_ids
    from hyvideo.apps.output import output_metadata, output_stem, write_output

    extra = dict(job.rewrite.metadata()) if job.rewrite else {}
    if plan.load.loras:
        extra["loras"] = [{"path": str(x.path), "scale": x.scale} for x in plan.load.loras]
    peak = compat.max_memory_allocated(plan.runtime.resolved_device())
    manifest = Manifest(plan.save_path)
    for i, vid in enumerate(video_ids(job.id, job.request.num_videos)):
        if vid in plan.done:  # a job cut off between its videos: the finished ones are kept, not redone
            continue
        meta = output_metadata(result, i, model=model, job_id=job.id, extra={**extra, "video": vid})
        stem = output_stem(job.id, result.seeds[i], job.prompt, args.name_suffix)
        path = write_output(result, i, plan.save_path, stem, meta, args.output_type)
        manifest.append({**meta, "id": vid, "job": job.id, "output": str(path), "seconds": round(seconds, 2),
                         "peak_memory_gib": peak / 2**30 if peak is not None else None})
        log.info("saved %s (seed %d, %.1f s)", path, result.seeds[i], seconds)


if __name__ == "__main__":
    sys.exit(main())
