"""Serve HunyuanVideo as a Gradio web page (``gradio_server.py``, ``hyvideo-web``), with a
``gradio_client`` API named /generate.

    python gradio_server.py                              # official checkpoints under ckpts/
    python gradio_server.py --model tiny-random          # offline demo, random weights
    python gradio_server.py --use-cpu-offload --max-frames 65 --server-port 8081
    python gradio_server.py --model tiny-random-i2v      # image to video, offline demo
    python gradio_server.py --i2v-mode --use-cpu-offload # image to video, official checkpoints

The loading flags are sample_video.py's. The server listens on 127.0.0.1 unless --server-name
says otherwise; one video is generated at a time and other requests wait in a queue. Videos are
written under --output-dir with generated names, their settings embedded in the mp4. Every flag
and the port are checked before any model loads. An image-to-video model (``--model HYVideo-I2V``,
or ``--i2v-mode`` with a text-to-video name, as the official scripts) serves the image page.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

from hyvideo.apps import cli

log = logging.getLogger("hyvideo.web")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def positive_int(text: str) -> int:
    value = cli.whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def port_number(text: str) -> int:
    value = cli.whole(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def build_parser(variants: list[str]) -> argparse.ArgumentParser:
    p = cli.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_args(p, variants)
    cli.add_runtime_args(p)
    add_i2v_args(p)
    s = p.add_argument_group("server")
    s.add_argument("--server-name", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    s.add_argument("--server-port", type=port_number, default=7860, help="port (default 7860)")
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
    g.add_argument("--max-upload-mb", type=positive_int, default=50,
                   help="largest file a visitor may upload (the image to animate), in MB (default 50)")
    return p


def add_i2v_args(p: argparse.ArgumentParser) -> None:
    """Image to video: the official flag names that apply to a server (the image is the page's)."""
    from hyvideo.apps.i2v import CONDITION_TYPES, RESOLUTION_NAMES

    g = p.add_argument_group("image to video (an image-to-video --model needs none of these)")
    g.add_argument("--i2v-mode", action="store_true",
                   help="serve the image-to-video sibling of --model (HYVideo-T/2 -> HYVideo-I2V, "
                   "tiny-random -> tiny-random-i2v), as the official sample_image2video.py names it")
    g.add_argument("--i2v-condition-type", choices=CONDITION_TYPES,
                   help="with --i2v-mode: token_replace (the current release, default) or latent_concat (the first)")
    g.add_argument("--i2v-resolution", choices=RESOLUTION_NAMES,
                   help="the page's default bucket set (default: the model's, 720p for the released one)")


def select_i2v(args: argparse.Namespace) -> None:
    """``--i2v-mode``: the image-to-video sibling of ``--model`` (in place). The image-to-video
    flags need an image-to-video model: given with a text-to-video one they are refused, not ignored."""
    from hyvideo.apps.i2v import i2v_models, i2v_variant

    kind = args.i2v_condition_type
    args.model, variant = i2v_variant(args.model, i2v_mode=args.i2v_mode, kind=kind)
    if not variant.is_i2v:
        given = [flag for flag, value in (("--i2v-mode", args.i2v_mode), ("--i2v-condition-type", kind),
                                          ("--i2v-resolution", args.i2v_resolution)) if value]
        if given:
            raise ValueError(f"{given[0]}: --model {args.model} is a text-to-video model; use one of "
                             f"{i2v_models()} (or HYVideo-T/2 with --i2v-mode)")


def i2v_defaults(args: argparse.Namespace, variant):
    """The page's image-to-video defaults (None for a text-to-video model)."""
    if not variant.is_i2v:
        return None
    import dataclasses

    return dataclasses.replace(variant.i2v, resolution=args.i2v_resolution or variant.i2v.resolution)


def allowed_paths(output_dir: Path) -> list[str]:
    """Folders Gradio may copy results from beyond the working and temp folders it accepts anyway.

    Gradio also serves an allowed folder's files by name, so the output folder is added only when
    it has to be: results are otherwise served from content-hashed copies no one can guess.
    """
    folder = output_dir.resolve()
    if any(folder.is_relative_to(Path(base).resolve()) for base in (os.getcwd(), tempfile.gettempdir())):
        return []
    return [str(folder)]


def check_port_free(host: str, port: int) -> None:
    """The port must be free now, not found busy after minutes of loading."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except socket.gaierror as exc:
            raise ValueError(f"--server-name {host!r} is not an address of this machine ({exc.strerror}); "
                             "use 127.0.0.1 or 0.0.0.0") from None
        except OSError as exc:
            raise ValueError(f"--server-port {port}: cannot listen on {host}:{port} "
                             f"({exc.strerror or exc}); choose a free port") from None


def prepare(args: argparse.Namespace):
    """Check every flag, the port and the paths (before torch: the flags, folders and paths;
    before transformers: the runtime flags); join the torchrun group. -> (load, runtime, state)"""
    from hyvideo.pipeline.variants import load_variant

    select_i2v(args)
    cli.check_flags_used(args)
    load = cli.load_options(args)
    variant = load_variant(args.model)
    if cli.is_main_rank():
        cli.check_output_folder(args.output_dir, "--output-dir")
        check_port_free(args.server_name, args.server_port)
    cli.check_paths_early(args)
    s = variant.sampling
    runtime, config = cli.check_runtime(args, load, s.cfg_scale)
    if config is not None:
        cli.check_split(config, variant, [(s.video_length, s.height, s.width)])
    state, runtime = cli.join_parallel(config, runtime)
    return load, runtime, state


def serve(args: argparse.Namespace, load, runtime, state) -> int:
    from hyvideo.apps.webui import Limits, build_demo
    from hyvideo.runtime.build import load_pipeline

    pipe = load_pipeline(load, runtime, parallel=state)
    if state is not None:
        from hyvideo.runtime.parallel import LeaderPipeline, follow

        if not state.is_main:  # the other ranks run rank 0's requests in step with it
            follow(pipe)
            return 0
        pipe = LeaderPipeline(pipe, state)
    limits = Limits(max_pixels=args.max_pixels, max_frames=args.max_frames, max_steps=args.max_steps)
    demo = build_demo(pipe, output_dir=args.output_dir, limits=limits, queue_size=args.queue_size,
                      i2v=i2v_defaults(args, load.variant))
    if args.server_name not in LOOPBACK:
        log.warning("listening on %s: anyone who can reach this address can use the device", args.server_name)
    try:
        demo.launch(server_name=args.server_name, server_port=args.server_port, share=args.share,
                    allowed_paths=allowed_paths(args.output_dir), show_error=False,
                    max_file_size=args.max_upload_mb * 1024 * 1024)
    finally:
        if hasattr(pipe, "close"):  # under torchrun: let the following ranks exit too
            pipe.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import importlib.util

    from hyvideo.pipeline.variants import variant_names

    args = build_parser(variant_names()).parse_or_exit_code(argv)
    if isinstance(args, int):
        return args
    if importlib.util.find_spec("gradio") is None:
        return cli.fail("the web demo needs Gradio: pip install 'hyvideo[web]' (or pip install gradio)")
    try:
        return serve(args, *prepare(args))
    except Exception as exc:  # noqa: BLE001 (the expected failures become one line; cli.report re-raises others)
        return cli.report(exc, manifest=False)


if __name__ == "__main__":
    sys.exit(main())
