"""Loading the components a pipeline is made of: the DiT, the VAE and the text encoders.

Every path is checked before anything is loaded (the front doors call
:func:`~hyvideo.checkpoints.layouts.check_files`), so a missing download is reported in one line
before minutes of loading. Runtime options (offload, caches, compile,
parallelism) are applied above this layer, by :mod:`hyvideo.runtime.build`.
"""

from __future__ import annotations

import logging

import torch

from hyvideo.checkpoints.layouts import component_paths, diffusers_paths, uses_diffusers
from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.pipeline.options import LoadOptions, is_tiny
from hyvideo.pipeline.types import Components
from hyvideo.pipeline.variants import ModelVariant, dtype_of

log = logging.getLogger(__name__)


def uses_diffusers_layout(opts: LoadOptions) -> bool:
    return uses_diffusers(opts.paths)


def load_components(opts: LoadOptions, device: torch.device, *, with_text: bool = True) -> Components:
    """The DiT, VAE and (``with_text``) text encoders of ``opts.model`` on ``device``."""
    if is_tiny(opts.model):
        from hyvideo.pipeline.tiny import tiny_components

        parts = tiny_components(device, model=opts.model, attention=opts.attention, with_text=with_text)
    else:
        parts = _load_files(opts, device, with_text)
    if opts.paths.use_fp8 and not any(getattr(m, "fp8_scale", None) is not None for m in parts.dit.modules()):
        raise CheckpointError("--use-fp8 was given but the DiT checkpoint holds no float8 weights")
    if opts.loras:
        from hyvideo.dit.lora import apply_loras

        apply_loras(parts.dit, opts.loras, fuse=opts.lora_fuse)
    parts.dit.set_autocast(opts.autocast)  # the official placement unless --disable-autocast
    return parts


def _load_files(opts: LoadOptions, device: torch.device, with_text: bool) -> Components:
    variant = opts.variant
    if not uses_diffusers_layout(opts):
        return _load_official(opts, variant, device, with_text)
    from hyvideo.pipeline.diffusers_layout import load_diffusers_components

    dit, vae, text = load_diffusers_components(opts, variant.dit, device,
                                               with_text=with_text and not variant.is_i2v)
    if with_text and variant.is_i2v:
        paths = diffusers_paths(opts.paths)
        text = load_i2v_encoders(opts, variant, device, paths.text_encoder, paths.text_encoder_2,
                                 tokenizer_folder=paths.tokenizer, processor_folder=paths.image_processor,
                                 tokenizer_2_folder=paths.tokenizer_2)
    return Components(dit, vae, text)


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
    if with_text and variant.is_i2v:
        text = load_i2v_encoders(opts, variant, device, paths.text_encoder, paths.text_encoder_2)
    elif with_text:
        log.info("loading the text encoders from %s and %s", paths.text_encoder, paths.text_encoder_2)
        text = load_text_encoders(
            paths.text_encoder, paths.text_encoder_2, dtype=dtype_of(p.text_encoder_precision),
            dtype_2=dtype_of(p.text_encoder_precision_2), device=device, text_len=t.text_len,
            hidden_state_skip_layer=t.hidden_state_skip_layer, apply_final_norm=t.apply_final_norm,
            text_len_2=t.text_len_2,
        )
    return Components(dit, vae, text)


def load_i2v_encoders(opts: LoadOptions, variant: ModelVariant, device: torch.device, llava_folder,
                      clip_folder, **folders):
    """The LLaVA (prompt + image) and CLIP encoders of an image-to-video model; ``folders``: the
    diffusers layout's separate tokenizer and image-processor folders."""
    from hyvideo.text.llava import LlavaEncodeSettings, interleave_for, load_i2v_text_encoders

    p, t = opts.precisions, opts.text
    log.info("loading the image-to-video text encoders from %s and %s", llava_folder, clip_folder)
    settings = LlavaEncodeSettings(t.text_len, t.hidden_state_skip_layer, t.apply_final_norm,
                                   interleave_for(variant.i2v_condition_type))
    return load_i2v_text_encoders(llava_folder, clip_folder, dtype=dtype_of(p.text_encoder_precision),
                                  dtype_2=dtype_of(p.text_encoder_precision_2), device=device,
                                  settings=settings, text_len_2=t.text_len_2, **folders)
