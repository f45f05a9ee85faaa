"""Assembling a pipeline: from the official ``ckpts/`` layout, or the in-memory tiny preset.

One checkpoint root (``model_base``) derives every component path; each can be overridden.
Every path is checked before anything is loaded, so a missing download is reported in one line
before minutes of loading.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from hyvideo.pipeline.variants import dtype_of, load_variant, variant_spec
from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.pipeline.t2v import HunyuanVideoPipeline

log = logging.getLogger(__name__)

TINY = "tiny-random"
DOWNLOAD_HINT = ("download the official files as ckpts/README.md explains "
                 "(huggingface-cli download tencent/HunyuanVideo --local-dir ckpts, plus the two "
                 "text encoders), or run the offline demo with --model tiny-random")


def default_device() -> torch.device:
    """The current accelerator (CUDA, ROCm, XPU, MPS...) if there is one, else the CPU."""
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return torch.device(acc) if acc is not None else torch.device("cpu")


def device_for_rank(local_rank: int) -> torch.device:
    """This process's device under torchrun: accelerator ``local_rank``, or the CPU."""
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return torch.device(acc.type, local_rank) if acc is not None else torch.device("cpu")


@dataclass(frozen=True)
class PipelineOptions:
    """How to build a pipeline (the CLI's and the web demo's loading flags)."""

    model: str = "HYVideo-T/2-cfgdistill"
    model_base: Path = Path("ckpts")
    model_resolution: str = "720p"  # the official folder hunyuan-video-t2v-<resolution>
    dit_weight: Path | None = None
    vae_path: Path | None = None
    text_encoder_path: Path | None = None
    text_encoder_2_path: Path | None = None
    load_key: str = "module"
    precision: str = "bf16"
    vae_precision: str = "fp16"
    text_encoder_precision: str = "fp16"
    text_encoder_precision_2: str = "fp16"
    use_fp8: bool = False
    vae_tiling: bool = True
    use_cpu_offload: bool = False  # the official flag: an alias of offload="model"
    offload: str | None = None  # none | model | sequential | blocks (hyvideo.runtime.offload)
    blocks_on_device: int = 2  # K for offload="blocks"
    fp8_matmul: bool = False  # with use_fp8: float8 products (torch._scaled_mm)
    fp8_activation_scale: str = "token"  # token | tensor
    attention: str = "auto"
    text_len: int = 256
    hidden_state_skip_layer: int = 2
    apply_final_norm: bool = False
    text_len_2: int = 77
    device: str | None = None
    loras: tuple = ()  # hyvideo.dit.lora.LoraSpec each (--lora PATH[:SCALE])
    lora_fuse: bool = True  # merge into the weights; False: switchable side branches
    cache: str = "none"  # step cache: none | teacache | first-block (hyvideo.runtime.cache)
    cache_threshold: float | None = None  # None: the mode's suggested threshold
    compile: bool = False  # regional torch.compile of the transformer blocks
    compile_mode: str = "default"

    def resolved_device(self) -> torch.device:
        return torch.device(self.device) if self.device else default_device()

    def offload_config(self):
        from hyvideo.runtime.offload import OffloadConfig

        return OffloadConfig.from_flags(self.offload, use_cpu_offload=self.use_cpu_offload,
                                        blocks_on_device=self.blocks_on_device)

    def cache_config(self):
        from hyvideo.runtime.cache import CacheConfig

        return CacheConfig(self.cache, self.cache_threshold)

    def check(self) -> None:
        """Contradictory flags, before anything is loaded (ValueError, one line)."""
        offload = self.offload_config()
        self.cache_config()
        if self.compile and offload.mode in ("sequential", "blocks"):
            raise ValueError(f"--compile cannot be combined with --offload {offload.mode} (its hooks "
                             "move weights around each layer); use --offload model, or drop --compile")
        if self.fp8_matmul and not self.use_fp8:
            raise ValueError("--fp8-matmul needs --use-fp8 (the official FP8 checkpoint *_fp8.pt)")
        if self.fp8_activation_scale not in ("token", "tensor"):
            raise ValueError(f"fp8 activation scale must be token or tensor, got {self.fp8_activation_scale!r}")


@dataclass(frozen=True)
class ComponentPaths:
    dit: Path
    vae: Path
    text_encoder: Path
    text_encoder_2: Path


