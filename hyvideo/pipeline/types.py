"""What goes into a generation and what comes out: requests, results, progress events, errors.

A leaf module (it imports no model): the applications build and check requests with it before
anything heavy is imported. A :class:`GenerationRequest` checks its own values when it is built
(types exact, numbers finite and in range), so an impossible value never reaches a model; the
size and frame count are checked against the model's geometry where the request is made
(:meth:`hyvideo.pipeline.geometry.Geometry.check_request`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: requests are built and checked before torch is imported
    import torch

# The official default negative prompt (used with real classifier-free guidance, cfg_scale > 1).
NEGATIVE_PROMPT = ("Aerial view, aerial view, overexposed, low quality, deformation, a poor "
                   "composition, bad hands, bad teeth, bad eyes, bad limbs, distortion")

MAX_SEED = 2**63 - 1  # torch generators take signed 64-bit seeds; video i uses seed + i
MAX_PROMPT_CHARS = 20_000  # far beyond any encoder's window; longer text is a mistake
MAX_SIZE = 16_384  # pixels per side and frames: far beyond any device's memory, so sizes never overflow


class UsageError(ValueError):
    """A request the model cannot run as given; the message says what to change.

    ``field`` names the request field (the official CLI name with underscores), so a front door
    can name its own flag or form field.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class GenerationCancelled(RuntimeError):
    """Raised from a progress callback to stop a generation at the next step."""


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (bools and floats refused) within [low, high], else UsageError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name.replace('_', ' ')} must be a whole number, got {value!r}", name)
    if low is not None and value < low:
        bound = "a positive integer" if low == 1 else f">= {low}"
        raise UsageError(f"{name.replace('_', ' ')} must be {bound}, got {value}", name)
    if high is not None and value > high:
        raise UsageError(f"{name.replace('_', ' ')} must be at most {high}, got {value}", name)
    return value


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False) -> float:
    """``value`` as a finite float (ints accepted, bools refused) in range, else UsageError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name.replace('_', ' ')} must be a number, got {value!r}", name)
    value = float(value)
    if not math.isfinite(value):
        raise UsageError(f"{name.replace('_', ' ')} must be a finite number, got {value}", name)
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        lower = f"> {low:g}" if low_open else f">= {low:g}"
        bounds = lower if high is None else f"{lower} and <= {high:g}"
        raise UsageError(f"{name.replace('_', ' ')} must be {bounds}, got {value:g}", name)
    return value


def check_text(name: str, value: Any, *, required: bool) -> str | None:
    """A prompt: a str of printable text (no NUL or lone surrogates), not too long."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{name.replace('_', ' ')} must be text, got {type(value).__name__}", name)
    if required and not value.strip():
        raise UsageError(f"the {name.replace('_', ' ')} is empty: describe the video to generate", name)
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise UsageError(f"the {name.replace('_', ' ')} is not valid UTF-8 text "
                         "(it holds a NUL or an undecodable byte)", name)
    if len(value) > MAX_PROMPT_CHARS:
        raise UsageError(f"the {name.replace('_', ' ')} has {len(value):,} characters; "
                         f"at most {MAX_PROMPT_CHARS:,} are accepted", name)
    return value


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs besides the model. Defaults: the released model's.

    Built through ``pipeline.request(...)`` (or :func:`request_from_defaults`) the size and frame
    count are also checked against the model's geometry.
    """

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

    def __post_init__(self) -> None:
        check_text("prompt", self.prompt, required=True)
        check_text("negative_prompt", self.negative_prompt, required=False)
        for name in ("height", "width", "video_length"):  # bounds far beyond any device's memory
            check_int(name, getattr(self, name), 1, MAX_SIZE)
        check_int("infer_steps", self.infer_steps, 1)
        check_int("num_videos", self.num_videos, 1, 1000)
        check_int("batch_size", self.batch_size, 1, 1000)
        check_int("seed", self.seed, 0, MAX_SEED - (self.num_videos - 1))
        object.__setattr__(self, "cfg_scale", check_float("cfg_scale", self.cfg_scale, 0, 100))
        if self.embedded_cfg_scale is not None:
            object.__setattr__(self, "embedded_cfg_scale",
                               check_float("embedded_cfg_scale", self.embedded_cfg_scale, 0, 100))
        object.__setattr__(self, "flow_shift", check_float("flow_shift", self.flow_shift, 0, 1000,
                                                           low_open=True))
        if not isinstance(self.flow_reverse, bool):
            raise UsageError(f"flow reverse must be true or false, got {self.flow_reverse!r}", "flow_reverse")

    def replace(self, **changes) -> GenerationRequest:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict:
        """JSON-ready record of the request (embedded in outputs and the manifest)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def request_from_defaults(defaults, **fields) -> GenerationRequest:
    """A request with ``defaults`` (a :class:`~hyvideo.pipeline.variants.SamplingDefaults`)
    where ``fields`` gives None or nothing."""
    base = dict(height=defaults.height, width=defaults.width, video_length=defaults.video_length,
                infer_steps=defaults.infer_steps, flow_shift=defaults.flow_shift,
                flow_reverse=defaults.flow_reverse, cfg_scale=defaults.cfg_scale,
                embedded_cfg_scale=defaults.embedded_cfg_scale)
    base.update({k: v for k, v in fields.items() if v is not None})
    return GenerationRequest(**base)


