"""The denoising loop: what the official pipeline's ``__call__`` does between text and VAE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from hyvideo.text.conditioning import TextConditioning  # noqa: F401  (re-exported for callers)
from hyvideo.pipeline.scheduler import FlowMatchSchedule


class Conditioning(Protocol):
    """Text conditioning for one prompt batch: states [B, L, D], mask [B, L], pooled [B, D2]."""

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


@dataclass
class StepInfo:
    """What a per-step callback sees (the web demo's progress bar, tests, tracing)."""

    step: int  # 0-based index of the step just taken
    steps: int
    t: torch.Tensor  # [B'] the DiT's timestep input (B' = 2B with classifier-free guidance)
    guidance: torch.Tensor | None  # [B'] the DiT's guidance input
    model_output: torch.Tensor  # [B', C, T, H, W] raw DiT output
    latents: torch.Tensor  # [B, C, T, H, W] float32 latents after the step


def embedded_guidance(scale: float, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[scale] * batch`` as the reference builds it: cast to the DiT dtype, then ``* 1000``.

    Reproduced quirk: under bf16, 6.0 becomes 6016.0 (bf16 rounding of 6.0*1000 happens after
    the cast of 6.0, then the product is rounded again); the released model was sampled so.
    """
    return torch.full((batch,), float(scale), dtype=torch.float32, device=device).to(dtype) * 1000.0


def _repeat_to(x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"cannot spread {x.shape[0]} prompts over {batch} videos")
    return x.repeat_interleave(batch // x.shape[0], dim=0)


def denoise(dit: torch.nn.Module, latents: torch.Tensor, schedule: FlowMatchSchedule,
            cond: Conditioning, *, negative: Conditioning | None = None, cfg_scale: float = 1.0,
            embedded_cfg_scale: float | None = 6.0,
            callback: Callable[[StepInfo], None] | None = None,
            cfg_parallel: Callable | None = None) -> torch.Tensor:
    """Integrate the flow from noise to clean latents.

    Args:
        dit: the transformer; called as ``dit(x, t, states, mask, pooled, guidance)``.
        latents: [B, C, T, H, W] starting noise (used as is).
        schedule: sigmas and timesteps.
        cond / negative: text conditioning, one row per prompt (repeated over videos).
        cfg_scale: real classifier-free guidance when > 1 (needs ``negative``); the DiT batch
            is then [negative; positive] and pred = u + cfg_scale * (c - u).
        embedded_cfg_scale: distilled guidance fed to the DiT (ignored by models without it).
        cfg_parallel: with CFG, ``cfg_parallel(dit, x, t, states, mask, pooled, guidance)`` runs
            the two halves of the batch on two rank groups (hyvideo.runtime.parallel.CfgParallel).
    Returns:
        [B, C, T, H, W] float32 final latents.

    A step cache attached to the DiT (``dit.step_cache``, see hyvideo.runtime.cache) is reset here at
    the start, told each step's index, and emptied at the end; its ``stats`` stay readable.
    """
    batch = latents.shape[0]
    use_cfg = cfg_scale > 1.0
    if use_cfg and negative is None:
        raise ValueError("cfg_scale > 1 needs a negative prompt conditioning")
    parts = [negative, cond] if use_cfg else [cond]
    states = torch.cat([_repeat_to(p.states, batch) for p in parts])
    mask = torch.cat([_repeat_to(p.mask, batch) for p in parts])
    pooled = torch.cat([_repeat_to(p.pooled, batch) for p in parts])
    rows = states.shape[0]
    dtype = getattr(dit, "dtype", torch.float32)
    guidance = None
    if embedded_cfg_scale is not None:
        guidance = embedded_guidance(embedded_cfg_scale, rows, dtype, latents.device)

    latents = latents.float()
    timesteps = schedule.timesteps.to(latents.device)
    cache = getattr(dit, "step_cache", None)
    if cache is not None:  # with CFG parallel each rank group holds half the batch
        cache.begin(schedule.steps, cfg_group=getattr(cfg_parallel, "group", None) if use_cfg else None)
    try:
        for k in range(schedule.steps):
            if cache is not None:
                cache.start_step(k)
            t = timesteps[k].repeat(rows)  # float32 [rows]
            x = torch.cat([latents] * 2) if use_cfg else latents
            if use_cfg and cfg_parallel is not None:
                out = cfg_parallel(dit, x, t, states, mask, pooled, guidance)
            else:
                out = dit(x, t, states, mask, pooled, guidance)
            pred = out
            if use_cfg:
                uncond, text = out.float().chunk(2)
                pred = uncond + cfg_scale * (text - uncond)
            latents = schedule.step(k, latents, pred)
            if callback is not None:
                callback(StepInfo(k, schedule.steps, t, guidance, out, latents))
    finally:
        if cache is not None:
            cache.end()  # free the cached residuals (as large as the image tokens)
    return latents
