"""The one story: encode text -> noise -> sigmas -> denoising loop -> VAE decode -> frames.

Built once from loaded components (:func:`hyvideo.loaders.load_pipeline`, or the in-memory
``tiny-random`` preset), then called per request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from hyvideo.pipeline.variants import SamplingDefaults
from hyvideo.text.conditioning import TextConditioning
from hyvideo.pipeline.denoise import StepInfo, denoise
from hyvideo.pipeline.scheduler import FlowMatchSchedule

log = logging.getLogger(__name__)

# The official default negative prompt (used with real classifier-free guidance, cfg_scale > 1).
NEGATIVE_PROMPT = ("Aerial view, aerial view, overexposed, low quality, deformation, a poor "
                   "composition, bad hands, bad teeth, bad eyes, bad limbs, distortion")

# The official resolution presets (height, width), all at 129 frames; named by width:height.
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "540p-16:9": (544, 960), "540p-9:16": (960, 544), "540p-4:3": (624, 832),
    "540p-3:4": (832, 624), "540p-1:1": (720, 720),
    "720p-16:9": (720, 1280), "720p-9:16": (1280, 720), "720p-4:3": (832, 1104),
    "720p-3:4": (1104, 832), "720p-1:1": (960, 960),
}


class UsageError(ValueError):
    """A request the model cannot run as given; the message says what to change."""


class GenerationCancelled(RuntimeError):
    """Raised from a progress callback to stop a generation at the next step."""


def _nearest_multiples(value: int, m: int) -> str:
    low = max(m, value // m * m)
    return f"{low} or {low + m}" if low != value else str(value)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs besides the model. Defaults: the released model's."""

    prompt: str
    negative_prompt: str | None = None
    height: int = 720
    width: int = 1280
    video_length: int = 129
    infer_steps: int = 50
    seed: int = 0
    cfg_scale: float = 1.0
    embedded_cfg_scale: float | None = 6.0
    flow_shift: float = 7.0
    flow_reverse: bool = True
    num_videos: int = 1
    batch_size: int = 1  # videos per DiT call

    @classmethod
    def from_defaults(cls, defaults: SamplingDefaults, **overrides) -> GenerationRequest:
        base = dict(height=defaults.height, width=defaults.width, video_length=defaults.video_length,
                    infer_steps=defaults.infer_steps, flow_shift=defaults.flow_shift,
                    flow_reverse=defaults.flow_reverse, cfg_scale=defaults.cfg_scale,
                    embedded_cfg_scale=defaults.embedded_cfg_scale)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self, require_prompt: bool = True) -> None:
        """Raise :class:`UsageError` with a one-line fix for anything the model cannot run."""
        if require_prompt and (not self.prompt or not self.prompt.strip()):
            raise UsageError("the prompt is empty: describe the video to generate")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v < 16 or v % 16:
                raise UsageError(f"{name} {v} is not a positive multiple of 16; "
                                 f"use {_nearest_multiples(v, 16)}")
        if self.video_length < 1 or (self.video_length - 1) % 4:
            low = max(1, (self.video_length - 1) // 4 * 4 + 1)
            raise UsageError(f"video length {self.video_length} is not 4n+1; use {low} or {low + 4}")
        if self.infer_steps < 1:
            raise UsageError(f"infer steps must be a positive integer, got {self.infer_steps}")
        if self.cfg_scale < 0 or not math.isfinite(self.cfg_scale):
            raise UsageError(f"cfg scale must be >= 0 (1 = off), got {self.cfg_scale}")
        if self.embedded_cfg_scale is not None and (self.embedded_cfg_scale < 0
                                                    or not math.isfinite(self.embedded_cfg_scale)):
            raise UsageError(f"embedded cfg scale must be >= 0, got {self.embedded_cfg_scale}")
        if self.flow_shift <= 0:
            raise UsageError(f"flow shift must be > 0, got {self.flow_shift}")
        if self.num_videos < 1 or self.batch_size < 1:
            raise UsageError("num videos and batch size must be >= 1")

    def settings(self) -> dict:
        """JSON-ready record of the request (embedded in outputs and the manifest)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Progress:
    """A progress event: ``stage`` is ``text``, ``denoise`` or ``decode``."""

    stage: str
    step: int
    steps: int
    info: StepInfo | None = None


@dataclass
class GenerationResult:
    videos: torch.Tensor | None  # [N, 3, T, H, W] float32 in [0, 1], on CPU (None: latents only)
    latents: torch.Tensor  # [N, 16, T', H', W'] float32 final latents, on CPU
    seeds: list[int]
    request: GenerationRequest
    extra: dict = field(default_factory=dict)


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


class HunyuanVideoPipeline:
    """Text encoders, DiT and VAE wired together; devices moved by ``offload`` between stages."""

    def __init__(self, dit, vae, text_encoders, *, device: torch.device, name: str,
                 defaults: SamplingDefaults, vae_tiling: bool = True, offload=None, parallel=None):
        self.dit, self.vae, self.text_encoders = dit, vae, text_encoders
        self.device = torch.device(device)
        self.name = name
        self.defaults = defaults
        self.vae_tiling = vae_tiling
        self.offload = offload  # a hyvideo.runtime.offload.Offload (its use(stage) wraps each stage) or None
        self.parallel = parallel  # hyvideo.runtime.parallel.ParallelState or None (one process)
        if parallel is not None:
            from hyvideo.runtime.parallel import enable_sequence_parallel

            enable_sequence_parallel(dit, parallel)

    @property
    def is_main(self) -> bool:
        """Whether this process writes outputs (always, without parallelism)."""
        return self.parallel is None or self.parallel.is_main

    def request(self, prompt: str, **overrides) -> GenerationRequest:
        """A request with this model's sampling defaults."""
        return GenerationRequest.from_defaults(self.defaults, prompt=prompt, **overrides)

    def _use(self, component: str):
        return self.offload.use(component) if self.offload else nullcontext()

    def encode_text(self, prompts: list[str], num_frames: int):
        """Text conditioning on this pipeline's device. Under parallelism the text encoders run
        once, on rank 0 (the only rank that loads them), and the result is broadcast."""
        cond = None
        if self.is_main:
            with self._use("text_encoders"):
                cond = self.text_encoders.encode(prompts, num_frames=num_frames).to(self.device)
        if self.parallel is None:
            return cond
        from hyvideo.runtime.parallel import broadcast_tensors

        parts = [cond.states, cond.mask, cond.pooled] if cond is not None else None
        return TextConditioning(*broadcast_tensors(parts, device=self.device))

    @torch.inference_mode()
    def __call__(self, request: GenerationRequest, *, callback: Callable[[Progress], None] | None = None,
                 decode: bool = True, show_progress: bool = True) -> GenerationResult:
        """Generate ``request.num_videos`` videos; seeds are ``seed + i``."""
        request.validate()
        emit = callback or (lambda event: None)
        emit(Progress("text", 0, 1))
        use_cfg = request.cfg_scale > 1.0
        # Like the official predict(): without CFG the negative prompt is unused ("").
        negative_text = (request.negative_prompt or NEGATIVE_PROMPT) if use_cfg else None
        cond = self.encode_text([request.prompt], request.video_length)
        negative = self.encode_text([negative_text], request.video_length) if use_cfg else None
        emit(Progress("text", 1, 1))

        latent_thw = self.vae.latent_shape(request.video_length, request.height, request.width)
        seeds = [request.seed + i for i in range(request.num_videos)]
        schedule = FlowMatchSchedule.create(request.infer_steps, request.flow_shift, request.flow_reverse)
        latents = []
        for start in range(0, len(seeds), request.batch_size):
            chunk = seeds[start:start + request.batch_size]
            noise = draw_noise((self.dit.config.in_channels, *latent_thw), chunk, self.device,
                               cond.states.dtype)
            latents.append(self._denoise(noise, schedule, cond, negative, request, emit, show_progress))
        latents = torch.cat(latents)
        videos = self.decode(latents, emit, show_progress) if decode else None
        return GenerationResult(videos, latents.cpu(), seeds, request)

    def _denoise(self, noise, schedule, cond, negative, request, emit, show_progress):
        bar = tqdm(total=schedule.steps, desc="denoising", disable=not show_progress, leave=False)

        def on_step(info: StepInfo) -> None:
            bar.update(1)
            emit(Progress("denoise", info.step + 1, info.steps, info))

        cfg_parallel = None
        if self.parallel is not None and self.parallel.config.cfg_degree == 2:
            from hyvideo.runtime.parallel import CfgParallel

            cfg_parallel = CfgParallel(self.parallel)
        try:
            with self._use("dit"):
                return denoise(self.dit, noise, schedule, cond, negative=negative,
                               cfg_scale=request.cfg_scale,
                               embedded_cfg_scale=request.embedded_cfg_scale, callback=on_step,
                               cfg_parallel=cfg_parallel)
        finally:
            bar.close()

    def decode(self, latents: torch.Tensor, emit=None, show_progress: bool = True) -> torch.Tensor | None:
        """Final latents [N, 16, T', H', W'] -> videos [N, 3, T, H, W] in [0, 1] on CPU.

        Under parallelism with tiling, every rank decodes a share of the tiles and rank 0 blends
        them (other ranks return None); without tiling only rank 0 decodes.
        """
        emit = emit or (lambda event: None)
        out = []
        with self._use("vae"):
            dtype = next(self.vae.parameters()).dtype
            for i in tqdm(range(latents.shape[0]), desc="decoding", disable=not show_progress, leave=False):
                emit(Progress("decode", i, latents.shape[0]))
                z = latents[i:i + 1].to(self.device, dtype) / self.vae.scaling_factor
                pixels = self._decode_one(z)
                if pixels is not None:
                    out.append(((pixels.float() / 2 + 0.5).clamp(0, 1)).cpu())
        emit(Progress("decode", latents.shape[0], latents.shape[0]))
        return torch.cat(out) if out else None

    def _decode_one(self, z: torch.Tensor) -> torch.Tensor | None:
        if self.parallel is None or self.parallel.world_size == 1:
            return self.vae.decode(z, tiling=self.vae_tiling)
        if self.vae_tiling:
            from hyvideo.runtime.parallel import parallel_tiled_decode

            return parallel_tiled_decode(self.vae, z, self.vae.tiling_config())
        return self.vae.decode(z, tiling=False) if self.is_main else None
