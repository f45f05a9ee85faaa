"""Safe, strict checkpoint reading shared by every component.

The pattern is gpt-fast's: build the module on the meta device, read the file with mmap and
``weights_only=True`` (a pickle can never execute code), then assign the tensors strictly. Any
mismatch raises :class:`CheckpointError` naming the missing keys, unexpected keys and shape
mismatches, with counts, so a wrong file is diagnosed from the message alone.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are read: paths and JSON are checked without it
    import torch
    from torch import nn

__all__ = [
    "CheckpointError",
    "read_json",
    "safetensors_files",
    "read_checkpoint",
    "read_state_dict",
    "check_state_dict",
    "assign_state_dict",
]

_SHOW = 5  # how many keys of each kind of mismatch the error message lists


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or does not match the model."""


def _because(hint: str) -> str:
    return f" ({hint})" if hint else ""


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path, hint: str = "") -> dict:
    """A JSON file (a model's config.json, a shard index, an adapter config) as a dict; a missing,
    unreadable or unparsable file is a one-line CheckpointError naming the file, with ``hint``
    saying where the file should come from."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected the JSON file {path.name}{_because(hint)}")
    if not path.is_file():
        raise CheckpointError(f"no {path.name} in {path.parent}{_because(hint)}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"cannot parse {path}: {exc.msg} at line {exc.lineno} column {exc.colno}"
                              f"{_because(hint)}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"cannot parse {path}: not UTF-8 text{_because(hint)}") from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, huge integers, deep nesting
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise CheckpointError(f"cannot parse {path}: {reason}{_because(hint)}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}{_because(hint)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, expected an object "
                              f"{{...}}{_because(hint)}")
    return data


def safetensors_files(folder: Path, weights_name: str = "model.safetensors", hint: str = "") -> list[Path]:
    """The weights of a Hugging Face style folder: the shards listed by
    ``<weights_name>.index.json``, else ``<weights_name>``, else every ``*.safetensors``."""
    index = folder / f"{weights_name}.index.json"
    if index.is_file():
        try:
            names = sorted(set(read_json(index, hint)["weight_map"].values()))
        except (KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"cannot read the shard index {index}: no weight_map{_because(hint)}") from exc
        files = [folder / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing or not files:
            raise CheckpointError(f"{index} names shards that are missing: {missing}{_because(hint)}")
        return files
    if (folder / weights_name).is_file():
        return [folder / weights_name]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no safetensors weights ({weights_name} or a shard index) in "
                              f"{folder}{_because(hint)}")
    return files


# torch.load's generic lines around the actual cause (they also suggest weights_only=False: no)
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")


def _reason(exc: BaseException) -> str:
    """What went wrong in one short line, never empty (an EOFError from a cut-off file has no
    message; torch's messages run on for lines, the cause in the middle of them)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_BOILERPLATE)]
    text = (useful or lines or [""])[0].removeprefix("WeightsUnpickler error:").strip()
    text = text.split(". ")[0].rstrip(".")[:200]
    if isinstance(exc, EOFError):
        return f"the file ends early: it is truncated (an interrupted download?){': ' + text if text else ''}"
    return text or type(exc).__name__


def read_checkpoint(path: str | Path) -> object:
    """Read a ``.pt``/``.pth``/``.bin`` or ``.safetensors`` file without executing any code.

    ``.pt`` files are opened with ``weights_only=True`` and memory-mapped when they are in the
    zip format ``torch.save`` writes; safetensors files are read lazily by ``safetensors``.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a checkpoint file (.pt or .safetensors)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 (safetensors raises its own error types)
            raise CheckpointError(f"cannot read safetensors file {path}: {_reason(exc)}") from None
    try:
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            # Legacy (non-zip) torch.save files cannot be memory-mapped; read them normally.
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint "
            f"(weights_only=True rejected it: {_reason(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(exc)}") from None


def read_state_dict(path: str | Path, keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Read a checkpoint and unwrap the first container key of ``keys`` that it has.

    Official DiT files are ``{"module": state_dict}`` (or ``"ema"``); a flat state dict is
    returned as it is.
    """
    import torch

    obj = read_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key in keys:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    else:
        if keys and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(
                f"{path} has none of the container keys {list(keys)} "
                f"(top-level keys: {sorted(obj)[:_SHOW]})"
            )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:_SHOW]}")
    return dict(obj)


def _listing(title: str, items: list[str]) -> str:
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}"


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointError` unless keys and shapes equal the model's exactly, and every
    tensor the model holds in floating point is floating point in the file (an integer tensor
    would be cast silently into meaningless weights)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            _listing(t, items)
            for t, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches (file != model)", shapes),
            )
            if items
        ]
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}: " + "; ".join(parts)
            + ". Check that the file is the official one for this model variant."
        )
    kinds = [f"{k} ({state_dict[k].dtype})" for k, v in expected.items()
             if v.is_floating_point() and not state_dict[k].is_floating_point()]
    if kinds:
        raise CheckpointError(
            f"{source}: {_listing('tensors are not floating point', kinds)}; the model's weights are, "
            "so this is not a weights file for it (or it was saved with a wrong dtype)"
        )


def assign_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: torch.device | str | None = None,
    dtype_for: Callable[[str, torch.Tensor], torch.dtype | None] | None = None,
    source: str = "checkpoint",
) -> nn.Module:
    """Check, cast and assign ``state_dict`` into a (meta-built) ``model`` strictly.

    ``dtype_for(key, tensor)`` gives the dtype each tensor should have on the model (``None``
    keeps the file's dtype); by default each tensor takes the dtype the model was built with.
    """
    check_state_dict(model, state_dict, source=source)
    built = model.state_dict()
    ready = {}
    for key, tensor in state_dict.items():
        dtype = dtype_for(key, tensor) if dtype_for is not None else built[key].dtype
        ready[key] = tensor.to(device=device, dtype=dtype or tensor.dtype)
    model.load_state_dict(ready, strict=True, assign=True)
    return model
