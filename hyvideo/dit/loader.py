"""Build the DiT on the meta device and load the official checkpoint into it strictly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from hyvideo.dit.config import DiTConfig
from hyvideo.checkpoints.keys import official_dit_state
from hyvideo.dit.fp8 import FP8_DTYPE, convert_to_fp8, set_fp8_scales
from hyvideo.dit.model import HYVideoDiffusionTransformer
from hyvideo.checkpoints.reading import CheckpointError, assign_state_dict, read_checkpoint, read_state_dict

# Tensors the reference keeps in float32 whatever the precision (built without factory kwargs).
FLOAT32_KEYS = ("final_layer.linear.",)


def build_dit(config: DiTConfig, *, dtype: torch.dtype = torch.bfloat16,
              device: torch.device | str = "meta", fp8: bool = False,
              attention_backend: str = "sdpa") -> HYVideoDiffusionTransformer:
    """The DiT with uninitialised (meta) or random (real device) weights."""
    model = HYVideoDiffusionTransformer(config, attention_backend=attention_backend,
                                       device=device, dtype=dtype)
    if fp8:
        convert_to_fp8(model)
    return model.eval().requires_grad_(False)


def fp8_map_path(weights: Path) -> Path:
    """The official map name: ``..._fp8.pt`` -> ``..._fp8_map.pt`` (same for .safetensors)."""
    for suffix in (weights.suffix, ".pt", ".safetensors"):
        candidate = weights.with_name(weights.stem + "_map" + suffix)
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"FP8 checkpoint {weights} needs its scale map {weights.stem}_map{weights.suffix} "
        "beside it (download both files of the official FP8 release)"
    )


def load_dit(weights: str | Path, config: DiTConfig, *, dtype: torch.dtype = torch.bfloat16,
             device: torch.device | str = "cpu", load_key: str = "module",
             fp8_map: str | Path | None = None, attention_backend: str = "sdpa",
             ) -> HYVideoDiffusionTransformer:
    """Load a DiT checkpoint file (official ``.pt`` with ``module``/``ema``, or ``.safetensors``).

    Single files in other namings load too (:func:`hyvideo.checkpoints.keys.official_dit_state`): a
    ``model.diffusion_model.``-style prefix is stripped, diffusers keys are converted.
    An FP8 checkpoint (float8 weights) is recognised from its tensors; its scale map is taken
    from ``fp8_map`` or found beside the weights under the official name.
    """
    weights = Path(weights)
    state = official_dit_state(read_state_dict(weights, keys=(load_key,)))
    scales = None
    if any(t.dtype == FP8_DTYPE for t in state.values()):
        map_file = Path(fp8_map) if fp8_map else fp8_map_path(weights)
        scales = read_checkpoint(map_file)
        if not isinstance(scales, dict):
            raise CheckpointError(f"{map_file} is not a mapping of layer names to scales")
    return dit_from_state_dict(state, config, dtype=dtype, device=device, fp8_scales=scales,
                               attention_backend=attention_backend, source=str(weights))


def dit_from_state_dict(state: Mapping[str, torch.Tensor], config: DiTConfig, *,
                        dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                        fp8_scales: Mapping[str, torch.Tensor] | None = None,
                        attention_backend: str = "sdpa", source: str = "checkpoint",
                        ) -> HYVideoDiffusionTransformer:
    """Build on the meta device and assign an official-key state dict strictly.

    Float8 tensors make an FP8 model; ``fp8_scales`` is then its map (module name -> scale).
    """
    is_fp8 = any(t.dtype == FP8_DTYPE for t in state.values())
    model = build_dit(config, dtype=dtype, device="meta", fp8=is_fp8,
                      attention_backend=attention_backend)

    def dtype_for(key: str, tensor: torch.Tensor) -> torch.dtype:
        if tensor.dtype == FP8_DTYPE:
            return FP8_DTYPE
        return torch.float32 if key.startswith(FLOAT32_KEYS) else dtype

    if is_fp8:
        expected = {f"{n}.weight" for n, m in model.named_modules() if hasattr(m, "fp8_scale")}
        got = {k for k, t in state.items() if t.dtype == FP8_DTYPE}
        if got != expected:
            raise CheckpointError(
                f"{source}: float8 tensors {sorted(got - expected)[:5]} are not FP8 layers, "
                f"or FP8 layers {sorted(expected - got)[:5]} are not float8"
            )
        if fp8_scales is None:
            raise CheckpointError(f"{source}: float8 weights need their scale map")
    assign_state_dict(model, state, device=device, dtype_for=dtype_for, source=source)
    if is_fp8:
        set_fp8_scales(model, fp8_scales, source=f"the FP8 scale map of {source}")
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{source}: tensors left uninitialised: {leftover[:5]}")
    return model