def component_paths(opts: PipelineOptions) -> ComponentPaths:
    """Every path derived from ``model_base`` (overrides win), checked to exist."""
    base = Path(opts.model_base)
    model_dir = base / f"hunyuan-video-t2v-{opts.model_resolution}"
    name = "mp_rank_00_model_states_fp8.pt" if opts.use_fp8 else "mp_rank_00_model_states.pt"
    paths = ComponentPaths(
        dit=Path(opts.dit_weight) if opts.dit_weight else model_dir / "transformers" / name,
        vae=Path(opts.vae_path) if opts.vae_path else model_dir / "vae",
        text_encoder=Path(opts.text_encoder_path) if opts.text_encoder_path else base / "text_encoder",
        text_encoder_2=Path(opts.text_encoder_2_path) if opts.text_encoder_2_path else base / "text_encoder_2",
    )
    overridden = all((opts.dit_weight, opts.vae_path, opts.text_encoder_path, opts.text_encoder_2_path))
    if not base.is_dir() and not overridden:
        raise CheckpointError(f"model folder {base} not found: {DOWNLOAD_HINT}")
    for what, path in vars(paths).items():
        if not path.exists():
            extra = " (--use-fp8 needs the official *_fp8.pt and *_fp8_map.pt files)" if (
                what == "dit" and opts.use_fp8) else ""
            raise CheckpointError(f"missing {what.replace('_', ' ')} at {path}{extra}: {DOWNLOAD_HINT}")
    return paths


def load_pipeline(opts: PipelineOptions, parallel=None) -> HunyuanVideoPipeline:
    """Load the official checkpoints (or build the tiny preset) into a ready pipeline.

    ``parallel`` (a :class:`hyvideo.runtime.parallel.ParallelState`): only rank 0 loads the text
    encoders (their output is broadcast); every rank holds the DiT and the VAE.
    """
    opts.check()
    offload = opts.offload_config()
    device = opts.resolved_device()
    if opts.model == TINY:
        pipe = tiny_random_pipeline(opts, parallel=parallel)
        apply_dit_options(pipe.dit, opts, device)
        pipe.offload = _offload(pipe.dit, pipe.vae, pipe.text_encoders, device, offload)
        return pipe
    from hyvideo.pipeline.layouts import DIFFUSERS, detect_layout, load_diffusers_components

    variant = load_variant(opts.model)
    home = offload.load_device(device)
    with_text = parallel is None or parallel.is_main
    overridden = all((opts.dit_weight, opts.vae_path, opts.text_encoder_path, opts.text_encoder_2_path))
    if not overridden and detect_layout(opts.model_base, opts.model_resolution) == DIFFUSERS:
        dit, vae, text = load_diffusers_components(opts, variant.dit, home, with_text=with_text)
    else:
        dit, vae, text = _load_official_components(opts, variant, home, with_text)
    if opts.use_fp8 and not any(getattr(m, "fp8_scale", None) is not None for m in dit.modules()):
        raise CheckpointError("--use-fp8 was given but the DiT checkpoint holds no float8 weights")
    apply_dit_options(dit, opts, device)
    return HunyuanVideoPipeline(dit, vae, text, device=device, name=variant.name,
                                defaults=variant.sampling, vae_tiling=opts.vae_tiling,
                                offload=_offload(dit, vae, text, device, offload), parallel=parallel)


def _offload(dit, vae, text, device: torch.device, config):
    """The offload wrapper for ``config`` (None for mode none: nothing to do between stages)."""
    if config.mode == "none":
        return None
    from hyvideo.runtime.offload import offload_components

    log.info(config.describe())
    parts = {"dit": dit, "vae": vae, **({"text_encoders": text} if text is not None else {})}
    return offload_components(parts, device, config)


def _load_official_components(opts: PipelineOptions, variant, home: torch.device, with_text: bool):
    """(DiT, VAE, text encoders or None) from the official ``ckpts/`` layout."""
    from hyvideo.dit.loader import load_dit
    from hyvideo.text import load_text_encoders
    from hyvideo.vae import load_vae

    paths = component_paths(opts)
    log.info("loading the DiT from %s", paths.dit)
    dit = load_dit(paths.dit, variant.dit, dtype=dtype_of(opts.precision), device=home,
                   load_key=opts.load_key, attention_backend=opts.attention)
    log.info("loading the VAE from %s", paths.vae)
    vae = load_vae(paths.vae, dtype=dtype_of(opts.vae_precision), device=home)
    text = None
    if with_text:
        log.info("loading the text encoders from %s and %s", paths.text_encoder, paths.text_encoder_2)
        text = load_text_encoders(
            paths.text_encoder, paths.text_encoder_2, dtype=dtype_of(opts.text_encoder_precision),
            dtype_2=dtype_of(opts.text_encoder_precision_2), device=home, text_len=opts.text_len,
            hidden_state_skip_layer=opts.hidden_state_skip_layer,
            apply_final_norm=opts.apply_final_norm, text_len_2=opts.text_len_2,
        )
    return dit, vae, text


