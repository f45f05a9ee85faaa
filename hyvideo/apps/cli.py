"""The command-line flags both front doors share, and the typed options built from them.

Only this layer parses arguments. It keeps the official flag names (``--model-base``,
``--dit-weight``, ``--use-cpu-offload``, ``--flow-reverse``...) so users' scripts keep working, turns
them into the library's typed options (:class:`~hyvideo.pipeline.components.LoadOptions`,
:class:`~hyvideo.runtime.build.RuntimeOptions`), and reports a bad flag in one line naming the
flag, the value and what is valid (exit code 2), before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

EXIT_USAGE = 2
log = logging.getLogger("hyvideo")

# Official flags that only describe the fixed released architecture: accepted with their one
# value (a note is logged), refused with any other.
FIXED_FLAGS = {
    "--latent-channels": "16", "--rope-theta": "256", "--vae": "884-16c-hy", "--text-encoder": "llm",
    "--text-states-dim": "4096", "--tokenizer": "llm", "--prompt-template": "dit-llm-encode",
    "--prompt-template-video": "dit-llm-encode-video", "--text-encoder-2": "clipL",
    "--text-states-dim-2": "768", "--tokenizer-2": "clipL", "--denoise-type": "flow",
    "--flow-solver": "euler",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line plus a hint, not the whole usage block."""

    def __init__(self, *args, **kwargs):
        script = Path(sys.argv[0])
        if kwargs.get("prog") is None and not args and script.name == "__main__.py":
            kwargs["prog"] = f"python -m {script.parent.name}"  # not "__main__.py --help"
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")

    def parse_or_exit_code(self, argv: list[str] | None) -> argparse.Namespace | int:
        """The parsed flags, or the exit code argparse chose (``--help``: 0, bad usage: 2).

        ``args.given_flags`` holds the destinations given on the command line (a flag given
        with its default value counts), so a flag that would be ignored can be refused.
        """
        try:
            args = self.parse_args(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        args.given_flags = self._given(argv)
        return args

    def _given(self, argv: list[str] | None) -> frozenset[str]:
        saved = [(action, action.default) for action in self._actions]
        try:  # parse again with no defaults: only what the command line set remains
            for action, _ in saved:
                action.default = argparse.SUPPRESS
            given, _ = self.parse_known_args(argv)
        finally:
            for action, default in saved:
                action.default = default
        return frozenset(vars(given))


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; the usage exit code."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def is_out_of_memory(exc: BaseException) -> bool:
    """A device out-of-memory error, or the CPU allocator's (a RuntimeError) or Python's failure
    to allocate."""
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and any(text in str(exc) for text in (
            "DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")))


def report(exc: Exception, *, manifest: bool = True) -> int:
    """One line for an expected failure (bad input, missing files, out of memory, a full disk);
    re-raise others. Bad input: every ValueError (PromptFileError, CheckpointError, UsageError,
    ParallelError are ones) and RewriteError. ``manifest``: finished videos are listed in one
    (the CLI's; the web demo keeps none)."""
    from hyvideo.apps.rewrite import RewriteError

    if isinstance(exc, (RewriteError, ValueError)):
        return fail(usage_message(exc))
    if is_out_of_memory(exc):
        return fail("out of memory while generating; lower memory with --offload model (or blocks), "
                    "--use-fp8, --vae-tiling, a smaller --video-size or a shorter --video-length")
    if isinstance(exc, OSError) and exc.strerror:  # a full disk, a file removed underneath us
        where = f" {exc.filename}" if exc.filename else ""
        kept = "; finished videos are saved and listed in the manifest" if manifest else ""
        return fail(f"cannot read or write{where}: {exc.strerror}{kept}")
    raise exc


