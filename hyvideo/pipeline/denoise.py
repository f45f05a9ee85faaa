"""The denoising loop: what the official pipeline's ``__call__`` does between text and VAE."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch

from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.pipeline.types import StepInfo
from hyvideo.text.conditioning import TextConditioning


class StepCache(Protocol):
    """A step cache (:mod:`hyvideo.runtime.cache`) as the loop drives it; the DiT runs it."""

    def begin(self, steps: int) -> None: ...

    def start_step(self, step: int) -> None: ...

    def end(self) -> None: ...


class Predict(Protocol):
    """One DiT evaluation of a batch; ``cfg_pair``: the batch is [negative; positive]."""

    def __call__(self, dit: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor,
                 mask: torch.Tensor, pooled: torch.Tensor, guidance: torch.Tensor | None, *,
                 cfg_pair: bool, step_cache: StepCache | None,
                 rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor: ...


def call_dit(dit, x, t, states, mask, pooled, guidance, *, cfg_pair: bool = False,
             step_cache: StepCache | None = None, **dit_kwargs) -> torch.Tensor:
    """One process: the whole batch through the DiT at once."""
    return dit(x, t, states, mask, pooled, guidance, step_cache=step_cache, **dit_kwargs)


def embedded_guidance(scale: float, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[scale] * batch`` as the reference builds it: cast to the DiT dtype, then ``* 1000``.

    Reproduced quirk: under bf16, 6.0 becomes 6016.0 (bf16 rounding of 6.0*1000 happens after
    the cast of 6.0, then the product is rounded again); the released model was sampled so.
    """
    return torch.full((batch,), float(scale), dtype=torch.float32, device=device).to(dtype) * 1000.0


def dit_guidance(dit: torch.nn.Module, scale: float | None, rows: int, device) -> torch.Tensor | None:
    """The DiT's ``guidance`` input for ``rows`` rows (None without embedded guidance)."""
    if scale is None:
        return None
    return embedded_guidance(scale, rows, getattr(dit, "dtype", torch.float32), device)


@contextmanager
def cache_generation(cache: StepCache | None, steps: int) -> Iterator[None]:
    """A generation of ``steps`` steps for ``cache``: reset at the start, emptied at the end (its
    cached residuals are as large as the image tokens; its statistics stay readable)."""
    if cache is None:
        yield
        return
    cache.begin(steps)
    try:
        yield
    finally:
        cache.end()


def _repeat_to(x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"cannot spread {x.shape[0]} prompts over {batch} videos")
    return x.repeat_interleave(batch // x.shape[0], dim=0)


def text_batch(cond: TextConditioning, negative: TextConditioning | None, batch: int,
               use_cfg: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DiT's (states, mask, pooled) for ``batch`` videos: rows [negative; positive] with CFG."""
    if use_cfg and negative is None:
        raise ValueError("cfg_scale > 1 needs a negative prompt conditioning")
    parts = [negative, cond] if use_cfg else [cond]
    states = torch.cat([_repeat_to(p.states, batch) for p in parts])
    mask = torch.cat([_repeat_to(p.mask, batch) for p in parts])
    pooled = torch.cat([_repeat_to(p.pooled, batch) for p in parts])
    return states, mask, pooled


def apply_cfg(out: torch.Tensor, cfg_scale: float, use_cfg: bool) -> torch.Tensor:
    """The velocity from a DiT output: ``u + cfg_scale * (c - u)`` of its [u; c] halves with CFG."""
    if not use_cfg:
        return out
    uncond, text = out.float().chunk(2)
    return uncond + cfg_scale * (text - uncond)


def denoise(dit: torch.nn.Module, latents: torch.Tensor, schedule: FlowMatchSchedule,
            cond: TextConditioning, *, negative: TextConditioning | None = None,
            cfg_scale: float = 1.0, embedded_cfg_scale: float | None = 6.0,
            callback: Callable[[StepInfo], None] | None = None,
            step_cache: StepCache | None = None, predict: Predict = call_dit,
            hold: Callable[[torch.Tensor], torch.Tensor] | None = None,
            extra: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate the flow from noise to clean latents.

    Args:
        dit: the transformer; called through ``predict`` (by default as
            ``dit(x, t, states, mask, pooled, guidance, step_cache=..., rope=...)``) with the RoPE
            tables of the latent grid, built once here (``dit.rope``; a sequence-parallel DiT
            keeps its own rows of them).
        latents: [B, C, T, H, W] starting noise (used as is).
        schedule: sigmas and timesteps.
        cond / negative: text conditioning, one row per prompt (repeated over videos).
        cfg_scale: real classifier-free guidance when > 1 (needs ``negative``); the DiT batch
            is then [negative; positive] and pred = u + cfg_scale * (c - u).
        embedded_cfg_scale: distilled guidance fed to the DiT (ignored by models without it).
        step_cache: reset here at the start, told each step's index, handed to every DiT call,
            emptied at the end (its statistics stay readable).
        predict: how a batch is evaluated (sequence and CFG parallelism supply their own).
        hold: applied to the latents before each DiT call and after each step (image-to-video's
            ``token_replace`` keeps the image in frame 0 so).
        extra: [B, C', T, H, W] channels concatenated after the latents on dim 1 for the DiT's
            input only (image-to-video's ``latent_concat``).
    Returns:
        [B, C, T, H, W] float32 final latents.
    """
    use_cfg = cfg_scale > 1.0
    states, mask, pooled = text_batch(cond, negative, latents.shape[0], use_cfg)
    rows = states.shape[0]
    guidance = dit_guidance(dit, embedded_cfg_scale, rows, latents.device)
    latents = latents.float()
    timesteps = schedule.timesteps.to(latents.device)
    rope = dit.rope(tuple(latents.shape[2:]), device=latents.device)  # (cos, sin) [N, head_dim]
    cache = step_cache
    with cache_generation(cache, schedule.steps):
        for k in range(schedule.steps):
            if cache is not None:
                cache.start_step(k)
            t = timesteps[k].repeat(rows)  # float32 [rows]
            if hold is not None:
                latents = hold(latents)
            x = latents if extra is None else torch.cat([latents, extra], dim=1)
            x = torch.cat([x] * 2) if use_cfg else x
            out = predict(dit, x, t, states, mask, pooled, guidance, cfg_pair=use_cfg, step_cache=cache,
                          rope=rope)
            latents = schedule.step(k, latents, apply_cfg(out, cfg_scale, use_cfg))
            if hold is not None:
                latents = hold(latents)
            if callback is not None:
                callback(StepInfo(k, schedule.steps, t, guidance, out, latents))
    return latents
