"""The image-to-video denoising loop (HunyuanVideo-I2V): :func:`hyvideo.pipeline.denoise.denoise`
with the image latent held in the video.

``img_latents`` [1 or B, C, 1, H, W] is the VAE posterior *mode* of the preprocessed image times
the VAE's scaling factor. Two conditioning types, as the DiT's ``config.i2v_condition_type``:

* ``token_replace`` (the current release): before every step frame 0 of the latents is set to the
  clean image latent, the DiT sees these latents (and modulates frame 0's tokens with its own
  vector), and only frames 1.. are stepped, so frame 0 of every step's latents *is* the image.
* ``latent_concat`` (the first release): the DiT's input is ``cat([latents, image latent on frame 0
  and zeros after, mask 1 on frame 0 and 0 after], dim=1)`` (33 channels); every frame is stepped.

The loop is ``denoise()``'s (with its ``hold`` and ``extra``), so classifier-free guidance,
embedded guidance, the per-step callback, the step cache and ``predict`` work exactly as there,
and the runtime's executions (offload, CFG and sequence parallelism) drive it unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from hyvideo.pipeline.denoise import Predict, StepCache, call_dit, denoise
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.pipeline.types import StepInfo
from hyvideo.text.conditioning import TextConditioning

CONDITION_TYPES = ("token_replace", "latent_concat")
STABILITY_KEEP = 0.999  # --i2v-stability: the noise's share of the starting latents


def i2v_start(noise: torch.Tensor, img_latents: torch.Tensor, *, stability: bool) -> torch.Tensor:
    """The starting latents [B, C, T, H, W] float32: the noise as it is, or with ``--i2v-stability``
    ``noise * 0.999 + img_latents * (1 - 0.999)`` on every frame. The reference takes 0.999 as a
    float32 tensor, so the image's share is float32 arithmetic: 1 - 0.99900001 = 0.00099998713
    (the conformance goldens' DiT inputs match this bit for bit)."""
    noise = noise.float()
    if not stability:
        return noise
    keep = torch.tensor(STABILITY_KEEP, dtype=torch.float32, device=noise.device)
    img = img_latents.float().to(noise.device).expand(noise.shape[0], -1, noise.shape[2], -1, -1)
    return noise * keep + img * (1 - keep)


def latent_concat_condition(img_latents: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``latent_concat``'s extra DiT channels for latents of ``shape`` [B, C, T, H, W]:
    [B, C + 1, T, H, W] = (image latent on frame 0 and zeros after it, mask 1 on frame 0 only)."""
    b, _, t, h, w = shape
    img = img_latents.float()
    cond = img.new_zeros(b, img.shape[1] + 1, t, h, w)
    cond[:, :-1, :1] = img
    cond[:, -1:, :1] = 1.0
    return cond


def with_first_frame(latents: torch.Tensor, img_latents: torch.Tensor) -> torch.Tensor:
    """``token_replace``: ``cat([img_latents, latents[:, :, 1:]], dim=2)`` (frame 0 := the image)."""
    img = img_latents.to(latents.dtype).expand(latents.shape[0], -1, -1, -1, -1)
    return torch.cat([img, latents[:, :, 1:]], dim=2)


def check_i2v_inputs(dit: torch.nn.Module, latents: torch.Tensor, img_latents: torch.Tensor,
                     condition_type: str | None) -> str:
    """The condition type to use (the DiT's own unless given), after checking the shapes."""
    own = getattr(getattr(dit, "config", None), "i2v_condition_type", None)
    kind = condition_type or own
    if kind not in CONDITION_TYPES:
        raise ValueError(f"this DiT is not an image-to-video model (i2v_condition_type {kind!r}); "
                         f"use one of {', '.join(CONDITION_TYPES)}")
    if own is not None and own != kind:
        raise ValueError(f"condition type {kind!r} given for a DiT built for {own!r}")
    if latents.ndim != 5 or latents.shape[2] < 2:
        raise ValueError(f"image-to-video needs latents [B, C, T, H, W] with T >= 2 (video_length > 1), "
                         f"got {tuple(latents.shape)}")
    b, c, _, h, w = latents.shape
    if img_latents.ndim != 5 or img_latents.shape[0] not in (1, b) or \
            tuple(img_latents.shape[1:]) != (c, 1, h, w):
        raise ValueError(f"img_latents {tuple(img_latents.shape)} do not fit latents {tuple(latents.shape)}: "
                         f"need [1 or {b}, {c}, 1, {h}, {w}]")
    return kind


def denoise_i2v(dit: torch.nn.Module, latents: torch.Tensor, schedule: FlowMatchSchedule,
                cond: TextConditioning, img_latents: torch.Tensor, *,
                condition_type: str | None = None, negative: TextConditioning | None = None,
                cfg_scale: float = 1.0, embedded_cfg_scale: float | None = 6.0,
                callback: Callable[[StepInfo], None] | None = None,
                step_cache: StepCache | None = None, predict: Predict = call_dit) -> torch.Tensor:
    """Integrate the flow from the starting latents to clean latents, holding the image in.

    Args:
        dit: the image-to-video transformer (``config.i2v_condition_type`` set).
        latents: [B, C, T, H, W] starting latents (:func:`i2v_start`), T >= 2.
        img_latents: [1 or B, C, 1, H, W] the image latent (VAE mode * scaling factor).
        condition_type: ``token_replace`` or ``latent_concat``; by default the DiT's own.
        cond / negative: text conditioning (LLaVA image+prompt states, pooled CLIP); CFG's
            negative is the negative prompt with a black image.
        The rest as :func:`hyvideo.pipeline.denoise.denoise`.
    Returns:
        [B, C, T, H, W] float32 final latents (``token_replace``: frame 0 is ``img_latents``).
    """
    kind = check_i2v_inputs(dit, latents, img_latents, condition_type)
    latents = latents.float()
    img = img_latents.float().to(latents.device)
    if kind == "latent_concat":  # every frame is stepped; the image rides in extra channels
        hold, extra = None, latent_concat_condition(img, latents.shape)
    else:  # token_replace steps frames 1.. only
        hold, extra = functools.partial(with_first_frame, img_latents=img), None
    return denoise(dit, latents, schedule, cond, negative=negative, cfg_scale=cfg_scale,
                   embedded_cfg_scale=embedded_cfg_scale, callback=callback, step_cache=step_cache,
                   predict=predict, hold=hold, extra=extra)
