"""Released model variants as data: one JSON file per variant in the package's ``configs/``.

Each file names the variant, its DiT configuration (official argument names) and the released
model's sampling defaults, so a bare command makes a correct video. The files are package data,
read through :mod:`importlib.resources`, so an installed wheel finds them from any directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from hyvideo.pipeline.geometry import Geometry
from hyvideo.pipeline.types import GenerationRequest, UsageError, request_from_defaults

if TYPE_CHECKING:  # imported where used: the variant names and sampling defaults are read (and the
    import torch  # command line checked) before torch is imported

    from hyvideo.dit.config import DiTConfig

PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # torch dtype names


def dtype_of(precision: str) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16`` etc.; a clear error for anything else."""
    import torch

    try:
        return getattr(torch, PRECISIONS[precision])
    except KeyError:
        raise ValueError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        ) from None


@dataclass(frozen=True)
class SamplingDefaults:
    """The released model's sampling settings: a bare command makes a correct video."""

    height: int = 720
    width: int = 1280
    video_length: int = 129
    infer_steps: int = 50
    flow_shift: float = 7.0
    flow_reverse: bool = True
    embedded_cfg_scale: float | None = 6.0
    cfg_scale: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingDefaults:
        from hyvideo.dit.config import config_from_dict

        return config_from_dict(cls, data)


@dataclass(frozen=True)
class I2VDefaults:
    """An image-to-video model's own defaults (the official ``sample_image2video.py`` flags)."""

    resolution: str = "720p"  # --i2v-resolution: the bucket set the image's size is chosen from
    stability: bool = False  # --i2v-stability: off in the official CLI (its README pairs it with
    # --flow-shift 7; the default flow shift 17 is for runs without it)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> I2VDefaults:
        from hyvideo.dit.config import config_from_dict

        return config_from_dict(cls, data)


@dataclass(frozen=True)
class ModelVariant:
    """A released model: its DiT configuration, its VAE's compression and sampling defaults.

    Image-to-video variants have ``i2v`` set and their DiT's ``i2v_condition_type``
    (``token_replace`` or ``latent_concat``); text-to-video ones have neither.
    """

    name: str
    dit: DiTConfig
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    time_compression_ratio: int = 4  # the VAE's (checked against the loaded VAE)
    spatial_compression_ratio: int = 8
    i2v: I2VDefaults | None = None

    def __post_init__(self) -> None:
        if (self.i2v is None) != (self.dit.i2v_condition_type is None):
            raise ValueError(f"model {self.name}: an image-to-video variant needs both an 'i2v' section "
                             "and dit.i2v_condition_type")

    @property
    def i2v_condition_type(self) -> str | None:
        """``token_replace`` / ``latent_concat`` for image-to-video models, else None."""
        return self.dit.i2v_condition_type

    @property
    def is_i2v(self) -> bool:
        return self.i2v is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelVariant:
        from hyvideo.dit.config import DiTConfig

        vae = data.get("vae", {})
        return cls(name=data["name"], dit=DiTConfig.from_dict(data["dit"]),
                   sampling=SamplingDefaults.from_dict(data.get("sampling", {})),
                   time_compression_ratio=vae.get("time_compression_ratio", 4),
                   spatial_compression_ratio=vae.get("spatial_compression_ratio", 8),
                   i2v=I2VDefaults.from_dict(data["i2v"]) if "i2v" in data else None)

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.time_compression_ratio, self.spatial_compression_ratio,
                        tuple(self.dit.patch_size), self.dit.heads_num)

    def request(self, **fields) -> GenerationRequest:
        """A checked request: this variant's defaults where ``fields`` gives None or nothing."""
        request = request_from_defaults(self.sampling, **fields)
        self.geometry.check_request(request)
        return request


@cache
def _variant_data() -> dict[str, dict[str, Any]]:
    """Variant name -> the parsed JSON of its file (read once per process)."""
    out = {}
    for entry in sorted(resources.files("hyvideo").joinpath("configs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            if "dit" in data and "name" in data:
                out[data["name"]] = data
    return out


def variant_names() -> list[str]:
    """Every known variant name (e.g. ``HYVideo-T/2-cfgdistill``, ``tiny-random``)."""
    return list(_variant_data())


def variant_spec(name: str) -> dict[str, Any]:
    """The raw JSON of variant ``name`` (the tiny preset keeps its other components' sizes there)."""
    data = _variant_data()
    if name not in data:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(data)}", "model")
    return data[name]


def load_variant(name: str) -> ModelVariant:
    """The variant called ``name``; a clear error lists the known names."""
    return ModelVariant.from_dict(variant_spec(name))
