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
from hyvideo.pipeline.t2v import HunyuanVideoPipeline, ProgressCallback, SamplingLoop
from hyvideo.pipeline.types import I2VRequest, request_from_defaults
from hyvideo.text.conditioning import TextConditioning
from hyvideo.text.prompts import NEGATIVE_PROMPT_I2V

# The official I2V negative prompt is its own, shorter than the T2V one (NEGATIVE_PROMPT_I2V).
LATENT_CONCAT_DROPPED_FRAMES = 4  # the first release's decoded video starts 4 frames in


class HunyuanVideoI2VPipeline(HunyuanVideoPipeline):
    """Image-to-video: the same components, an :class:`~hyvideo.text.llava.I2VTextEncoders`
    (LLaVA with its vision tower + CLIP), and a DiT built with ``i2v_condition_type``.

    Only what differs is its own: the prompt encoded with the image (the negative with a black
    image of its size), the loop holding the image latent, and latent_concat's decoded frames."""

    @property
    def condition_type(self) -> str:
        return self.dit.config.i2v_condition_type

    def request(self, prompt: str, image=None, **fields) -> I2VRequest:
        """A checked request for ``image`` (an :class:`~hyvideo.pipeline.image_input.I2VImage`,
        whose bucket is the size) with this model's sampling defaults."""
        stability = fields.pop("i2v_stability", False)
        size = {"height": image.height, "width": image.width} if image is not None else {}
        base = request_from_defaults(self.defaults, prompt=prompt, **{**fields, **size})
        request = I2VRequest.for_image(base, image, i2v_stability=stability)
        self.geometry.check_request(request)
        return request

    def _encode_positive(self, request: I2VRequest) -> TextConditioning:
        return self.text_encoders.encode([request.prompt], request.image.image, num_frames=request.video_length)

    def _encode_negative(self, request: I2VRequest) -> TextConditioning:
        return self.text_encoders.encode_negative([request.negative_prompt or NEGATIVE_PROMPT_I2V],
                                                  request.image.image, num_frames=request.video_length)

    @torch.inference_mode()
    def image_latents(self, request: I2VRequest) -> torch.Tensor:
        """[1, C, 1, h, w] float32: the VAE posterior mode of the image x the scaling factor."""
        with self.execution.stage("vae"):
            dtype = next(self.vae.parameters()).dtype
            pixels = request.image.pixels.to(self.device, dtype)
            with compat.autocast(self.device, dtype, self.autocast):  # as the official encoding
                posterior = self.vae.encode(pixels, tiling=False)
            return posterior.mode().float() * self.vae.scaling_factor

    def sampling_loop(self, request: I2VRequest) -> SamplingLoop:
        """:func:`~hyvideo.pipeline.i2v_denoise.denoise_i2v` holding the image latent (encoded
        here, once for every batch), from the noise (mixed with it under ``i2v_stability``)."""
        img_latents = self.image_latents(request)

        def loop(dit, noise: torch.Tensor, schedule, cond: TextConditioning, **options) -> torch.Tensor:
            start = i2v_start(noise, img_latents, stability=request.i2v_stability)
            return denoise_i2v(dit, start, schedule, cond, img_latents, **options)

        return loop

    def decode(self, latents: torch.Tensor, emit: ProgressCallback | None = None,
               show_progress: bool = True) -> torch.Tensor | None:
        """The text-to-video decode; the latent_concat model's first frames dropped."""
        videos = super().decode(latents, emit, show_progress)
        if videos is not None and self.condition_type == "latent_concat":
            videos = videos[:, :, LATENT_CONCAT_DROPPED_FRAMES:]  # as the first release's code does
        return videos
