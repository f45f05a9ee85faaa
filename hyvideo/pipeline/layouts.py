"""Checkpoint layouts: the official ``ckpts/`` tree, or the diffusers folder of the same model.

The diffusers layout (``hunyuanvideo-community/HunyuanVideo``) holds the same weights under other
names, one sub-folder per component:

* ``transformer/``: ``HunyuanVideoTransformer3DModel`` config.json + ``diffusion_pytorch_model*.safetensors``
  (sharded with an index or not); keys converted by the one table in :mod:`hyvideo.checkpoints.keys`.
* ``vae/``: ``AutoencoderKLHunyuanVideo``; the official VAE's tensor keys, a diffusers-style
  config.json translated to :class:`~hyvideo.vae.VAEConfig`.
* ``text_encoder/`` + ``tokenizer/``: a ``LlamaModel`` save (keys without ``model.``).
* ``text_encoder_2/`` + ``tokenizer_2/``: a ``CLIPTextModel`` save (``text_model.*`` keys).

:func:`detect_layout` tells the two apart from markers only the respective layout has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hyvideo.dit.config import DiTConfig
from hyvideo.pipeline.variants import dtype_of
from hyvideo.checkpoints.keys import dit_config_from_diffusers, dit_from_diffusers, official_dit_state
from hyvideo.checkpoints.reading import CheckpointError, read_checkpoint, read_json, safetensors_files

if TYPE_CHECKING:
    from hyvideo.pipeline.components import CheckpointPaths, LoadOptions
    from hyvideo.dit.model import HYVideoDiffusionTransformer
    from hyvideo.text import TextEncoders
    from hyvideo.vae import AutoencoderKLCausal3D, VAEConfig

log = logging.getLogger(__name__)

OFFICIAL, DIFFUSERS = "official", "diffusers"
DIFFUSERS_FOLDERS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_CLASS = "AutoencoderKLHunyuanVideo"


def official_model_folder(resolution: str) -> str:
    return f"hunyuan-video-t2v-{resolution}"


def detect_layout(base: str | Path, resolution: str = "720p") -> str:
    """``"official"`` or ``"diffusers"`` for the checkpoint root ``base``.

    diffusers: a ``transformer/`` folder or ``model_index.json``; official: the
    ``hunyuan-video-t2v-<resolution>/`` folder. A missing ``base`` counts as official (its loader
    reports the missing download); an existing folder with neither marker is a CheckpointError
    naming what each layout would need.
    """
    base = Path(base)
    if (base / "transformer").is_dir() or (base / "model_index.json").is_file():
        return DIFFUSERS
    if (base / official_model_folder(resolution)).is_dir() or not base.is_dir():
        return OFFICIAL
    raise CheckpointError(
        f"{base} is neither the official layout (no {official_model_folder(resolution)}/ folder) nor "
        f"the diffusers layout (no transformer/ folder or model_index.json); see ckpts/README.md"
    )


@dataclass(frozen=True)
class DiffusersPaths:
    transformer: Path  # the transformer/ folder, or a single DiT file (--dit-weight)
    vae: Path
    text_encoder: Path
    text_encoder_2: Path
    tokenizer: Path
    tokenizer_2: Path


def diffusers_paths(opts: CheckpointPaths) -> DiffusersPaths:
    """Every component folder of a diffusers-layout ``model_base`` (overrides win), checked."""
    base = Path(opts.model_base)
    given = {"transformer": opts.dit_weight, "vae": opts.vae_path,
             "text_encoder": opts.text_encoder_path, "text_encoder_2": opts.text_encoder_2_path}
    paths = {name: Path(given.get(name) or base / name) for name in DIFFUSERS_FOLDERS}
    # An overridden text encoder folder that carries its own tokenizer files uses them.
    for model, tok, marker in (("text_encoder", "tokenizer", "tokenizer.json"),
                               ("text_encoder_2", "tokenizer_2", "vocab.json")):
        if given[model] and (Path(given[model]) / marker).is_file():
            paths[tok] = Path(given[model])
    missing = [f"{name}/" for name, path in paths.items() if not path.exists()]
    if missing:
        raise CheckpointError(f"diffusers layout at {base}: missing {', '.join(missing)} "
                              "(download every folder of hunyuanvideo-community/HunyuanVideo)")
    return DiffusersPaths(**paths)


def shard_files(folder: Path, weights_name: str = TRANSFORMER_WEIGHTS) -> list[Path]:
    """The weight files of a diffusers model folder: the index's shards, else the single file."""
    return safetensors_files(folder, weights_name)


def read_diffusers_transformer(folder: str | Path) -> tuple[DiTConfig, dict[str, torch.Tensor]]:
    """``transformer/`` -> (our DiTConfig, the state dict under official key names)."""
    folder = Path(folder)
    try:
        config = dit_config_from_diffusers(read_json(folder / "config.json"))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
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
        if expected is not None and _differs(paths.transformer, expected):
            log.warning("%s/config.json differs from the %s variant; using the folder's", paths.transformer,
                        opts.model)
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


def _differs(folder: Path, expected: DiTConfig) -> bool:
    try:
        return dit_config_from_diffusers(read_json(folder / "config.json")) != expected
    except ValueError:
        return True  # the load reports it


__all__ = [
    "DIFFUSERS",
    "OFFICIAL",
    "DiffusersPaths",
    "detect_layout",
    "diffusers_paths",
    "load_diffusers_components",
    "load_diffusers_transformer",
    "load_diffusers_vae",
    "official_dit_state",
    "read_diffusers_transformer",
    "vae_config_from_diffusers",
]
