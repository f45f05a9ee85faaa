"""Checkpoint layouts on disk: the official ``ckpts/`` tree, or the diffusers folder of the same model.

The official layout (one root, ``model_base``, derives every path; each can be overridden):
``hunyuan-video-t2v-<resolution>/transformers/mp_rank_00_model_states[_fp8].pt``,
``hunyuan-video-t2v-<resolution>/vae/``, ``text_encoder/`` and ``text_encoder_2/``.

The diffusers layout (``hunyuanvideo-community/HunyuanVideo``) holds the same weights under other
names, one sub-folder per component: ``transformer/`` (``HunyuanVideoTransformer3DModel``
config.json + ``diffusion_pytorch_model*.safetensors``, sharded with an index or not), ``vae/``,
``text_encoder/`` + ``tokenizer/`` (a ``LlamaModel`` save), ``text_encoder_2/`` + ``tokenizer_2/``
(a ``CLIPTextModel`` save). :func:`detect_layout` tells the two apart from markers only the
respective layout has. Nothing here loads a model: these are paths, checked to exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyvideo.checkpoints.reading import CheckpointError, safetensors_files

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
    i2v: bool = False  # the image-to-video files (hunyuan-video-i2v-*, text_encoder_i2v)

    @property
    def model_folder(self) -> str:
        """The official folder of the DiT and the VAE: hunyuan-video-{t2v|i2v}-<resolution>."""
        return official_model_folder(self.model_resolution, self.i2v)

    @property
    def text_encoder_folder(self) -> str:
        return "text_encoder_i2v" if self.i2v else "text_encoder"

    @property
    def overrides(self) -> dict[str, Path | None]:
        return {"dit_weight": self.dit_weight, "vae_path": self.vae_path,
                "text_encoder_path": self.text_encoder_path, "text_encoder_2_path": self.text_encoder_2_path}

    @property
    def all_overridden(self) -> bool:
        return all(self.overrides.values())


OFFICIAL, DIFFUSERS = "official", "diffusers"
DIFFUSERS_FOLDERS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_CLASS = "AutoencoderKLHunyuanVideo"


def official_model_folder(resolution: str, i2v: bool = False) -> str:
    return f"hunyuan-video-{'i2v' if i2v else 't2v'}-{resolution}"


def detect_layout(base: str | Path, resolution: str = "720p", i2v: bool = False) -> str:
    """``"official"`` or ``"diffusers"`` for the checkpoint root ``base``.

    diffusers: a ``transformer/`` folder or ``model_index.json``; official: the
    ``hunyuan-video-{t2v|i2v}-<resolution>/`` folder. A missing ``base`` counts as official (its loader
    reports the missing download); an existing folder with neither marker is a CheckpointError
    naming what each layout would need.
    """
    base = Path(base)
    if (base / "transformer").is_dir() or (base / "model_index.json").is_file():
        return DIFFUSERS
    folder = official_model_folder(resolution, i2v)
    if (base / folder).is_dir() or not base.is_dir():
        return OFFICIAL
    other = official_model_folder(resolution, not i2v)
    if (base / other).is_dir():
        raise CheckpointError(f"{base} holds the {'text' if i2v else 'image'}-to-video model ({other}/), "
                              f"not the {'image' if i2v else 'text'}-to-video one ({folder}/); "
                              "see ckpts/README.md")
    raise CheckpointError(
        f"{base} is neither the official layout (no {folder}/ folder) nor "
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
    image_processor: Path | None = None  # image-to-video: the LLaVA's CLIPImageProcessor


def diffusers_paths(opts: CheckpointPaths) -> DiffusersPaths:
    """Every component folder of a diffusers-layout ``model_base`` (overrides win), checked."""
    base = Path(opts.model_base)
    given = {"transformer": opts.dit_weight, "vae": opts.vae_path,
             "text_encoder": opts.text_encoder_path, "text_encoder_2": opts.text_encoder_2_path}
    folders = DIFFUSERS_FOLDERS + (("image_processor",) if opts.i2v else ())
    paths = {name: Path(given.get(name) or base / name) for name in folders}
    # An overridden text encoder folder that carries its own tokenizer files uses them.
    for model, tok, markers in (("text_encoder", "tokenizer", ("tokenizer.json",)),
                                ("text_encoder_2", "tokenizer_2", ("vocab.json", "tokenizer.json"))):
        if given[model] and any((Path(given[model]) / m).is_file() for m in markers):
            paths[tok] = Path(given[model])
    missing = [f"{name}/" for name, path in paths.items() if not path.exists()]
    if missing:
        repo = "HunyuanVideo-I2V" if opts.i2v else "HunyuanVideo"
        raise CheckpointError(f"diffusers layout at {base}: missing {', '.join(missing)} "
                              f"(download every folder of hunyuanvideo-community/{repo})")
    return DiffusersPaths(**paths)


def shard_files(folder: Path, weights_name: str = TRANSFORMER_WEIGHTS) -> list[Path]:
    """The weight files of a diffusers model folder: the index's shards, else the single file."""
    return safetensors_files(folder, weights_name)


@dataclass(frozen=True)
class ComponentPaths:
    dit: Path
    vae: Path
    text_encoder: Path
    text_encoder_2: Path


def component_paths(paths: CheckpointPaths) -> ComponentPaths:
    """Every official-layout path derived from ``model_base`` (overrides win), checked to exist."""
    base = Path(paths.model_base)
    model_dir = base / paths.model_folder
    name = "mp_rank_00_model_states_fp8.pt" if paths.use_fp8 else "mp_rank_00_model_states.pt"
    found = ComponentPaths(
        dit=Path(paths.dit_weight) if paths.dit_weight else model_dir / "transformers" / name,
        vae=Path(paths.vae_path) if paths.vae_path else model_dir / "vae",
        text_encoder=(Path(paths.text_encoder_path) if paths.text_encoder_path
                      else base / paths.text_encoder_folder),
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


def uses_diffusers(paths: CheckpointPaths) -> bool:
    """The load reads the diffusers layout: not every path is overridden and ``model_base``
    holds the diffusers folders (see :func:`detect_layout`)."""
    return not paths.all_overridden and detect_layout(paths.model_base, paths.model_resolution,
                                                      paths.i2v) == DIFFUSERS


def check_files(paths: CheckpointPaths) -> None:
    """Every file the load will read exists (CheckpointError naming the first missing one)."""
    if uses_diffusers(paths):
        diffusers_paths(paths)
    else:
        component_paths(paths)
