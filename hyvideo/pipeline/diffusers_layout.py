"""Loading the diffusers layout of the model (see :mod:`hyvideo.checkpoints.layouts` for the paths).

The diffusers layout (``hunyuanvideo-community/HunyuanVideo``) holds the same weights under other
names, one sub-folder per component:

* ``transformer/``: ``HunyuanVideoTransformer3DModel`` config.json + ``diffusion_pytorch_model*.safetensors``
  (sharded with an index or not); keys converted by the one table in :mod:`hyvideo.checkpoints.keys`.
* ``vae/``: ``AutoencoderKLHunyuanVideo``; the official VAE's tensor keys, a diffusers-style
  config.json translated to :class:`~hyvideo.vae.VAEConfig`.
* ``text_encoder/`` + ``tokenizer/``: a ``LlamaModel`` save (keys without ``model.``).
* ``text_encoder_2/`` + ``tokenizer_2/``: a ``CLIPTextModel`` save (``text_model.*`` keys).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hyvideo.checkpoints.keys import dit_from_diffusers
from hyvideo.checkpoints.layouts import VAE_CLASS, DiffusersPaths, diffusers_paths, shard_files
from hyvideo.checkpoints.reading import CheckpointError, read_checkpoint, read_json
from hyvideo.dit.config import DiTConfig, dit_config_from_diffusers
from hyvideo.pipeline.variants import dtype_of

if TYPE_CHECKING:
    from hyvideo.pipeline.options import LoadOptions
    from hyvideo.dit.model import HYVideoDiffusionTransformer
    from hyvideo.text import TextEncoders
    from hyvideo.vae import AutoencoderKLCausal3D, VAEConfig

log = logging.getLogger(__name__)

def read_diffusers_transformer(folder: str | Path) -> tuple[DiTConfig, dict[str, torch.Tensor]]:
    """``transformer/`` -> (our DiTConfig, the state dict under official key names)."""
    folder = Path(folder)
    data = read_json(folder / "config.json")
    try:
        config = dit_config_from_diffusers(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: {exc}") from exc
    state: dict[str, torch.Tensor] = {}
    for file in shard_files(folder):
        state.update(read_checkpoint(file))
    try:
        return config, dit_from_diffusers(state)
    except KeyError as exc:
        raise CheckpointError(f"{folder}: {exc.args[0]}") from None


def load_diffusers_transformer(
    path: str | Path, *, config: DiTConfig | None = None, dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu", attention_backend: str = "sdpa",
) -> HYVideoDiffusionTransformer:
    """Load the DiT from a diffusers ``transformer/`` folder (its config.json decides the shape).

    ``config``, when given, is the configuration the caller expects; a folder describing another
    model is a CheckpointError naming the differing fields.
    """
    from hyvideo.dit.loader import dit_from_state_dict

    folder_config, state = read_diffusers_transformer(path)
    if config is not None and config != folder_config:
        diff = [f"{k} {getattr(folder_config, k)!r} (expected {getattr(config, k)!r})"
                for k in config.__dataclass_fields__ if getattr(config, k) != getattr(folder_config, k)]
        raise CheckpointError(f"{Path(path) / 'config.json'} describes another model: {'; '.join(diff)}")
    return dit_from_state_dict(state, folder_config, dtype=dtype, device=device,
                               attention_backend=attention_backend, source=str(path))


def vae_config_from_diffusers(config: dict[str, Any], source: str = "config.json") -> VAEConfig:
    """An ``AutoencoderKLHunyuanVideo`` config.json -> :class:`VAEConfig` (renames in
    :data:`hyvideo.vae.config.DIFFUSERS_NAMES`; tile sizes keep the official defaults)."""
    from hyvideo.vae import VAEConfig

    name = config.get("_class_name", VAE_CLASS)
    if name != VAE_CLASS:
        raise CheckpointError(f"{source}: _class_name {name!r}, expected {VAE_CLASS}")
    try:
        return VAEConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


def load_diffusers_vae(folder: str | Path, *, dtype: torch.dtype = torch.float16,
                       device: torch.device | str | None = None) -> AutoencoderKLCausal3D:
    """Load ``vae/`` of the diffusers layout (identical tensor keys, translated config)."""
    from hyvideo.vae import load_vae

    folder = Path(folder)
    config = vae_config_from_diffusers(read_json(folder / "config.json"), str(folder / "config.json"))
    files = shard_files(folder)
    if len(files) != 1:
        raise CheckpointError(f"{folder}: expected one VAE weight file, found {[f.name for f in files]}")
    return load_vae(config, weights=files[0], dtype=dtype, device=device)


def load_diffusers_text_encoders(paths: DiffusersPaths, opts: LoadOptions,
                                 device: torch.device | str | None) -> TextEncoders:
    """``text_encoder/`` + ``tokenizer/`` and ``text_encoder_2/`` + ``tokenizer_2/``."""
    from hyvideo.text import TextEncoders, load_clip_encoder, load_llm_encoder
    from hyvideo.text.tokenizer import load_clip_tokenizer, load_llm_tokenizer

    p, t = opts.precisions, opts.text
    llm = load_llm_encoder(
        paths.text_encoder, dtype=dtype_of(p.text_encoder_precision), device=device,
        text_len=t.text_len, hidden_state_skip_layer=t.hidden_state_skip_layer,
        apply_final_norm=t.apply_final_norm, tokenizer=load_llm_tokenizer(paths.tokenizer),
    )
    clip = load_clip_encoder(
        paths.text_encoder_2, dtype=dtype_of(p.text_encoder_precision_2), device=device,
        max_length=t.text_len_2, tokenizer=load_clip_tokenizer(paths.tokenizer_2, t.text_len_2),
    )
    return TextEncoders(llm, clip)


def load_diffusers_components(opts: LoadOptions, expected: DiTConfig | None,
                              device: torch.device | str, *, with_text: bool = True):
    """(DiT, VAE, text encoders or None) from a diffusers-layout ``opts.model_base``.

    ``--dit-weight`` may name a single file (official, prefixed or diffusers keys) instead of
    ``transformer/``; its configuration is then the model variant's (``expected``).
    """
    from hyvideo.dit.loader import load_dit

    paths = diffusers_paths(opts.paths)
    dtype = dtype_of(opts.precisions.precision)
    log.info("loading the DiT from %s (diffusers layout)", paths.transformer)
    if paths.transformer.is_dir():
        if expected is not None:
            _check_folder_config(paths.transformer, expected, opts.model)
        dit = load_diffusers_transformer(paths.transformer, dtype=dtype, device=device,
                                         attention_backend=opts.attention)
    else:
        if expected is None:
            raise CheckpointError(f"{paths.transformer}: a single DiT file needs the model variant's config")
        dit = load_dit(paths.transformer, expected, dtype=dtype, device=device, load_key=opts.paths.load_key,
                       attention_backend=opts.attention)
    log.info("loading the VAE from %s", paths.vae)
    vae = load_diffusers_vae(paths.vae, dtype=dtype_of(opts.precisions.vae_precision), device=device)
    text = None
    if with_text:
        log.info("loading the text encoders from %s and %s", paths.text_encoder, paths.text_encoder_2)
        text = load_diffusers_text_encoders(paths, opts, device)
    return dit, vae, text


def _check_folder_config(folder: Path, expected: DiTConfig, model: str) -> None:
    """A text-to-video transformer given to an image-to-video model, or the reverse (or another
    conditioning type), is a CheckpointError: the weights would load and make a wrong video.
    Any other difference from the variant (or an unreadable config.json) is a warning; the
    folder's config is used (and the load reports an unreadable one)."""
    try:
        found = dit_config_from_diffusers(read_json(folder / "config.json"))
    except ValueError:
        found = None
    if found is not None and found.i2v_condition_type != expected.i2v_condition_type:
        def what(kind):
            return f"an image-to-video ({kind}) model" if kind else "a text-to-video model"
        raise CheckpointError(f"{folder}/config.json describes {what(found.i2v_condition_type)}, but --model "
                              f"{model} is {what(expected.i2v_condition_type)}; give the matching --model or folder")
    if found != expected:
        log.warning("%s/config.json differs from the %s variant; using the folder's", folder, model)
