"""Causal 3D VAE ("884-16c-hy"): model, tiling and loading."""

from hyvideo.vae.autoencoder import AutoencoderKLCausal3D, LatentPosterior
from hyvideo.vae.config import VAEConfig
from hyvideo.vae.loader import build_vae, load_vae
from hyvideo.vae.tiling import TilingConfig

__all__ = [
    "AutoencoderKLCausal3D",
    "LatentPosterior",
    "TilingConfig",
    "VAEConfig",
    "build_vae",
    "load_vae",
]
