"""Reading Hugging Face style checkpoint folders (config.json + safetensors) for the text encoders.

Folders hold either ``model.safetensors`` or shards listed by ``model.safetensors.index.json``.
Shards are read one at a time and each tensor is cast to the target dtype/device as it is read,
so the peak memory is about the model in its final precision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from hyvideo.checkpoints.reading import CheckpointError, assign_state_dict, check_state_dict, read_json, safetensors_files

__all__ = ["read_config", "weight_files", "read_weights", "assign_weights", "materialized"]

INDEX_NAME = "model.safetensors.index.json"


def read_config(folder: Path, hint: str) -> dict:
    """``folder/config.json`` as a dict; a missing folder or file is a one-line CheckpointError."""
    if not folder.is_dir():
        raise CheckpointError(f"text encoder folder not found: {folder} ({hint})")
    return read_json(folder / "config.json", hint)


def weight_files(folder: Path, hint: str) -> list[Path]:
    """The safetensors files of ``folder``: the index's shards, else ``model.safetensors``."""
    return safetensors_files(folder, "model.safetensors", hint)


def read_weights(
    files: list[Path],
    rename: Callable[[str], str | None],
    *,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> dict[str, torch.Tensor]:
    """Read the tensors of ``files`` whose ``rename(key)`` is not None, under the new names.

    Floating tensors are cast to ``dtype`` (a float16 file is upcast when float32 is asked for);
    other tensors keep their dtype. Everything lands on ``device`` (default CPU).
    """
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    name = rename(key)
                    if name is None:
                        continue
                    tensor = handle.get_tensor(key)
                    cast = dtype if tensor.is_floating_point() else tensor.dtype
                    state[name] = tensor.to(device=device or "cpu", dtype=cast)
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read safetensors file {file}: {exc}") from exc
    return state


def assign_weights(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, hint: str
) -> None:
    """Strict assign of ``state`` (already cast) into the meta-built ``model``."""
    try:
        check_state_dict(model, state, source=source)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} ({hint})") from None
    assign_state_dict(model, state, dtype_for=lambda key, tensor: tensor.dtype, source=source)


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
