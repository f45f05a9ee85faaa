"""The text-to-video story: encode text -> noise -> sigmas -> denoising loop -> VAE decode.

Built once from loaded components (:func:`hyvideo.pipeline.components.load_components`, or the
in-memory ``tiny-random`` preset), then called per request. How the stages run (offloading,
sequence and CFG parallelism) is its :class:`~hyvideo.pipeline.execution.Execution`'s business.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from hyvideo import compat
from hyvideo.dit.fp8 import fp8_matmul_report
from hyvideo.pipeline.denoise import StepCache, denoise
from hyvideo.pipeline.execution import Execution
from hyvideo.pipeline.geometry import Geometry
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.pipeline.types import (
    NEGATIVE_PROMPT,
    GenerationRequest,
    GenerationResult,
    Progress,
    StepInfo,
    request_from_defaults,
)
from hyvideo.pipeline.variants import SamplingDefaults
from hyvideo.text.conditioning import TextConditioning

ProgressCallback = Callable[[Progress], None]
SamplingLoop = Callable[..., torch.Tensor]  # denoise()'s signature: (dit, noise, schedule, cond, **options)


def video_seeds(request: GenerationRequest) -> list[int]:
    """The seed of each video of ``request``: ``seed + i``."""
    return [request.seed + i for i in range(request.num_videos)]


def draw_noise(shape: tuple[int, ...], seeds: list[int], device: torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    """One generator per video seeded ``seed``, drawn on ``device`` in ``dtype`` (the text
    encoder's dtype), item by item: how the official pipeline draws its starting latents."""
    noise = [
        torch.randn((1, *shape), generator=torch.Generator(device).manual_seed(s), device=device,
                    dtype=dtype)
        for s in seeds
    ]
    return torch.cat(noise).float()


class StepProgress:
    """The per-step callback of the loop: a terminal progress bar and the caller's events."""

    def __init__(self, steps: int, emit: ProgressCallback, show: bool):
        self.emit = emit
        self.bar = tqdm(total=steps, desc="denoising", disable=not show, leave=False)

    def __call__(self, info: StepInfo) -> None:
        self.bar.update(1)
        self.emit(Progress("denoise", info.step + 1, info.steps, info))


class HunyuanVideoPipeline:
    """Text encoders, DiT and VAE wired together; ``execution`` decides where each stage runs."""

    def __init__(self, dit, vae, text_encoders, *, device: torch.device, name: str,
                 defaults: SamplingDefaults, geometry: Geometry, vae_tiling: bool = True,
                 autocast: bool = True, execution: Execution | None = None,
                 step_cache: StepCache | None = None):
        self.dit, self.vae, self.text_encoders = dit, vae, text_encoders
        self.device = torch.device(device)
        self.name = name
        self.defaults = defaults
        self.geometry = geometry
        self.vae_tiling = vae_tiling
        self.autocast = autocast  # the VAE under autocast in its precision, as the official sampler
        self.execution = execution or Execution()
        self.step_cache = step_cache
        if (vae.time_compression_ratio, vae.spatial_compression_ratio) != (
                geometry.time_compression_ratio, geometry.spatial_compression_ratio):
            raise ValueError(f"the VAE compresses {vae.time_compression_ratio}x in time and "
                             f"{vae.spatial_compression_ratio}x in space, but model {name} expects "
                             f"{geometry.time_compression_ratio}x and {geometry.spatial_compression_ratio}x")

    @property
    def is_main(self) -> bool:
        """Whether this process writes outputs (always, without parallelism)."""
        return self.execution.is_main

    def request(self, prompt: str, **fields) -> GenerationRequest:
        """A checked request with this model's sampling defaults."""
        request = request_from_defaults(self.defaults, prompt=prompt, **fields)
        self.geometry.check_request(request)
        return request

    def encode_text(self, prompts: list[str], num_frames: int) -> TextConditioning:
        """Text conditioning on this pipeline's device, computed by the main process."""
        return self._encode_shared([lambda: self.text_encoders.encode(prompts, num_frames=num_frames)])[0]

    def encode_prompt(self, request: GenerationRequest) -> tuple[TextConditioning, TextConditioning | None]:
        """(positive, negative) conditioning; the negative only with real CFG (cfg_scale > 1).
        Both are encoded in one text-encoder stage (offloading moves the encoders once)."""
        with_negative = request.cfg_scale > 1.0  # like the official predict(): else no negative branch
        encoders = [self._encode_positive, self._encode_negative][:1 + with_negative]
        conds = self._encode_shared([functools.partial(encode, request) for encode in encoders])
        return conds[0], conds[1] if with_negative else None

    def encode_negative(self, request: GenerationRequest) -> TextConditioning:
        """The negative conditioning alone (``request.negative_prompt`` or the official one)."""
        return self._encode_shared([functools.partial(self._encode_negative, request)])[0]

    def _encode_positive(self, request: GenerationRequest) -> TextConditioning:
        return self.text_encoders.encode([request.prompt], num_frames=request.video_length)

    def _encode_negative(self, request: GenerationRequest) -> TextConditioning:
        return self.text_encoders.encode([request.negative_prompt or NEGATIVE_PROMPT],
                                         num_frames=request.video_length)

    def _encode_shared(self, encoders: list[Callable[[], TextConditioning]]) -> list[TextConditioning]:
        """Each encoder's conditioning on this pipeline's device: computed by the main process
        inside one text-encoder stage, then shared with the other processes in the same order."""
        conds: list[TextConditioning | None] = [None] * len(encoders)
        if self.is_main:
            with self.execution.stage("text_encoders"):
                conds = [encode().to(self.device) for encode in encoders]
        return [self.execution.share_text(cond, self.device) for cond in conds]

    @torch.inference_mode()
    def __call__(self, request: GenerationRequest, *, callback: ProgressCallback | None = None,
                 decode: bool = True, show_progress: bool = True) -> GenerationResult:
        """Generate ``request.num_videos`` videos; seeds are ``seed + i``."""
        self.geometry.check_request(request)
        emit = callback or (lambda event: None)
        emit(Progress("text", 0, 1))
        cond, negative = self.encode_prompt(request)
        loop = self.sampling_loop(request)
        emit(Progress("text", 1, 1))
        latents = self.denoise_latents(request, cond, negative, emit, show_progress, loop=loop)
        videos = self.decode(latents, emit, show_progress) if decode else None
        return GenerationResult(videos, latents.cpu(), video_seeds(request), request, self.run_metadata())

    def sampling_loop(self, request: GenerationRequest) -> SamplingLoop:
        """The denoising loop for ``request``: :func:`~hyvideo.pipeline.denoise.denoise` (the
        image-to-video pipeline's holds its image latent, encoded here)."""
        return denoise

    @torch.inference_mode()
    def denoise_latents(self, request: GenerationRequest, cond: TextConditioning,
                        negative: TextConditioning | None, emit: ProgressCallback | None = None,
                        show_progress: bool = True, *, loop: SamplingLoop | None = None) -> torch.Tensor:
        """Final latents [num_videos, C, T', H', W'] float32 of ``request`` from its conditioning,
        one DiT batch at a time; ``emit`` gets a ``denoise`` event per step; ``loop``: this
        request's :meth:`sampling_loop` if already made."""
        emit = emit or (lambda event: None)
        loop = loop or self.sampling_loop(request)
        schedule = FlowMatchSchedule.create(request.infer_steps, request.flow_shift, request.flow_reverse)
        seeds = video_seeds(request)
        return torch.cat([
            loop(self.dit, noise, schedule, cond, negative=negative, cfg_scale=request.cfg_scale,
                 embedded_cfg_scale=request.embedded_cfg_scale, callback=progress,
                 step_cache=self.step_cache, predict=self.execution.predict)
            for noise, progress in self.batches(request, seeds, schedule, cond.states.dtype, emit, show_progress)
        ])

    def batches(self, request: GenerationRequest, seeds: list[int], schedule: FlowMatchSchedule,
                dtype: torch.dtype, emit: ProgressCallback, show_progress: bool):
        """(starting noise, step callback) for each DiT batch of ``request.batch_size`` videos; the
        loop body runs inside the DiT's stage (where offloading puts the DiT on the device)."""
        for start in range(0, len(seeds), request.batch_size):
            noise = self.noise(request, seeds[start:start + request.batch_size], dtype)
            progress = StepProgress(schedule.steps, emit, show_progress)
            try:  # a cancel or an error in the loop closes this generator at the yield
                with self.execution.stage("dit"):
                    yield noise, progress
            finally:
                progress.bar.close()

    def noise(self, request: GenerationRequest, seeds: list[int], dtype: torch.dtype) -> torch.Tensor:
        """The starting latents [len(seeds), C, T', H', W'] for ``request``."""
        latent_thw = self.geometry.latent_shape(request.video_length, request.height, request.width)
        return draw_noise((self.dit.config.out_channels, *latent_thw), seeds, self.device, dtype)

    def run_metadata(self) -> dict:
        """What the last generation's runtime options did (the step cache's skipped steps; what
        float8 matmul runs and any fallback it took)."""
        meta = {"cache": self.step_cache.metadata()} if self.step_cache is not None else {}
        fp8_matmul = fp8_matmul_report(self.dit)
        if fp8_matmul is not None:
            meta["fp8_matmul"] = fp8_matmul
        return meta

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, emit: ProgressCallback | None = None,
               show_progress: bool = True) -> torch.Tensor | None:
        """Final latents [N, 16, T', H', W'] -> videos [N, 3, T, H, W] in [0, 1] on CPU (None on
        processes that do not hold the result)."""
        emit = emit or (lambda event: None)
        out = []
        with self.execution.stage("vae"):
            dtype = next(self.vae.parameters()).dtype
            for i in tqdm(range(latents.shape[0]), desc="decoding", disable=not show_progress, leave=False):
                emit(Progress("decode", i, latents.shape[0]))
                z = latents[i:i + 1].to(self.device, dtype) / self.vae.scaling_factor
                with compat.autocast(self.device, dtype, self.autocast):  # norms float32, convs fp16
                    pixels = self.execution.decode(self.vae, z, self.vae_tiling)
                if pixels is not None:
                    out.append(((pixels.float() / 2 + 0.5).clamp(0, 1)).cpu())
        emit(Progress("decode", latents.shape[0], latents.shape[0]))
        return torch.cat(out) if out else None