def apply_dit_options(dit: torch.nn.Module, opts: PipelineOptions, device: torch.device) -> None:
    """After loading: ``opts.loras`` merged into the DiT (``lora_fuse``) or attached as
    switchable side branches; float8 products (``opts.fp8_matmul``) for the device the DiT runs
    on; the step cache (``opts.cache``); then, last, the blocks compiled (``opts.compile``)."""
    if opts.loras:
        from hyvideo.dit.lora import apply_loras

        apply_loras(dit, opts.loras, fuse=opts.lora_fuse)
    if opts.fp8_matmul:
        from hyvideo.dit.fp8 import enable_fp8_matmul, fp8_matmul_summary

        enable_fp8_matmul(dit, opts.fp8_activation_scale, device=device, dtype=dit.dtype)
        log.info(fp8_matmul_summary(dit))
    if opts.cache != "none":
        from hyvideo.runtime.cache import enable_step_cache

        cache = opts.cache_config()
        enable_step_cache(dit, cache)
        log.info("step cache %s, threshold %g: skips the transformer blocks on steps whose input "
                 "changed less than that", cache.mode, cache.threshold)
    if opts.compile:
        from hyvideo.runtime.compile import compile_blocks

        count = compile_blocks(dit, mode=opts.compile_mode)
        log.info("compiling %d transformer blocks (regional, dynamic shapes): the first step "
                 "includes the compile time", count)


def tiny_random_pipeline(opts: PipelineOptions | None = None, seed: int = 0,
                         parallel=None) -> HunyuanVideoPipeline:
    """Every component small and random, built in memory with the real structure (offline)."""
    from transformers import CLIPTextConfig, LlamaConfig

    from hyvideo.dit.loader import build_dit
    from hyvideo.text import TextEncoders, random_clip_encoder, random_llm_encoder
    from hyvideo.vae import VAEConfig, build_vae

    opts = opts or PipelineOptions(model=TINY)
    spec = variant_spec(TINY)
    variant = load_variant(TINY)
    device = opts.resolved_device()
    log.warning("model tiny-random: every weight is RANDOM; the video will be noise-like. "
                "Use the official checkpoints (ckpts/README.md) for real videos.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dit = build_dit(variant.dit, dtype=torch.float32, device=device, attention_backend=opts.attention)
        _randomize(dit)
        vae = build_vae(VAEConfig.from_dict(spec["vae"]), device=device, dtype=torch.float32)
    text = None
    if parallel is None or parallel.is_main:  # under parallelism only rank 0 encodes text
        llm_tokenizer, clip_tokenizer = _tiny_tokenizers()
        llm = random_llm_encoder(LlamaConfig(**spec["text_encoder"]), llm_tokenizer,
                                 seed=seed, device=device)
        clip = random_clip_encoder(CLIPTextConfig(**spec["text_encoder_2"]), clip_tokenizer,
                                   seed=seed, device=device)
        text = TextEncoders(llm, clip)
    return HunyuanVideoPipeline(dit, vae, text, device=device, name=TINY, defaults=variant.sampling,
                                vae_tiling=opts.vae_tiling, parallel=parallel)


@functools.cache
def _tiny_tokenizers():
    """The real llava Llama-3 and CLIP tokenizers, rebuilt offline once per process (seconds)."""
    from hyvideo.text.clip_vocab import offline_clip_tokenizer
    from hyvideo.text.tokenizer import build_llava_llama3_tokenizer, llama3_tokenizer_json

    return build_llava_llama3_tokenizer(llama3_tokenizer_json()), offline_clip_tokenizer()


def _randomize(model: torch.nn.Module, std: float = 0.05) -> None:
    """Non-degenerate random weights (PyTorch's defaults leave norms at 1 and biases tiny)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("norm.weight") else 0.0, std)
