"""What the nodes compute: text conditioning, denoising to a ComfyUI LATENT, decoding to IMAGE.

ComfyUI conventions kept here:

* ``LATENT`` is ``{"samples": [B, 16, T', H', W']}`` in the VAE's own space (what ComfyUI's
  VAEDecode decodes and its HunyuanVideo latent format expects): our pipeline's latents divided
  by the VAE's scaling factor.
* ``IMAGE`` is ``[frames, H, W, 3]`` float32 in [0, 1] (the videos of a batch one after another).
* Progress goes through ``comfy.utils.ProgressBar`` once per denoising step; a pressed Cancel is
  checked before every step, so a run stops at the next step, and its memory is released.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import ModelSpec, NodeError, check_interrupted, pipeline_for, progress_bar, release_memory, use_loras

LATENT_CHANNELS = 16


@dataclass(frozen=True)
class TextInput:
    """What a ``HYVIDEO_TEXT`` socket carries: the prompts and their conditioning (on the CPU).

    ``cond`` is encoded with the video template; a 1-frame request is encoded again with the
    image template by the sampler (the template depends on the frame count).
    """

    model: ModelSpec
    prompt: str
    negative_prompt: str | None
    cond: object  # hyvideo.text.conditioning.TextConditioning
    negative: object | None


def encode_text(spec: ModelSpec, prompt: str, negative_prompt: str | None) -> TextInput:
    from hyvideo.pipeline.types import check_text

    check_text("prompt", prompt, required=True)
    negative_prompt = check_text("negative_prompt", negative_prompt or None, required=False)
    pipe = pipeline_for(spec)
    with torch.inference_mode():
        cond = pipe.encode_text([prompt], num_frames=2).to("cpu")
        negative = pipe.encode_text([negative_prompt], num_frames=2).to("cpu") if negative_prompt else None
    return TextInput(spec.load_key, prompt, negative_prompt, cond, negative)


def _conditioning(pipe, text: TextInput, request):
    """(positive, negative) on the pipeline's device for ``request`` (negative only with CFG)."""
    from hyvideo.pipeline.types import NEGATIVE_PROMPT

    one_frame = request.video_length == 1
    cond = pipe.encode_text([text.prompt], 1) if one_frame else text.cond.to(pipe.device)
    if request.cfg_scale <= 1.0:
        return cond, None
    if one_frame or text.negative is None:
        return cond, pipe.encode_text([text.negative_prompt or NEGATIVE_PROMPT], request.video_length)
    return cond, text.negative.to(pipe.device)


@dataclass(frozen=True)
class SamplerSettings:
    width: int
    height: int
    frames: int
    steps: int
    seed: int
    flow_shift: float
    embedded_guidance: float
    cfg: float
    step_cache: str
    cache_threshold: float


def sample(spec: ModelSpec, text: TextInput, s: SamplerSettings) -> dict:
    """Denoise from the seed's noise; ComfyUI's LATENT of the result."""
    from hyvideo.pipeline.denoise import denoise
    from hyvideo.pipeline.scheduler import FlowMatchSchedule
    from hyvideo.pipeline.types import UsageError
    from hyvideo.runtime.build import make_cache
    from hyvideo.runtime.cache import CacheConfig

    if text.model != spec.load_key:
        raise NodeError("the text was encoded by another model than the sampler's: connect both "
                        "to the same loader")
    pipe = pipeline_for(spec)
    try:
        request = pipe.request(text.prompt, negative_prompt=text.negative_prompt, height=s.height,
                               width=s.width, video_length=s.frames, infer_steps=s.steps, seed=s.seed,
                               flow_shift=s.flow_shift, embedded_cfg_scale=s.embedded_guidance,
                               cfg_scale=s.cfg)
        cache = CacheConfig(s.step_cache, s.cache_threshold or None)
    except (UsageError, ValueError) as exc:
        raise NodeError(str(exc)) from None
    use_loras(pipe, spec.loras)
    pipe.step_cache = make_cache(cache)
    bar = progress_bar(s.steps)

    def on_step(info) -> None:
        if bar is not None:
            bar.update_absolute(info.step + 1, info.steps)
        check_interrupted()  # Cancel pressed during this step: stop before the next one

    try:
        with torch.inference_mode():
            cond, negative = _conditioning(pipe, text, request)
            check_interrupted()
            noise = pipe.noise(request, [request.seed], cond.states.dtype)
            schedule = FlowMatchSchedule.create(request.infer_steps, request.flow_shift, request.flow_reverse)
            with pipe.execution.stage("dit"):
                latents = denoise(pipe.dit, noise, schedule, cond, negative=negative,
                                  cfg_scale=request.cfg_scale, embedded_cfg_scale=request.embedded_cfg_scale,
                                  callback=on_step, step_cache=pipe.step_cache, predict=pipe.execution.predict)
    except BaseException:
        release_memory()  # an interrupted or failed run leaves nothing on the device
        raise
    return {"samples": (latents.float() / pipe.vae.scaling_factor).cpu()}


def decode(spec: ModelSpec, latent: dict, tiling: bool) -> torch.Tensor:
    """LATENT -> IMAGE frames [N * T, H, W, 3] in [0, 1]."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5 or samples.shape[1] != LATENT_CHANNELS:
        shape = list(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise NodeError(f"samples: a HunyuanVideo video latent [B, {LATENT_CHANNELS}, T, H, W] is needed, got {shape}")
    pipe = pipeline_for(spec)
    pipe.vae_tiling = bool(tiling)
    bar = progress_bar(samples.shape[0])

    def on_event(event) -> None:
        check_interrupted()
        if bar is not None and event.stage == "decode":
            bar.update_absolute(event.step, event.steps)

    try:
        videos = pipe.decode(samples.float() * pipe.vae.scaling_factor, on_event, show_progress=False)
    except BaseException:
        release_memory()
        raise
    n, c, t, h, w = videos.shape  # [N, 3, T, H, W]
    return videos.permute(0, 2, 3, 4, 1).reshape(n * t, h, w, c).contiguous()