def finite(text: str) -> float:
    """A float flag: finite numbers only (NaN and infinities are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def whole(text: str) -> int:
    """An integer flag (``1.5`` and ``true`` are refused)."""
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid whole number {text!r}") from None


def flag_of(field: str | None) -> str:
    """The flag for a request/option field name (``video_length`` -> ``--video-length``)."""
    aliases = {"negative_prompt": "--neg-prompt", "num_videos": "--num-videos", "height": "--video-size",
               "width": "--video-size", "fp8_activation_scale": "--fp8-activation-scale"}
    return aliases.get(field, f"--{field.replace('_', '-')}") if field else ""


def usage_message(exc: Exception) -> str:
    """``--flag: message`` when the error knows its field."""
    field = getattr(exc, "field", None)
    return f"{flag_of(field)}: {exc}" if field else str(exc)


def add_model_args(p: argparse.ArgumentParser, variants: list[str]) -> None:
    """Which model, from where, in which precision (shared by every front door)."""
    g = p.add_argument_group("model and weights")
    g.add_argument("--model", default="HYVideo-T/2-cfgdistill", metavar="MODEL",
                   help=f"model variant: {', '.join(variants)}; tiny-random builds small random-weight "
                   "components in memory (offline demo)")
    g.add_argument("--model-base", type=Path, default=Path("ckpts"),
                   help="checkpoint root; every component path below is derived from it (default: ckpts)")
    g.add_argument("--model-resolution", default="720p", choices=["540p", "720p"],
                   help="which official folder hunyuan-video-t2v-<resolution> to read (default 720p)")
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
    g.add_argument("--disable-autocast", action="store_true",
                   help="compute every layer in its weights' precision, without the official autocast "
                   "placement (default: the DiT's LayerNorm/modulate in float32 and its linears in bf16, "
                   "the VAE's norms in float32 and convolutions in fp16, as the official sampler)")
    g.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=True,
                   help="decode in overlapping spatial/temporal tiles, as the official code (default on)")
    g.add_argument("--text-len", type=whole, default=256, help="LLM tokens kept after the template (default 256)")
    g.add_argument("--hidden-state-skip-layer", type=whole, default=2, help="LLM layer counted from the end (default 2)")
    g.add_argument("--apply-final-norm", action="store_true", help="apply the LLM's final norm (official: off)")
    g.add_argument("--text-len-2", type=whole, default=77, help="CLIP tokens (default 77)")
    g.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="apply a HunyuanVideo LoRA (.safetensors in diffusers/PEFT, original-key or "
                   "ComfyUI/kohya format, or a PEFT folder) at SCALE (default 1.0); repeatable")
    g.add_argument("--lora-fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="merge LoRAs into the weights (default; FP8 layers are requantized); "
                   "--no-lora-fuse keeps them as side branches")
    for flag, value in FIXED_FLAGS.items():
        g.add_argument(flag, help=argparse.SUPPRESS)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Where and how the models run: device, attention, speed and memory options."""
    g = p.add_argument_group("speed and memory")
    g.add_argument("--device", help="device to run on (default: the available accelerator, else cpu)")
    g.add_argument("--attention", default="auto",
                   choices=["auto", "sdpa", "cudnn", "flash", "flash3", "flex", "sage"],
                   help="attention kernel (default auto: the fastest exact one for the device and dtype; "
                   "cudnn: SDPA with cuDNN first; flash (flash-attn), flash3 (FlashAttention-3, Hopper) "
                   "and sage must be installed and compute fp16/bf16 only; sage is approximate, 8-bit QK)")
    g.add_argument("--cache", default="none", choices=["none", "teacache", "first-block"],
                   help="step cache: skip the transformer blocks on steps whose input changed less than "
                   "--cache-threshold, reusing the last residual (faster, slightly different video)")
    g.add_argument("--cache-threshold", type=finite, metavar="T",
                   help="skip threshold (default: teacache 0.15, first-block 0.06; 0 never skips)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile each transformer block (regional, dynamic shapes: no recompile "
                   "per resolution); the first step includes the compile time")
    g.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode for --compile (default: default)")
    g.add_argument("--offload", choices=["none", "model", "sequential", "blocks"],
                   help="where weights live (default none): model = each component visits the device for "
                   "its stage; sequential = every layer streamed (lowest memory, slowest); blocks = K DiT "
                   "blocks on the device, the rest prefetched from pinned CPU memory (see --blocks-on-device)")
    g.add_argument("--blocks-on-device", type=whole, default=2, metavar="K",
                   help="DiT blocks resident on the device with --offload blocks (default 2)")
    g.add_argument("--use-cpu-offload", action="store_true", help="the official flag: the same as --offload model")
    g.add_argument("--fp8-matmul", action="store_true",
                   help="with --use-fp8: multiply in float8 (torch._scaled_mm with the official weight scales, "
                   "activations quantized per token); faster on float8 GPUs (sm_89+), ~3%% less accurate")
    g.add_argument("--fp8-activation-scale", choices=["token", "tensor"], default="token",
                   help="activation scales for --fp8-matmul: per token (default) or per tensor")
    g.add_argument("--ulysses-degree", type=whole, default=1, help="Ulysses sequence-parallel degree (under torchrun)")
    g.add_argument("--ring-degree", type=whole, default=1, help="Ring sequence-parallel degree (under torchrun)")


