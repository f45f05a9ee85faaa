"""What the nodes compute: the I2V image, text conditioning, denoising to a ComfyUI LATENT,
decoding to IMAGE.

ComfyUI conventions kept here:

* ``LATENT`` is ``{"samples": [B, 16, T', H', W']}`` in the VAE's own space (what ComfyUI's
  VAEDecode decodes and its HunyuanVideo latent format expects): our pipeline's latents divided
  by the VAE's scaling factor. For image-to-video (token_replace) frame 0 is the image's latent.
* ``IMAGE`` is ``[frames, H, W, 3]`` float32 in [0, 1] (the videos of a batch one after another);
  an I2V input image is the first frame of an ``IMAGE``.
* Progress goes through ``comfy.utils.ProgressBar`` once per denoising step; a pressed Cancel is
  checked before every step, so a run stops at the next step, and its memory is released.

The sampler and the decoder run the pipelines' own pieces (``sampling_loop``, ``denoise_latents``,
``decode``) with ComfyUI's progress and interrupt at every step. Image to video: the text node
encodes the prompt *with* the image (the LLaVA encoder sees the picture), so the image travels
with the text conditioning to the sampler, whose I2V loop encodes the image latent and holds it
in frame 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import ModelSpec, NodeError, check_interrupted, pipeline_for, progress_bar, release_memory, use_loras

LATENT_CHANNELS = 16
IMAGE_CHANNELS = (1, 3, 4)  # gray, RGB, RGBA (alpha dropped, as for an image file)


@dataclass(frozen=True)
class I2VInput:
    """What a ``HYVIDEO_I2V_IMAGE`` socket carries: the image ready for the I2V pipeline.

    ``image`` is a :class:`hyvideo.pipeline.image_input.I2VImage` (the picture the LLaVA sees,
    its bucket = the video size, the VAE input); ``stability`` mixes the image latent into the
    starting noise (``--i2v-stability``).
    """

    image: object
    resolution: str
    stability: bool

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the video this image makes."""
        return self.image.width, self.image.height


def image_to_pil(images: torch.Tensor):
    """ComfyUI IMAGE [B, H, W, C] in [0, 1] -> its first frame as an 8-bit PIL image (the bytes
    LoadImage read, recovered exactly by rounding: LoadImage stores them as value / 255)."""
    import numpy as np
    from PIL import Image

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1 \
            or images.shape[-1] not in IMAGE_CHANNELS:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise NodeError(f"image: a ComfyUI IMAGE [B, H, W, 1|3|4] is needed, got {shape}")
    first = images[0].detach().float().cpu()
    if not torch.isfinite(first).all():
        raise NodeError("image: the first frame holds NaN or infinite values")
    pixels = first.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()  # [H, W, C]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    return Image.fromarray(np.ascontiguousarray(pixels[..., 0] if mode == "L" else pixels), mode)


def image_input(images: torch.Tensor, resolution: str, stability: bool) -> I2VInput:
    """The I2V input of an IMAGE's first frame: checked, converted and bucketed at ``resolution``
    exactly as an image file given to ``--i2v-image-path`` (hyvideo.pipeline.image_input)."""
    from hyvideo.pipeline.image_input import prepare_i2v_image
    from hyvideo.pipeline.types import UsageError

    picture = image_to_pil(images)
    try:
        prepared = prepare_i2v_image(picture, resolution)
    except UsageError as exc:  # "image upload: <problem> (valid: ...)": name the socket instead
        problem = str(exc).removeprefix("image upload: ")
        raise NodeError(f"image (the first frame of the IMAGE input): {problem}") from None
    return I2VInput(prepared, resolution, bool(stability))


@dataclass(frozen=True)
class TextInput:
    """What a ``HYVIDEO_TEXT`` socket carries: the prompts and their conditioning (on the CPU).

    Text to video: ``cond`` is encoded with the video template; a 1-frame request is encoded
    again with the image template by the sampler (the template depends on the frame count).
    Image to video: ``cond`` is the prompt encoded with ``image`` (which the sampler animates).
    """

    model: ModelSpec
    prompt: str
    negative_prompt: str | None
    cond: object  # hyvideo.text.conditioning.TextConditioning
    negative: object | None
    image: I2VInput | None = None


def _check_story(spec: ModelSpec, image: I2VInput | None) -> None:
    """An image-to-video model needs the image; a text-to-video one takes none."""
    if spec.is_i2v and image is None:
        raise NodeError(f"image: model {spec.hyvideo_model} is image-to-video and encodes the prompt "
                        "with the picture: connect a HunyuanVideo I2V Image node to this node's image input")
    if not spec.is_i2v and image is not None:
        raise NodeError(f"image: model {spec.hyvideo_model} is text-to-video; load an image-to-video "
                        "variant (HYVideo-I2V, HYVideo-I2V-latent_concat, tiny-random-i2v) or "
                        "disconnect the image")


