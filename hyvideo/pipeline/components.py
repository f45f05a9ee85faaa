"""Loading the components a pipeline is made of, from the options grouped by concern.

:class:`LoadOptions` says which model and where its weights are (:class:`CheckpointPaths`: one
root, ``model_base``, derives every path; each can be overridden), in which precision
(:class:`Precisions`), how text is encoded (:class:`TextSettings`) and which LoRAs to merge.
Every path is checked before anything is loaded, so a missing download is reported in one line
before minutes of loading. Runtime options (offload, caches, compile, parallelism) are applied
above this layer, by :mod:`hyvideo.runtime.build`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.pipeline.types import UsageError
from hyvideo.pipeline.variants import ModelVariant, dtype_of, load_variant

log = logging.getLogger(__name__)

TINY = "tiny-random"
DOWNLOAD_HINT = ("download the official files as ckpts/README.md explains "
                 "(python scripts/download_weights.py), or run the offline demo with --model tiny-random")


@dataclass(frozen=True)
class CheckpointPaths:
    """Where the weights are (the official flag names)."""

    model_base: Path = Path("ckpts")
    model_resolution: str = "720p"  # the official folder hunyuan-video-t2v-<resolution>
    dit_weight: Path | None = None
    vae_path: Path | None = None
    text_encoder_path: Path | None = None
    text_encoder_2_path: Path | None = None
    load_key: str = "module"
    use_fp8: bool = False

    @property
    def overrides(self) -> dict[str, Path | None]:
        return {"dit_weight": self.dit_weight, "vae_path": self.vae_path,
                "text_encoder_path": self.text_encoder_path, "text_encoder_2_path": self.text_encoder_2_path}

    @property
    def all_overridden(self) -> bool:
        return all(self.overrides.values())


@dataclass(frozen=True)
class Precisions:
    """Precision per component (the official flag names)."""

    precision: str = "bf16"  # the DiT
    vae_precision: str = "fp16"
    text_encoder_precision: str = "fp16"
    text_encoder_precision_2: str = "fp16"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            try:
                dtype_of(value)
            except ValueError as exc:
                raise UsageError(f"{name.replace('_', ' ')}: {exc}", name) from None


@dataclass(frozen=True)
class TextSettings:
    """How the text encoders read a prompt (the reference's CLI defaults)."""

    text_len: int = 256
    hidden_state_skip_layer: int = 2
    apply_final_norm: bool = False
    text_len_2: int = 77

    def __post_init__(self) -> None:
        from hyvideo.pipeline.types import check_int

        check_int("text_len", self.text_len, 1, 4096)
        check_int("hidden_state_skip_layer", self.hidden_state_skip_layer, 0, 1000)
        check_int("text_len_2", self.text_len_2, 3, 77)


@dataclass(frozen=True)
class LoadOptions:
    """Which model, from where, in which precision, with which LoRAs."""

    model: str = "HYVideo-T/2-cfgdistill"
    paths: CheckpointPaths = field(default_factory=CheckpointPaths)
    precisions: Precisions = field(default_factory=Precisions)
    text: TextSettings = field(default_factory=TextSettings)
    loras: tuple = ()  # hyvideo.dit.lora.LoraSpec each
    lora_fuse: bool = True  # merge into the weights; False: switchable side branches
    attention: str = "auto"
    vae_tiling: bool = True

    def __post_init__(self) -> None:
        if self.model == TINY:  # random weights built in memory: no file is read
            given = [name for name, value in self.paths.overrides.items() if value is not None]
            given += ["use_fp8"] if self.paths.use_fp8 else []
            if given:
                raise UsageError(f"{given[0].replace('_', ' ')} cannot be used with model {TINY}, which "
                                 "builds random weights in memory; drop it or choose a released model", given[0])

    @property
    def variant(self) -> ModelVariant:
        return load_variant(self.model)


@dataclass
class Components:
    dit: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: object | None  # None on processes that do not encode text


@dataclass(frozen=True)
class ComponentPaths:
    dit: Path
    vae: Path
    text_encoder: Path
    text_encoder_2: Path


def component_paths(paths: CheckpointPaths) -> ComponentPaths:
    """Every official-layout path derived from ``model_base`` (overrides win), checked to exist."""
    base = Path(paths.model_base)
    model_dir = base / f"hunyuan-video-t2v-{paths.model_resolution}"
    name = "mp_rank_00_model_states_fp8.pt" if paths.use_fp8 else "mp_rank_00_model_states.pt"
    found = ComponentPaths(
        dit=Path(paths.dit_weight) if paths.dit_weight else model_dir / "transformers" / name,
        vae=Path(paths.vae_path) if paths.vae_path else model_dir / "vae",
        text_encoder=Path(paths.text_encoder_path) if paths.text_encoder_path else base / "text_encoder",
        text_encoder_2=(Path(paths.text_encoder_2_path) if paths.text_encoder_2_path
                        else base / "text_encoder_2"),
    )
    if not base.is_dir() and not paths.all_overridden:
        raise CheckpointError(f"model folder {base} not found: {DOWNLOAD_HINT}")
    for what, path in vars(found).items():
        if not path.exists():
            extra = " (--use-fp8 needs the official *_fp8.pt and *_fp8_map.pt files)" if (
                what == "dit" and paths.use_fp8) else ""
            raise CheckpointError(f"missing {what.replace('_', ' ')} at {path}{extra}: {DOWNLOAD_HINT}")
    return found


def check_paths(opts: LoadOptions) -> None:
    """Every file the load will read exists (CheckpointError naming the first missing one)."""
    if opts.model == TINY:
        return
    from hyvideo.pipeline.layouts import DIFFUSERS, detect_layout, diffusers_paths

    if not opts.paths.all_overridden and detect_layout(opts.paths.model_base,
                                                       opts.paths.model_resolution) == DIFFUSERS:
        diffusers_paths(opts.paths)
    else:
        component_paths(opts.paths)


def load_components(opts: LoadOptions, device: torch.device, *, with_text: bool = True) -> Components:
    """The DiT, VAE and (``with_text``) text encoders of ``opts.model`` on ``device``."""
    if opts.model == TINY:
        from hyvideo.pipeline.tiny import tiny_components

        parts = tiny_components(device, attention=opts.attention, with_text=with_text)
    else:
        parts = _load_files(opts, device, with_text)
    if opts.paths.use_fp8 and not any(getattr(m, "fp8_scale", None) is not None for m in parts.dit.modules()):
        raise CheckpointError("--use-fp8 was given but the DiT checkpoint holds no float8 weights")
    if opts.loras:
        from hyvideo.dit.lora import apply_loras

        apply_loras(parts.dit, opts.loras, fuse=opts.lora_fuse)
    return parts


def _load_files(opts: LoadOptions, device: torch.device, with_text: bool) -> Components:
    from hyvideo.pipeline.layouts import DIFFUSERS, detect_layout, load_diffusers_components

    variant = opts.variant
    if not opts.paths.all_overridden and detect_layout(opts.paths.model_base,
                                                       opts.paths.model_resolution) == DIFFUSERS:
        return Components(*load_diffusers_components(opts, variant.dit, device, with_text=with_text))
    return _load_official(opts, variant, device, with_text)


def _load_official(opts: LoadOptions, variant: ModelVariant, device: torch.device,
                   with_text: bool) -> Components:
    """(DiT, VAE, text encoders or None) from the official ``ckpts/`` layout."""
    from hyvideo.dit.loader import load_dit
    from hyvideo.text import load_text_encoders
    from hyvideo.vae import load_vae

    paths, p, t = component_paths(opts.paths), opts.precisions, opts.text
    log.info("loading the DiT from %s", paths.dit)
    dit = load_dit(paths.dit, variant.dit, dtype=dtype_of(p.precision), device=device,
                   load_key=opts.paths.load_key, attention_backend=opts.attention)
    log.info("loading the VAE from %s", paths.vae)
    vae = load_vae(paths.vae, dtype=dtype_of(p.vae_precision), device=device)
    text = None
    if with_text:
        log.info("loading the text encoders from %s and %s", paths.text_encoder, paths.text_encoder_2)
        text = load_text_encoders(
            paths.text_encoder, paths.text_encoder_2, dtype=dtype_of(p.text_encoder_precision),
            dtype_2=dtype_of(p.text_encoder_precision_2), device=device, text_len=t.text_len,
            hidden_state_skip_layer=t.hidden_state_skip_layer, apply_final_norm=t.apply_final_norm,
            text_len_2=t.text_len_2,
        )
    return Components(dit, vae, text)
