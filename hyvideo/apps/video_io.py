"""Writing results safely: mp4 with embedded settings, PNG frames, or latents.

Every output is written under a temporary name in the destination folder and then linked into
place with ``os.link``, which fails instead of replacing an existing file: a kill in the middle
leaves at most a ``.partial`` file, and nothing is ever overwritten silently.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and numpy are imported where frames are written: batch files and the
    import numpy as np  # manifest need neither, and are checked before anything heavy is imported
    import torch


FPS = 24
METADATA_KEY = "comment"  # mp4 tag that carries our JSON settings
SETTINGS_FILE = "settings.json"  # the settings of a PNG frame folder


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become None (a bare NaN is not JSON),
    paths and other objects their text, tuples lists, tensor and numpy scalars numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # tensor or numpy scalar
        return json_safe(value.item())
    return str(value)


def to_json(value: Any, **kwargs) -> str:
    """Strict JSON text of ``value`` (after :func:`json_safe`; never NaN or Infinity)."""
    return json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False, **kwargs)


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe short form of a prompt."""
    words = re.sub(r"[^\w\s-]", "", text, flags=re.UNICODE).strip().lower()
    out = re.sub(r"[\s-]+", "_", words)[:limit].strip("_")
    return out or "video"


def unique_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem{suffix}``, or ``stem_1``, ``stem_2``... if taken (never an existing path)."""
    candidate = folder / f"{stem}{suffix}"
    n = 0
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    return candidate


def _sync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk: the manifest line that follows an
    output must never describe a file a power loss could still take back."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished temporary file to ``final`` without ever replacing an existing file."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    _sync(tmp)
    while True:
        try:
            os.link(tmp, final)
            break
        except FileExistsError:  # somebody took the name meanwhile: pick the next free one
            final = unique_path(final.parent, final.stem, final.suffix)
    tmp.unlink()
    _sync(final.parent)
    return final


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[C, T, H, W] in [0, 1] -> [T, H, W, C] uint8."""
    import torch
    frames = (video.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).contiguous().cpu().numpy()


def write_mp4(video: torch.Tensor, path: Path, metadata: Mapping[str, Any] | None = None,
              fps: int = FPS) -> Path:
    """Encode [C, T, H, W] in [0, 1] as H.264 mp4 with ``metadata`` (JSON) in its comment tag.

    Returns the path actually written (a suffix is added if ``path`` exists).
    """
    import imageio_ffmpeg
    import numpy as np

    frames = to_uint8_frames(video)
    t, h, w, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    params = ["-f", "mp4", "-movflags", "+faststart"]
    if metadata:
        params += ["-metadata", f"{METADATA_KEY}={to_json(dict(metadata))}"]
    try:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=8,
            macro_block_size=1, output_params=params, ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_mp4_metadata(path: str | Path) -> dict[str, Any]:
    """The settings JSON embedded by :func:`write_mp4` (empty dict when absent)."""
    import imageio_ffmpeg

    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True, text=True, check=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(f"{METADATA_KEY}="):
            value = line.split("=", 1)[1].replace("\\=", "=").replace("\\;", ";")
            value = value.replace("\\#", "#").replace("\\\\", "\\")
            return json.loads(value)
    return {}


def read_mp4_frames(path: str | Path) -> np.ndarray:
    """[T, H, W, 3] uint8 frames of a video (for tests and checks)."""
    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]
    return np.stack(frames)


def write_frames(video: torch.Tensor, folder: Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """PNG frames ``00000.png...`` (+ ``settings.json``) in a new folder, published atomically."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        for i, frame in enumerate(to_uint8_frames(video)):
            iio.imwrite(tmp / f"{i:05d}.png", frame)
        if metadata:
            (tmp / SETTINGS_FILE).write_text(to_json(dict(metadata), indent=2), encoding="utf-8")
        for file in [*tmp.iterdir(), tmp]:
            _sync(file)
        final = folder
        while True:
            try:
                final.mkdir()  # claim the name; fails if it exists
                break
            except FileExistsError:
                final = unique_path(folder.parent, folder.name, "")
        final.rmdir()
        os.rename(tmp, final)  # renaming onto a just-freed name; the folder is complete
        _sync(final.parent)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_latents(latents: torch.Tensor, path: Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Final latents (float32) as ``.safetensors`` with the settings as string metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        meta = {"settings": to_json(dict(metadata or {}))}
        save_file({"latents": latents.float().contiguous().cpu()}, str(tmp), metadata=meta)
        return _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_output_metadata(path: str | Path) -> dict[str, Any] | None:
    """The settings embedded in an output of any type (mp4, latents, frame folder); None when
    there are none or the file cannot be read (e.g. it is not one of ours)."""
    path = Path(path)
    try:
        if path.is_dir():
            meta = json.loads((path / SETTINGS_FILE).read_text(encoding="utf-8"))
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {}).get("settings", "null"))
        elif path.suffix == ".mp4":
            meta = read_mp4_metadata(path)
        else:
            return None
    except Exception:  # noqa: BLE001 (any unreadable file simply is not a finished output of ours)
        return None
    return meta if isinstance(meta, dict) and meta else None
