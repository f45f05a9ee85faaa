"""What a finished video is written as, with which metadata (shared by the CLI and the web demo)."""

from __future__ import annotations

import re
from pathlib import Path

from hyvideo.apps.video_io import (
    json_safe,
    slug,
    unique_path,
    write_frames,
    write_latents,
    write_mp4,
)

__all__ = ["OUTPUT_TYPES", "json_safe", "output_metadata", "output_prefix", "output_stem", "write_output"]

OUTPUT_TYPES = ("mp4", "frames", "latents")


def output_metadata(result, index: int, *, model: str, job_id: str, extra: dict | None = None) -> dict:
    """The settings of video ``index`` of ``result``, as embedded in the file and the manifest."""
    meta = {**result.request.settings(), "seed": result.seeds[index], "model": model, "id": job_id,
            "random_weights": model.startswith("tiny-random"), **result.extra, **(extra or {})}
    return json_safe(meta)


def write_output(result, index: int, folder: Path, stem: str, meta: dict, output_type: str = "mp4") -> Path:
    """Video ``index`` of ``result`` under ``folder/stem`` (a free name; never overwrites)."""
    if output_type == "latents":
        return write_latents(result.latents[index:index + 1], unique_path(folder, stem, ".safetensors"), meta)
    if output_type == "frames":
        return write_frames(result.videos[index], unique_path(folder, stem, ""), meta)
    return write_mp4(result.videos[index], unique_path(folder, stem, ".mp4"), meta)


def output_stem(job_id: str, seed: int, prompt: str, name_suffix: str = "") -> str:
    """``<id>_seed<seed>_<prompt slug><suffix>``."""
    suffix = f"_{slug(name_suffix, 40)}" if name_suffix else ""
    return f"{output_prefix(job_id)}{seed}_{slug(prompt, 40)}{suffix}"


def output_prefix(job_id: str) -> str:
    """How every output name of job ``job_id`` starts (whatever its seed): ``<id>_seed``."""
    safe_id = re.sub(r"[^\w.+-]", "_", job_id).lstrip(".") or "video"  # never a path or hidden file
    return f"{safe_id}_seed"
