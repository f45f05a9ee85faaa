"""The image-to-video story (HunyuanVideo-I2V), a sibling of :mod:`hyvideo.pipeline.t2v`:
encode the prompt with the image -> encode the image latent -> noise -> sigmas -> the I2V loop ->
VAE decode.

What differs from text to video: the LLaVA encoder sees the image with the prompt (classifier-free
guidance's negative branch sees a black image), the image picks the video size (its bucket), the
image latent (VAE posterior mode x scaling factor) is held in the video by the loop
(:func:`hyvideo.pipeline.i2v_denoise.denoise_i2v`), and ``--i2v-stability`` mixes it into the
starting noise. The rest (execution, decode, progress) is the text-to-video pipeline's.
"""

from __future__ import annotations

import torch

from hyvideo import compat
from hyvideo.pipeline.i2v_denoise import denoise_i2v, i2v_start
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.pipeline.t2v import HunyuanVideoPipeline, ProgressCallback
from hyvideo.pipeline.types import GenerationResult, I2VRequest, Progress, request_from_defaults
from hyvideo.text.conditioning import TextConditioning

# The official I2V negative prompt is the T2V one (hyvideo.text.prompts.NEGATIVE_PROMPT_I2V).
LATENT_CONCAT_DROPPED_FRAMES = 4  # the first release's decoded video starts 4 frames in


class HunyuanVideoI2VPipeline(HunyuanVideoPipeline):
    """Image-to-video: the same components, an :class:`~hyvideo.text.llava.I2VTextEncoders`
    (LLaVA with its vision tower + CLIP), and a DiT built with ``i2v_condition_type``."""

    @property
    def condition_type(self) -> str:
        return self.dit.config.i2v_condition_type

    def request(self, prompt: str, image=None, **fields) -> I2VRequest:
        """A checked request for ``image`` (an :class:`~hyvideo.pipeline.image_input.I2VImage`,
        whose bucket is the size) with this model's sampling defaults."""
        stability = fields.pop("i2v_stability", False)
        size = dict(height=image.height, width=image.width) if image is not None else {}
        base = request_from_defaults(self.defaults, prompt=prompt, **{**fields, **size})
        request = I2VRequest(**base.settings(), image=image, i2v_stability=stability)
        self.geometry.check_request(request)
        return request

    def encode_prompt(self, request: I2VRequest) -> tuple[TextConditioning, TextConditioning | None]:
        """(positive, negative): the prompt with the image; the negative (real CFG only) with a
        black image of the image's size."""
        from hyvideo.text.prompts import NEGATIVE_PROMPT_I2V

        image, frames = request.image.image, request.video_length
        cond = negative = None
        if self.is_main:
            with self.execution.stage("text_encoders"):
                cond = self.text_encoders.encode([request.prompt], image, num_frames=frames).to(self.device)
                if request.cfg_scale > 1.0:
                    negative = self.text_encoders.encode_negative(
                        [request.negative_prompt or NEGATIVE_PROMPT_I2V], image, num_frames=frames).to(self.device)
        cond = self.execution.share_text(cond, self.device)
        if request.cfg_scale > 1.0:
            negative = self.execution.share_text(negative, self.device)
        return cond, negative

    @torch.inference_mode()
    def image_latents(self, request: I2VRequest) -> torch.Tensor:
        """[1, C, 1, h, w] float32: the VAE posterior mode of the image x the scaling factor."""
        with self.execution.stage("vae"):
            dtype = next(self.vae.parameters()).dtype
            pixels = request.image.pixels.to(self.device, dtype)
            with compat.autocast(self.device, dtype, self.autocast):  # as the official encoding
                posterior = self.vae.encode(pixels, tiling=False)
            return posterior.mode().float() * self.vae.scaling_factor

    @torch.inference_mode()
    def __call__(self, request: I2VRequest, *, callback: ProgressCallback | None = None,
                 decode: bool = True, show_progress: bool = True) -> GenerationResult:
        """Generate ``request.num_videos`` videos from ``request.image``; seeds are ``seed + i``."""
        self.geometry.check_request(request)
        emit = callback or (lambda event: None)
        emit(Progress("text", 0, 1))
        cond, negative = self.encode_prompt(request)
        img_latents = self.image_latents(request)
        emit(Progress("text", 1, 1))
        seeds = [request.seed + i for i in range(request.num_videos)]
        schedule = FlowMatchSchedule.create(request.infer_steps, request.flow_shift, request.flow_reverse)
        latents = torch.cat([
            denoise_i2v(self.dit, i2v_start(noise, img_latents, stability=request.i2v_stability), schedule,
                        cond, img_latents, negative=negative, cfg_scale=request.cfg_scale,
                        embedded_cfg_scale=request.embedded_cfg_scale, callback=progress,
                        step_cache=self.step_cache, predict=self.execution.predict)
            for noise, progress in self.batches(request, seeds, schedule, cond.states.dtype, emit, show_progress)
        ])
        videos = self.decode(latents, emit, show_progress) if decode else None
        if videos is not None and self.condition_type == "latent_concat":
            videos = videos[:, :, LATENT_CONCAT_DROPPED_FRAMES:]  # as the first release's code does
        return GenerationResult(videos, latents.cpu(), seeds, request, self.run_metadata())
