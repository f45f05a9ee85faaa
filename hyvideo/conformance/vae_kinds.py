"""Conformance runners for kind ``vae`` and the VAE manifest (see FORMAT.md section 9)."""

from __future__ import annotations

from typing import Any

import torch

from hyvideo.conformance.core import Case
from hyvideo.vae import TilingConfig, build_vae, load_vae
from hyvideo.vae.autoencoder import AutoencoderKLCausal3D


def case_tiling(case: Case, vae: AutoencoderKLCausal3D) -> TilingConfig:
    """The case's tile geometry; the latent sizes it records must be the ones we derive."""
    s = case.settings
    tiling = TilingConfig(
        sample_size=int(s.get("tile_sample_min_size", vae.config.sample_size)),
        sample_tsize=int(s.get("tile_sample_min_tsize", vae.config.sample_tsize)),
        overlap=float(s.get("tile_overlap_factor", 0.25)),
    )
    derived = vae.latent_tile_sizes(tiling)
    recorded = (s.get("tile_latent_min_size", derived[0]),
                s.get("tile_latent_min_tsize", derived[1]))
    if tuple(recorded) != derived:
        raise ValueError(f"case latent tile sizes {recorded} differ from the derived {derived}")
    return tiling


def run_vae(case: Case) -> dict[str, torch.Tensor]:
    """Every output of a ``vae`` case, through the same loader and model users get."""
    vae = load_vae(case.path / "config.json", weights=case.path / "weights.safetensors",
                   dtype=torch.float32)
    tiling = case_tiling(case, vae)
    out: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        post = vae.encode(case["video"], tiling=False)
        out["posterior_mean"], out["posterior_std"] = post.mean, post.std
        out["decoded"] = vae.decode(case["posterior_mean"], tiling=False)
        post = vae.encode(case["video"], tiling=tiling)
        out["tiled_posterior_mean"], out["tiled_posterior_std"] = post.mean, post.std
        # The pipeline's decode: DiT-space latents / scaling_factor, tiling on.
        out["tiled_decoded"] = vae.decode(case["latents"] / vae.scaling_factor, tiling=tiling)
        post = vae.encode(case["image"], tiling=False)
        out["image_posterior_mean"], out["image_posterior_std"] = post.mean, post.std
        out["image_decoded"] = vae.decode(case["image_posterior_mean"], tiling=False)
    return out


def check_vae_manifest(meta: dict[str, Any]) -> list[str]:
    """Problems (empty = pass) of the full model built on the meta device vs. the manifest."""
    model = build_vae(meta["config"], device="meta")
    built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    listed = {e["key"]: tuple(e["shape"]) for e in meta["keys"]}
    problems = [f"missing from model: {k}" for k in listed if k not in built]
    problems += [f"not in manifest: {k}" for k in built if k not in listed]
    problems += [f"shape {k}: model {built[k]} != manifest {shape}"
                 for k, shape in listed.items() if k in built and built[k] != shape]
    if list(built) != list(listed) and not problems:
        problems.append("key order differs from the official state dict")
    total = sum(v.numel() for v in model.state_dict().values())
    if total != meta["total_parameters"]:
        problems.append(f"parameter count {total:,} != {meta['total_parameters']:,}")
    if "num_keys" in meta and len(built) != meta["num_keys"]:
        problems.append(f"key count {len(built)} != {meta['num_keys']}")
    return problems