def check_fixed_flags(args: argparse.Namespace) -> None:
    """The architecture-describing official flags: their one value is noted, others refused."""
    for flag, value in FIXED_FLAGS.items():
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is None:
            continue
        if given != value:
            raise ValueError(f"{flag} {given!r}: this option describes the released architecture, "
                             f"which only has {value!r}")
        log.info("%s %s describes the fixed architecture; accepted", flag, value)


def lora_specs(args: argparse.Namespace) -> tuple:
    """``--lora PATH[:SCALE]`` flags as LoraSpecs, each file checked to exist (before loading)."""
    if not args.lora:
        return ()
    from hyvideo.dit.lora import LoraSpec

    specs = tuple(LoraSpec.parse(text) for text in args.lora)
    for spec in specs:
        if not math.isfinite(spec.scale):
            raise ValueError(f"--lora {spec.path}: scale {spec.scale} is not a finite number")
        if not spec.path.exists():
            raise ValueError(f"LoRA file not found: {spec.path} (--lora PATH[:SCALE])")
    return specs


# Flags that only act together with another one: (destination, whether it acts, what it needs).
NEEDS = (
    ("cache_threshold", lambda a: a.cache != "none", "--cache teacache or --cache first-block"),
    ("compile_mode", lambda a: a.compile, "--compile"),
    ("blocks_on_device", lambda a: a.offload == "blocks", "--offload blocks"),
    ("fp8_activation_scale", lambda a: a.fp8_matmul, "--fp8-matmul"),
    ("lora_fuse", lambda a: bool(a.lora), "--lora"),
    ("rewrite_model", lambda a: a.rewrite_endpoint, "--rewrite-endpoint"),
    *((name, lambda a: a.rewrite, "--rewrite normal|master") for name in
      ("rewrite_timeout", "rewrite_retries", "rewrite_max_tokens", "rewrite_fallback")),
)
# What --model tiny-random never reads: it builds small float32 random-weight models in memory.
TINY_UNUSED = ("model_base", "model_resolution", "dit_weight", "vae_path", "text_encoder_path",
               "text_encoder_2_path", "load_key", "use_fp8", "precision", "vae_precision",
               "text_encoder_precision", "text_encoder_precision_2", "text_len",
               "hidden_state_skip_layer", "apply_final_norm", "text_len_2")


def check_flags_used(args: argparse.Namespace) -> None:
    """Every flag given acts: one that would be ignored is refused (ValueError naming it)."""
    from hyvideo.pipeline.options import is_tiny

    given = getattr(args, "given_flags", frozenset())
    for dest, acts, needs in NEEDS:
        if dest in given and not acts(args):
            raise ValueError(f"{flag_of(dest)} has no effect without {needs}; add it or drop {flag_of(dest)}")
    if is_tiny(args.model):
        unused = [dest for dest in TINY_UNUSED if dest in given]
        if unused:
            raise ValueError(f"{flag_of(unused[0])} cannot be used with --model {args.model}, which builds small "
                             "float32 random-weight models in memory; drop it or choose a released model")


# The speed and memory flags (add_runtime_args). Checking them imports the runtime (torch and
# transformers), so a front door checks them before the paths only when one was given: a bare
# command with a missing checkpoint is told so without importing either.
RUNTIME_FLAGS = ("device", "cache", "cache_threshold", "compile", "compile_mode", "offload", "blocks_on_device",
                 "use_cpu_offload", "fp8_matmul", "fp8_activation_scale", "ulysses_degree", "ring_degree")


def runtime_flags_given(args: argparse.Namespace) -> bool:
    """A runtime flag was given, or this process runs under torchrun."""
    given = getattr(args, "given_flags", frozenset(RUNTIME_FLAGS))
    return bool(given & set(RUNTIME_FLAGS)) or world_size() > 1


def checkpoint_paths(args: argparse.Namespace):
    """The path flags as :class:`~hyvideo.checkpoints.layouts.CheckpointPaths`."""
    from hyvideo.checkpoints.layouts import CheckpointPaths
    from hyvideo.pipeline.variants import variant_spec

    return CheckpointPaths(args.model_base, args.model_resolution, args.dit_weight, args.vae_path,
                           args.text_encoder_path, args.text_encoder_2_path, args.load_key, args.use_fp8,
                           i2v="i2v" in variant_spec(args.model))


