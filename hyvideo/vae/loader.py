"""Build the VAE on the meta device and load the official ``vae/`` folder into it strictly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hyvideo.checkpoints.reading import CheckpointError, assign_state_dict, read_state_dict
from hyvideo.vae.autoencoder import AutoencoderKLCausal3D
from hyvideo.vae.config import VAEConfig

OFFICIAL_FOLDER = "ckpts/hunyuan-video-t2v-720p/vae/"
# Weight file names looked for in a folder, in this order; else the folder's only weight file.
WEIGHT_NAMES = ("pytorch_model.pt", "diffusion_pytorch_model.safetensors", "model.safetensors",
                "weights.safetensors")
PREFIX = "vae."


def build_vae(config: VAEConfig | Mapping[str, Any], *, device: torch.device | str = "meta",
              dtype: torch.dtype = torch.float32) -> AutoencoderKLCausal3D:
    """The VAE with uninitialised (``device="meta"``) or randomly initialised weights."""
    if not isinstance(config, VAEConfig):
        config = VAEConfig.from_dict(config)
    with torch.device(device):
        model = AutoencoderKLCausal3D(config)
    return model.to(dtype).eval().requires_grad_(False)


def unwrap_vae_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's rule: if any key starts with ``vae.``, keep only those keys, unprefixed."""
    if any(k.startswith(PREFIX) for k in state):
        return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    return dict(state)


def _missing(what: str, where: Path) -> CheckpointError:
    return CheckpointError(f"{what} not found: {where} (the official VAE files config.json and "
                           f"pytorch_model.pt go in {OFFICIAL_FOLDER})")


def find_vae_files(path: str | Path) -> tuple[Path, Path]:
    """(config.json, weights file) of a VAE folder; a ``config.json`` path also works."""
    path = Path(path)
    folder = path.parent if path.suffix == ".json" else path
    config = path if path.suffix == ".json" else folder / "config.json"
    if not folder.is_dir():
        raise _missing("VAE folder", folder)
    if not config.is_file():
        raise _missing("VAE config", config)
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return config, folder / name
    candidates = sorted(p for ext in ("*.pt", "*.pth", "*.safetensors") for p in folder.glob(ext))
    if len(candidates) == 1:
        return config, candidates[0]
    if not candidates:
        raise _missing("VAE weights (pytorch_model.pt or *.safetensors)", folder)
    raise CheckpointError(f"several weight files in {folder}: {[p.name for p in candidates]}; "
                          f"pass weights= explicitly")


def load_vae(path: str | Path | VAEConfig, *, weights: str | Path | None = None,
             dtype: torch.dtype = torch.float16, device: torch.device | str | None = None
             ) -> AutoencoderKLCausal3D:
    """Load the VAE strictly.

    ``path``: the official folder (``config.json`` + ``pytorch_model.pt``, or ``.safetensors``
    weights), a ``config.json`` file, or a ``VAEConfig``; ``weights`` names the weight file
    explicitly (required with a ``VAEConfig``). The file is read with ``weights_only=True`` and
    mmap; a ``state_dict`` wrapper and a ``vae.`` key prefix are removed as the reference does.
    Every tensor is cast to ``dtype`` (float16 by default; float32/bfloat16 selectable).
    """
    if isinstance(path, VAEConfig):
        if weights is None:
            raise CheckpointError("load_vae(config) needs weights=<path to the weight file>")
        config = path
    elif weights is None:
        config_file, weights = find_vae_files(path)
        config = VAEConfig.from_json(config_file)
    else:
        config_file = Path(path) if Path(path).suffix == ".json" else Path(path) / "config.json"
        if not config_file.is_file():
            raise _missing("VAE config", config_file)
        config = VAEConfig.from_json(config_file)
    weights = Path(weights)
    if not weights.is_file():
        raise _missing("VAE weights", weights)
    state = unwrap_vae_state_dict(read_state_dict(weights, keys=("state_dict",)))
    model = build_vae(config, device="meta", dtype=dtype)
    assign_state_dict(model, state, device=device or "cpu", source=str(weights))
    return model
