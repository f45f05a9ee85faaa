"""Reading Hugging Face style checkpoint folders (config.json + safetensors) for the text encoders.

Folders hold either ``model.safetensors`` or shards listed by ``model.safetensors.index.json``.
The model is built on the meta device; every file's keys, shapes and dtypes are checked against
it from the safetensors headers before any tensor is read. Shards are then read one at a time,
each tensor cast to the target dtype/device as it is read and assigned, so the peak memory is
about the model in its final precision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from hyvideo.checkpoints.reading import CheckpointError, check_state_dict, read_json, safetensors_files

__all__ = [
    "read_config", "weight_files", "file_dtype", "plan_weights", "stream_weights", "materialized",
]

INDEX_NAME = "model.safetensors.index.json"


def read_config(folder: Path, hint: str) -> dict:
    """``folder/config.json`` as a dict; a missing folder or file is a one-line CheckpointError."""
    if not folder.is_dir():
        raise CheckpointError(f"text encoder folder not found: {folder} ({hint})")
    return read_json(folder / "config.json", hint)


def weight_files(folder: Path, hint: str) -> list[Path]:
    """The safetensors files of ``folder``: the index's shards, else ``model.safetensors``."""
    return safetensors_files(folder, "model.safetensors", hint)


# safetensors dtype names -> torch dtype names (getattr: older torch lacks some float8 kinds).
_FILE_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "C64": "complex64", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
    "U8": "uint8", "BOOL": "bool",
}


def file_dtype(kind: str) -> torch.dtype:
    """The torch dtype of a safetensors header dtype name (``"F16"``, ``"I64"``, ...)."""
    dtype = getattr(torch, _FILE_DTYPES.get(kind, ""), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"unsupported safetensors dtype {kind}")
    return dtype


def plan_weights(files: list[Path], rename: Callable[[str], str | None]
                 ) -> tuple[list[tuple[Path, dict[str, str]]], dict[str, torch.Tensor]]:
    """Per file {file key: model key} for the keys ``rename`` keeps, and meta tensors with each
    tensor's shape and dtype as stored (read from the headers only)."""
    plan, shapes = [], {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                names = {k: n for k in handle.keys() if (n := rename(k)) is not None}
                for key, name in names.items():
                    stored = handle.get_slice(key)
                    shapes[name] = torch.empty(stored.get_shape(), device="meta",
                                               dtype=file_dtype(stored.get_dtype()))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read safetensors file {file}: {exc}") from exc
        plan.append((file, names))
    return plan, shapes


def _read_file(file: Path, names: dict[str, str], dtype: torch.dtype,
               device: torch.device | str | None) -> dict[str, torch.Tensor]:
    """``names``' tensors of ``file``, floating ones cast to ``dtype``, all on ``device``."""
    shard: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key, name in names.items():
                tensor = handle.get_tensor(key)
                cast = dtype if tensor.is_floating_point() else tensor.dtype
                shard[name] = tensor.to(device=device or "cpu", dtype=cast)
                del tensor  # the file-dtype copy goes now, not at the next read
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read safetensors file {file}: {exc}") from exc
    return shard


def stream_weights(
    model: nn.Module,
    files: list[Path],
    rename: Callable[[str], str | None],
    *,
    dtype: torch.dtype,
    device: torch.device | str | None,
    source: str,
    hint: str | None = None,
) -> None:
    """Fill the meta-built ``model`` from the tensors of ``files`` whose ``rename(key)`` is not
    None (under the new names), strictly, one file at a time.

    Keys, shapes and kinds (an integer tensor for a floating weight) of every file are checked
    first, from the headers, so a wrong folder fails before anything is read; ``hint`` is added
    to that error. Then each tensor is read, cast to ``dtype`` (floating tensors; a float16 file
    is upcast when float32 is asked for) and placed on ``device`` (default CPU); a file's tensors
    are assigned before the next file is opened. Nothing holds a second copy: the tensors read
    become the parameters.
    """
    plan, stored = plan_weights(files, rename)
    try:
        check_state_dict(model, stored, source=source)
    except CheckpointError as exc:
        if hint is None:
            raise
        raise CheckpointError(f"{exc} ({hint})") from None
    for file, names in plan:
        shard = _read_file(file, names, dtype, device)
        model.load_state_dict(shard, strict=False, assign=True)
        del shard


def materialized(model: nn.Module, what: str) -> nn.Module:
    """Check that no parameter or buffer was left on the meta device, then set eval mode."""
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{what}: tensors left on the meta device after loading: {left[:5]}")
    return model.eval().requires_grad_(False)


def seeded_random(build, config, *, seed: int, device, dtype) -> nn.Module:
    """``build(config)`` with random weights from ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(config)
    return model.to(device=device, dtype=dtype)