@dataclass
class StepInfo:
    """What a per-step callback sees (the web demo's progress bar, tests, tracing)."""

    step: int  # 0-based index of the step just taken
    steps: int
    t: torch.Tensor  # [B'] the DiT's timestep input (B' = 2B with classifier-free guidance)
    guidance: torch.Tensor | None  # [B'] the DiT's guidance input
    model_output: torch.Tensor  # [B', C, T, H, W] raw DiT output
    latents: torch.Tensor  # [B, C, T, H, W] float32 latents after the step


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
    extra: dict = field(default_factory=dict)  # e.g. the step cache's skipped steps


@dataclass
class Components:
    """The loaded models of one pipeline."""

    dit: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: Any | None  # None on processes that do not encode text


@dataclass(frozen=True)
class I2VRequest(GenerationRequest):
    """An image-to-video request: a :class:`GenerationRequest` whose size is the image's bucket.

    ``image`` is a :class:`hyvideo.pipeline.image_input.I2VImage` (read, checked and bucketed
    before any model loads); ``i2v_stability`` mixes the image latent into the starting noise.
    """

    image: Any = None
    i2v_stability: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image is None:
            raise UsageError("image-to-video needs an image (--i2v-image-path)", "i2v_image_path")
        if self.video_length < 2:
            raise UsageError(f"video length {self.video_length}: image-to-video needs more than one frame "
                             "(the official model encodes the prompt with its video template)", "video_length")
        if (self.height, self.width) != (self.image.height, self.image.width):
            raise UsageError(f"video size {self.height}x{self.width} differs from the image's bucket "
                             f"{self.image.height}x{self.image.width}: the image picks the size "
                             "(--i2v-resolution)", "video_size")
        if not isinstance(self.i2v_stability, bool):
            raise UsageError(f"i2v stability must be true or false, got {self.i2v_stability!r}", "i2v_stability")
        if "<image>" in self.prompt or "<image>" in (self.negative_prompt or ""):
            raise UsageError("the prompt contains the text <image>, which the image-to-video encoder "
                             "reserves for the picture; reword it", "prompt")

    @classmethod
    def for_image(cls, request: GenerationRequest, image: Any, i2v_stability: bool = False) -> I2VRequest:
        """``request``'s settings for ``image`` (an :class:`~hyvideo.pipeline.image_input.I2VImage`),
        whose bucket is the size."""
        fields = {k: getattr(request, k) for k in GenerationRequest.__dataclass_fields__}
        if image is not None:  # (None: refused by the checks, with the message for a missing image)
            fields.update(height=image.height, width=image.width)
        return cls(**fields, image=image, i2v_stability=i2v_stability)

    def settings(self) -> dict:
        """JSON-ready record: the image as its file and hash, not its pixels."""
        record = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "image"}
        image = self.image
        record["image"] = {"path": str(image.path) if image.path else None, "sha256": image.sha256,
                           "source_size": list(image.image.size[::-1]), "bucket": [image.height, image.width]}
        return record
