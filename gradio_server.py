"""Serve HunyuanVideo as a Gradio web page (and a `gradio_client` API named /generate).

    python gradio_server.py                              # official checkpoints under ckpts/
    python gradio_server.py --model tiny-random          # offline demo, random weights
    python gradio_server.py --use-cpu-offload --max-frames 65 --server-port 8081

The loading flags are sample_video.py's. The server listens on 127.0.0.1 unless --server-name
says otherwise; one video is generated at a time and other requests wait in a queue. Videos are
written under --output-dir with generated names, their settings embedded in the mp4.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from sample_video import add_model_args, check_save_path, fail, pipeline_options

log = logging.getLogger("gradio_server")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser(variants: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, variants)
    s = p.add_argument_group("server")
    s.add_argument("--server-name", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    s.add_argument("--server-port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--share", action="store_true", help="also open a public *.gradio.live link (default off)")
    s.add_argument("--output-dir", type=Path, default=Path("results/webui"),
                   help="where the videos are written, with generated names (default results/webui)")
    s.add_argument("--queue-size", type=positive_int, default=16,
                   help="requests that may wait for the device; more are refused (default 16)")
    g = p.add_argument_group("limits on one request (checked on the server)")
    g.add_argument("--max-pixels", type=positive_int, default=1280 * 720,
                   help="height x width of a frame (default 921600: 720p)")
    g.add_argument("--max-frames", type=positive_int, default=129, help="video length (default 129)")
    g.add_argument("--max-steps", type=positive_int, default=100, help="denoising steps (default 100)")
    return p


def check_output_dir(path: Path) -> None:
    check_save_path(path, flag="--output-dir")


def allowed_paths(output_dir: Path) -> list[str]:
    """Folders Gradio may copy results from beyond the working and temp folders it accepts anyway.

    Gradio also serves an allowed folder's files by name, so the output folder is added only when
    it has to be: results are otherwise served from content-hashed copies no one can guess.
    """
    folder = output_dir.resolve()
    if any(folder.is_relative_to(Path(base).resolve()) for base in (os.getcwd(), tempfile.gettempdir())):
        return []
    return [str(folder)]


def start_parallel_server(args):
    """Under torchrun: validate the degrees for the model's default size and join the group."""
    from hyvideo.pipeline.variants import load_variant
    from hyvideo.pipeline.t2v import GenerationRequest
    from sample_video import parallel_config, start_parallel

    variant = load_variant(args.model)
    request = GenerationRequest.from_defaults(variant.sampling, prompt="x")
    config = parallel_config(args, request, variant)
    return start_parallel(config, args) if config else None


def serve(args) -> int:
    from hyvideo.pipeline.components import load_pipeline
    from hyvideo.checkpoints.reading import CheckpointError

    try:
        from hyvideo.apps.web import Limits, build_demo
    except ModuleNotFoundError as exc:
        if exc.name != "gradio":
            raise
        return fail("the web demo needs Gradio: pip install gradio")
    try:
        state = start_parallel_server(args)
        if state is None or state.is_main:
            check_output_dir(args.output_dir)
        pipe = load_pipeline(pipeline_options(args), parallel=state)
    except (CheckpointError, ValueError) as exc:
        return fail(str(exc))
    if state is not None:
        from hyvideo.pipeline.variants import load_variant
        from hyvideo.runtime.parallel import LeaderPipeline, follow

        if not state.is_main:  # the other ranks run rank 0's requests in step with it
            follow(pipe)
            return 0
        dit = load_variant(args.model).dit
        pipe = LeaderPipeline(pipe, state, dit.heads_num, dit.patch_size)
    limits = Limits(max_pixels=args.max_pixels, max_frames=args.max_frames, max_steps=args.max_steps)
    demo = build_demo(pipe, output_dir=args.output_dir, limits=limits, queue_size=args.queue_size)
    if args.server_name not in LOOPBACK:
        log.warning("listening on %s: anyone who can reach this address can use the device", args.server_name)
    try:
        demo.launch(server_name=args.server_name, server_port=args.server_port, share=args.share,
                    allowed_paths=allowed_paths(args.output_dir), show_error=False)
    finally:
        if hasattr(pipe, "close"):  # under torchrun: let the following ranks exit too
            pipe.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from hyvideo.pipeline.variants import variant_names

    variants = variant_names()
    args = build_parser(variants).parse_args(argv)
    if args.model not in variants:
        return fail(f"unknown model {args.model!r}; choose one of: {', '.join(variants)}")
    if not 0 < args.server_port < 65536:
        return fail(f"--server-port {args.server_port} is not a port number (1-65535)")
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