def _encode_i2v(pipe, prompt: str, negative_prompt: str | None, image: I2VInput, *, with_negative: bool):
    """(positive, negative or None) through the I2V pipeline's own ``encode_prompt`` (the LLaVA
    sees the image; the negative a black image of its size). The request is only a carrier:
    cfg 2 asks for the negative branch, the frame count is the model's default (> 1: the video
    template, like every I2V request)."""
    from hyvideo.pipeline.types import UsageError

    try:
        request = pipe.request(prompt, image.image, negative_prompt=negative_prompt,
                               cfg_scale=2.0 if with_negative else 1.0)
    except UsageError as exc:
        raise NodeError(str(exc)) from None
    return pipe.encode_prompt(request)


def encode_text(spec: ModelSpec, prompt: str, negative_prompt: str | None,
                image: I2VInput | None = None) -> TextInput:
    from hyvideo.pipeline.types import check_text

    check_text("prompt", prompt, required=True)
    negative_prompt = check_text("negative_prompt", negative_prompt or None, required=False)
    _check_story(spec, image)
    pipe = pipeline_for(spec)
    with torch.inference_mode():
        if image is not None:
            cond, negative = _encode_i2v(pipe, prompt, negative_prompt, image,
                                         with_negative=negative_prompt is not None)
        else:
            cond = pipe.encode_text([prompt], num_frames=2)
            negative = pipe.encode_text([negative_prompt], num_frames=2) if negative_prompt else None
    return TextInput(spec.load_key, prompt, negative_prompt, cond.to("cpu"),
                     negative.to("cpu") if negative is not None else None, image)


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


def _request(pipe, text: TextInput, s: SamplerSettings):
    """The checked request of these settings (an I2V request's size is its image's bucket)."""
    from hyvideo.pipeline.types import UsageError

    fields = dict(negative_prompt=text.negative_prompt, video_length=s.frames, infer_steps=s.steps,
                  seed=s.seed, flow_shift=s.flow_shift, embedded_cfg_scale=s.embedded_guidance,
                  cfg_scale=s.cfg)
    try:
        if text.image is not None:
            return pipe.request(text.prompt, text.image.image, i2v_stability=text.image.stability, **fields)
        return pipe.request(text.prompt, height=s.height, width=s.width, **fields)
    except (UsageError, ValueError) as exc:
        raise NodeError(str(exc)) from None


def _i2v_conditioning(pipe, text: TextInput, request):
    """(positive, negative) on the pipeline's device; without a negative prompt from the text
    node, real CFG encodes the official one (with a black image) here, through the pipeline."""
    cond = text.cond.to(pipe.device)
    if request.cfg_scale <= 1.0:
        return cond, None
    if text.negative is not None:
        return cond, text.negative.to(pipe.device)
    return cond, pipe.encode_negative(request)


def _denoise(pipe, text: TextInput, request, on_event) -> torch.Tensor:
    """The pipeline's own steps of ``__call__`` (same seed, same latents), reporting to ComfyUI
    at every step; image to video encodes the image latent before the loop."""
    conditioning = _i2v_conditioning if text.image is not None else _conditioning
    cond, negative = conditioning(pipe, text, request)
    check_interrupted()
    loop = pipe.sampling_loop(request)  # I2V: [1, C, 1, h, w] the VAE's mode x scaling factor, held in
    check_interrupted()
    return pipe.denoise_latents(request, cond, negative, on_event, show_progress=False, loop=loop)


def sample(spec: ModelSpec, text: TextInput, s: SamplerSettings) -> dict:
    """Denoise from the seed's noise (image to video: holding the image in frame 0); ComfyUI's
    LATENT of the result."""
    from hyvideo.pipeline.types import UsageError
    from hyvideo.runtime.build import make_cache
    from hyvideo.runtime.cache import CacheConfig

    if text.model != spec.load_key:
        raise NodeError("the text was encoded by another model than the sampler's: connect both "
                        "to the same loader")
    _check_story(spec, text.image)
    pipe = pipeline_for(spec)
    request = _request(pipe, text, s)
    try:
        cache = CacheConfig(s.step_cache, s.cache_threshold or None)
    except (UsageError, ValueError) as exc:
        raise NodeError(str(exc)) from None
    use_loras(pipe, spec.loras)
    pipe.step_cache = make_cache(cache)
    bar = progress_bar(s.steps)

    def on_event(event) -> None:  # the pipeline's "denoise" event after each step
        if bar is not None:
            bar.update_absolute(event.step, event.steps)
        check_interrupted()  # Cancel pressed during this step: stop before the next one

    try:
        with torch.inference_mode():
            latents = _denoise(pipe, text, request, on_event)
    except BaseException:
        release_memory()  # an interrupted or failed run leaves nothing on the device
        raise
    return {"samples": (latents.float() / pipe.vae.scaling_factor).cpu()}


def decode(spec: ModelSpec, latent: dict, tiling: bool) -> torch.Tensor:
    """LATENT -> IMAGE frames [N * T, H, W, 3] in [0, 1] through the pipeline's decode (which
    drops the latent_concat I2V model's first 4 decoded frames)."""
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