def _check_kind(flag: str, path: Path | None, *, folder: bool) -> None:
    """A path that exists must be a folder (``folder``) or a file; a missing one is reported
    with the download hint by the layout check."""
    if path is None or not path.exists():
        return
    if folder and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; give a folder")
    if not folder and path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"{flag} {path} is a folder; give the weights file (.pt or .safetensors), "
                         "or a diffusers transformer/ folder")


def check_paths_early(args: argparse.Namespace) -> None:
    """Every path flag names the right kind of thing and, for a released model, every file the
    load will read exists. Nothing here imports torch, so a wrong path is reported at once."""
    from hyvideo.checkpoints.layouts import check_files
    from hyvideo.pipeline.options import is_tiny

    _check_kind("--model-base", args.model_base, folder=True)
    _check_kind("--dit-weight", args.dit_weight, folder=False)
    for flag in ("--vae-path", "--text-encoder-path", "--text-encoder-2-path"):
        _check_kind(flag, getattr(args, flag[2:].replace("-", "_")), folder=True)
    if is_tiny(args.model):
        return
    check_files(checkpoint_paths(args))


def load_options(args: argparse.Namespace):
    """The model flags as :class:`~hyvideo.pipeline.components.LoadOptions` (checked)."""
    from hyvideo.pipeline.options import LoadOptions, Precisions, TextSettings
    from hyvideo.pipeline.variants import load_variant

    check_fixed_flags(args)
    load_variant(args.model)  # an unknown name fails here, listing the known ones
    paths = checkpoint_paths(args)
    precisions = Precisions(args.precision, args.vae_precision, args.text_encoder_precision,
                            args.text_encoder_precision_2)
    text = TextSettings(args.text_len, args.hidden_state_skip_layer, args.apply_final_norm, args.text_len_2)
    if args.attention != "auto":  # auto always runs; checking it would import torch before the paths
        check_attention(args.attention)
    return LoadOptions(args.model, paths, precisions, text, lora_specs(args), args.lora_fuse,
                       args.attention, args.vae_tiling, autocast=not args.disable_autocast)


def check_attention(backend: str) -> None:
    """A requested attention kernel that cannot run here (not installed, or this torch is too
    old) is one line, before anything loads."""
    from hyvideo.dit.attention import check_backend

    try:
        check_backend(backend)
    except RuntimeError as exc:
        raise ValueError(f"--attention {backend}: {exc}") from None


def runtime_options(args: argparse.Namespace):
    """The speed and memory flags as :class:`~hyvideo.runtime.build.RuntimeOptions` (checked)."""
    from hyvideo.runtime.build import CompileConfig, Fp8MatmulConfig, RuntimeOptions
    from hyvideo.runtime.cache import CacheConfig

    offload = _named("--blocks-on-device", offload_config, args.offload, use_cpu_offload=args.use_cpu_offload,
                     blocks_on_device=args.blocks_on_device)
    return RuntimeOptions(
        device=check_device(args.device) if args.device else None, offload=offload,
        cache=_named("--cache-threshold", CacheConfig, args.cache, args.cache_threshold),
        compile=CompileConfig(args.compile_mode) if args.compile else None,
        fp8_matmul=Fp8MatmulConfig(args.fp8_activation_scale) if args.fp8_matmul else None,
    )


def _named(flag: str, build, *args, **kwargs):
    """``build(...)``, its ValueError prefixed with ``flag`` when the message does not name one."""
    try:
        return build(*args, **kwargs)
    except ValueError as exc:
        if getattr(exc, "field", None) or str(exc).startswith("--"):
            raise
        raise ValueError(f"{flag}: {exc}") from None


def offload_config(offload: str | None = None, *, use_cpu_offload: bool = False, blocks_on_device: int = 2):
    """``--offload MODE`` and the official ``--use-cpu-offload`` (an alias of ``model``)."""
    from hyvideo.runtime.offload.config import OffloadConfig

    if use_cpu_offload and offload not in (None, "model"):
        raise ValueError(f"--use-cpu-offload means --offload model; it conflicts with --offload "
                         f"{offload}: give only one of them")
    if use_cpu_offload:
        log.info("--use-cpu-offload is --offload model")
    return OffloadConfig("model" if use_cpu_offload else (offload or "none"), blocks_on_device)


def check_device(text: str):
    """``--device`` as a torch.device that exists on this machine (ValueError otherwise)."""
    import torch

    from hyvideo import compat

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text!r} is not a device; use cpu, or the accelerator "
                         f"({compat.accelerator_type() or 'none on this machine'}) with an index") from None
    if device.type in ("cpu", "meta"):
        return device if device.type == "cpu" else _refuse_meta(text)
    if device.type != compat.accelerator_type():
        raise ValueError(f"--device {text!r}: this machine has no {device.type} device "
                         f"(available: cpu{', ' + compat.accelerator_type() if compat.accelerator_type() else ''})")
    count = compat.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {text!r}: there are {count} {device.type} devices (indices 0-{count - 1})")
    return device


def _refuse_meta(text: str):
    raise ValueError(f"--device {text!r}: the meta device holds no data; use cpu or an accelerator")


def add_rewrite_args(p: argparse.ArgumentParser) -> None:
    """The prompt-rewrite flags."""
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
    r.add_argument("--rewrite-timeout", type=finite, default=60.0, help="seconds per request (default 60)")
    r.add_argument("--rewrite-retries", type=whole, default=2,
                   help="retries after a timeout, connection error, 429 or 5xx (default 2)")
    r.add_argument("--rewrite-max-tokens", type=whole, default=512, help="longest rewrite in tokens (default 512)")
    r.add_argument("--rewrite-fallback", action="store_true",
                   help="if the rewrite fails, warn and use the original prompt (default: error)")


def rewrite_options(args: argparse.Namespace, api_key: str | None):
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
                          max_new_tokens=args.rewrite_max_tokens, api_key=api_key, device=args.device)


def check_output_folder(path: Path, flag: str) -> None:
    """Create the output folder now and check it is writable (before any model loads)."""
    import os

    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {flag} {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is not writable; choose another folder")


def world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_rank() -> bool:
    """This process is rank 0 (always, without torchrun): the one that writes files."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def check_runtime(args: argparse.Namespace, load, cfg_scale: float):
    """The speed and memory flags as RuntimeOptions, checked against ``load``, and the torchrun
    layout (None for one process). -> (runtime, parallel config)"""
    runtime = runtime_options(args)
    runtime.check(load)
    return runtime, parallel_config(args, world_size(), cfg_scale)


def parallel_config(args: argparse.Namespace, world: int, cfg_scale: float):
    """The parallel layout from the degrees and torchrun's WORLD_SIZE; None for one process.

    With ``cfg_scale`` > 1 and twice as many processes as ulysses x ring, the negative and
    positive branches run on two rank groups (CFG parallel).
    """
    from hyvideo.runtime.parallel.config import ParallelConfig, ParallelError

    sp = args.ulysses_degree * args.ring_degree
    for flag, value in (("--ulysses-degree", args.ulysses_degree), ("--ring-degree", args.ring_degree)):
        if not 1 <= value <= 1024:
            raise ParallelError(f"{flag} {value}: a degree is a process count from 1 to 1024")
    if world == 1 and sp == 1:
        return None
    return ParallelConfig(args.ulysses_degree, args.ring_degree, 2 if cfg_scale > 1 and world == 2 * sp else 1)


def check_split(config, variant, sizes) -> None:
    """Under torchrun: the degrees split every ``(frames, height, width)`` of ``sizes`` over the
    processes (ParallelError, in one line, otherwise)."""
    from hyvideo.runtime.parallel.config import check_degrees

    for video_length, height, width in sizes:
        check_degrees(config, world_size=world_size(), geometry=variant.geometry, video_length=video_length,
                      height=height, width=width)


def join_parallel(config, runtime):
    """Under torchrun: join the group on this rank's device (the rank's own unless --device
    says otherwise). -> (parallel state or None, runtime)"""
    if config is None:
        return None, runtime
    import dataclasses
    import os

    from hyvideo.runtime.build import device_for_rank

    if runtime.device is None:
        runtime = dataclasses.replace(runtime, device=device_for_rank(int(os.environ.get("LOCAL_RANK", "0"))))
    return start_parallel(config, runtime.resolved_device()), runtime


def start_parallel(config, device):
    """Join torchrun's process group (gloo on CPU, NCCL on GPUs) on this rank's device."""
    from hyvideo.runtime.parallel.groups import init_parallel

    state = init_parallel(config, device)
    if not state.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    return state
