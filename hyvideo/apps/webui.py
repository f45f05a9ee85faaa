"""The Gradio web demo: one pipeline shared by every visitor, one generation at a time.

:func:`build_demo` takes a built pipeline and typed settings (no argparse here; the flags live in
``gradio_server.py``) and returns a queued ``gr.Blocks``. Requests go through Gradio's queue with
``concurrency_limit=1`` and, behind it, one device lock, so a cancelled job that is still finishing
its current step never overlaps the next one. A session's cancel button sets its own job's flag;
the progress callback raises :class:`GenerationCancelled` at the next step.

An image-to-video model (``build_demo(..., i2v=variant.i2v)``) gets the image page: an upload (or
one of the example pictures in ``assets/``), the ``--i2v-resolution`` choice and the stability
switch instead of the size fields; the bucket the image picks is shown as soon as it is given.

The form's values reach the handlers as they were sent (the listeners are registered with
``preprocess=False``): Gradio's own conversions would round 33.5 to 34 and turn 5 into "5"
silently, and fail on text, NaN or an unknown choice with a generic error and a traceback in the
server log. The handlers check the raw values instead, with the command line's one-line messages.
(No Component subclass: Gradio writes a ``.pyi`` stub next to the module defining one.)
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import gradio.utils as gr_utils
import numpy as np
import torch

from hyvideo import compat
from hyvideo.apps.cli import is_out_of_memory
from hyvideo.apps.output import output_metadata, output_stem, write_output
from hyvideo.apps.video_io import to_uint8_frames
from hyvideo.pipeline.geometry import RESOLUTIONS, Geometry
from hyvideo.pipeline.image_input import (
    I2V_RESOLUTIONS,
    I2VImage,
    i2v_buckets,
    load_i2v_image,
)
from hyvideo.pipeline.options import is_tiny
from hyvideo.pipeline.t2v import HunyuanVideoPipeline
from hyvideo.pipeline.types import (
    MAX_SEED,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    Progress,
    UsageError,
)
from hyvideo.pipeline.variants import I2VDefaults

log = logging.getLogger(__name__)

CUSTOM = "custom"
MODEL_DEFAULT = "default"
HISTORY_LENGTH = 24  # videos kept in a session's gallery
POSTER_WIDTH = 256  # gallery thumbnails: the middle frame, this wide at most
CANCEL_WAIT_S = 120.0  # how long the cancel button waits for the running step to end
EXAMPLE_PROMPTS = [
    "A cat walks on the grass, realistic style.",
    "A panda playing a guitar by a campfire at night, cinematic lighting.",
    "Aerial shot of waves crashing on a rocky coastline at sunset.",
    "A red vintage car drives along a winding mountain road, autumn forest.",
]

ASSETS = Path(__file__).parent / "assets"  # the example pictures (package data, drawn for this project)
EXAMPLE_IMAGES = [
    ("sunrise.png", "The sun rises over a calm sea, its light glittering on the waves."),
    ("lighthouse.png", "A lighthouse on a cliff at night, its beam sweeping slowly across the starry sky."),
    ("flower.png", "A pink flower sways in a gentle breeze, its leaf trembling."),
]
STABLE_FLOW_SHIFT = 7.0  # the official README's flow shift with --i2v-stability (17 without)

Reporter = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass(frozen=True)
class Limits:
    """What one request may ask of this server (checked server side, whatever the page sends)."""

    max_pixels: int = 1280 * 720  # height * width of one frame
    max_frames: int = 129
    max_steps: int = 100

    def check(self, request: GenerationRequest) -> None:
        """Raise :class:`UsageError` with a one-line fix when ``request`` exceeds a limit."""
        pixels = request.height * request.width
        if pixels > self.max_pixels:
            raise UsageError(f"video size {request.height}x{request.width} has {pixels:,} pixels per frame; "
                             f"this server allows at most {self.max_pixels:,}: choose a smaller size")
        if request.video_length > self.max_frames:
            raise UsageError(f"video length {request.video_length} is more than this server allows "
                             f"({self.max_frames} frames): choose fewer frames")
        if request.infer_steps > self.max_steps:
            raise UsageError(f"infer steps {request.infer_steps} is more than this server allows "
                             f"({self.max_steps}): choose fewer steps")

    def largest_frames(self, wanted: int, geometry: Geometry = Geometry()) -> int:  # noqa: B008 (frozen)
        """``wanted`` or the largest valid length (4n+1) within the limit."""
        return wanted if wanted <= self.max_frames else geometry.valid_frames(self.max_frames)


class Page(gr.Blocks):
    """The page; an API call with too few values, or an image that is not a file, gets one line,
    not a traceback in the log."""

    def validate_inputs(self, block_fn, inputs):  # Gradio's hook, before its own file checks
        try:
            super().validate_inputs(block_fn, inputs)
        except ValueError:
            names = [getattr(c, "label", None) or type(c).__name__ for c in block_fn.inputs]
            raise gr.Error(f"this endpoint takes {len(names)} values ({', '.join(map(str, names))}); "
                           f"the request has {len(inputs)}", print_exception=False) from None
        for component, value in zip(block_fn.inputs, inputs, strict=False):
            if isinstance(component, gr.Image) and value is not None:
                _check_upload(value)


def _is_file_payload(value) -> bool:
    """A file as Gradio's page and ``gradio_client.handle_file`` send it."""
    return (isinstance(value, dict) and isinstance(value.get("path"), str)
            and isinstance(value.get("meta"), dict) and value["meta"].get("_type") == "gradio.FileData")


def _check_upload(value) -> None:
    """An image payload must be a file uploaded to this server. Gradio refuses anything else too,
    but with a generic error and a traceback in the log; this says what is wrong in one line."""
    if not _is_file_payload(value):
        raise gr.Error(f"image must be an image file (gradio_client: image=handle_file(path)), got {_shown(value)}",
                       title="Invalid settings", print_exception=False)
    if not gr_utils.is_in_or_equal(value["path"], gr_utils.get_upload_folder()):
        raise gr.Error(f"image {_shown(value['path'])} is not a file uploaded to this server; send the file "
                       "itself (gradio_client: image=handle_file(path))", title="Invalid settings",
                       print_exception=False)


def _shown(value) -> str:
    """A sent value for a message: short, and one line whatever it holds."""
    text = repr(value)
    return text if len(text) <= 40 else f"{type(value).__name__} {text[:40]}..."


def size_presets(pipeline: HunyuanVideoPipeline, limits: Limits) -> dict[str, tuple[int, int]]:
    """Preset name -> (height, width): the model's own default size, then the official presets
    that fit under ``limits.max_pixels``."""
    default = (pipeline.defaults.height, pipeline.defaults.width)
    presets = {} if default in RESOLUTIONS.values() else {MODEL_DEFAULT: default}
    presets.update(RESOLUTIONS)
    return {name: hw for name, hw in presets.items() if hw[0] * hw[1] <= limits.max_pixels}


def preset_label(name: str, size: tuple[int, int]) -> str:
    what = "model default" if name == MODEL_DEFAULT else name.replace("-", " ")
    return f"{what} ({size[0]}x{size[1]})"


@dataclass
class Job:
    """One running generation, as seen by its session's cancel button."""

    prompt: str
    stage: str = "waiting for the device"
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


class JobBoard:
    """The running job of each session, so a cancel reaches only its own session's job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def start(self, session: str, prompt: str) -> Job:
        job = Job(prompt)
        with self._lock:
            self._jobs[session] = job
        return job

    def finish(self, session: str, job: Job) -> None:
        with self._lock:
            if self._jobs.get(session) is job:
                del self._jobs[session]
        job.finished.set()

    def cancel(self, session: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(session)
        if job is not None:
            job.cancel.set()
        return job


def describe(event: Progress) -> tuple[float, str]:
    """A pipeline progress event as (fraction done, stage name for the page)."""
    if event.stage == "text":
        return 0.0, "encoding text"
    if event.stage == "denoise":
        return 0.05 + 0.9 * event.step / max(event.steps, 1), f"denoising {event.step}/{event.steps}"
    return 0.95, "decoding"


@dataclass(frozen=True)
class HistoryItem:
    """One earlier result of a session: its file, a caption and a thumbnail."""

    video: str
    seed: int
    caption: str
    poster: np.ndarray  # [H, W, 3] uint8, the middle frame


def poster_frame(video: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [0, 1] -> the middle frame as [H', W', 3] uint8, at most POSTER_WIDTH wide."""
    frame = video[:, video.shape[1] // 2].float()[None]  # [1, 3, H, W]
    if frame.shape[-1] > POSTER_WIDTH:
        size = (max(1, round(frame.shape[-2] * POSTER_WIDTH / frame.shape[-1])), POSTER_WIDTH)
        frame = torch.nn.functional.interpolate(frame, size=size, mode="area")
    return to_uint8_frames(frame[0][:, None])[0]  # [3, 1, H', W'] -> [1, H', W', 3] -> the frame


def free_device_memory(device: torch.device) -> None:
    """Drop what a finished or abandoned run left behind (tensors, allocator caches)."""
    gc.collect()
    compat.empty_cache(device)


class Generator:
    """The pipeline behind a device lock, writing each result under ``output_dir``.

    ``i2v`` (the model's image-to-video defaults) makes it an image-to-video server.
    """

    def __init__(self, pipeline: HunyuanVideoPipeline, output_dir: Path, limits: Limits,
                 i2v: I2VDefaults | None = None) -> None:
        self.pipeline = pipeline
        self.output_dir = Path(output_dir)
        self.limits = limits
        self.i2v = i2v
        self.presets = size_presets(pipeline, limits)
        self.i2v_resolutions = i2v_resolutions(i2v, limits) if i2v is not None else []
        self.jobs = JobBoard()
        self._device = threading.Lock()

    def request(self, prompt: str, negative_prompt: str | None, resolution: str, height: int | None,
                width: int | None, video_length: int | None, infer_steps: int | None, seed: int | None,
                random_seed: bool, embedded_cfg_scale: float | None, cfg_scale: float | None,
                flow_shift: float | None) -> GenerationRequest:
        """The text-to-video page's fields as a checked request (raises :class:`UsageError`)."""
        # The request checks every value's type and range; the others are the page's own fields.
        if not isinstance(resolution, str):
            raise UsageError(f"resolution must be a preset name or {CUSTOM!r}, got {resolution!r}", "resolution")
        fields = self._sampling(random_seed, seed, negative_prompt, video_length, infer_steps,
                                embedded_cfg_scale, cfg_scale, flow_shift)
        height, width = self._size(resolution, height, width)
        request = self.pipeline.request("" if prompt is None else prompt, height=height, width=width, **fields)
        self.limits.check(request)
        return request

    def request_i2v(self, prompt: str, negative_prompt: str | None, image, i2v_resolution: str,
                    i2v_stability: bool, video_length: int | None, infer_steps: int | None, seed: int | None,
                    random_seed: bool, embedded_cfg_scale: float | None, cfg_scale: float | None,
                    flow_shift: float | None) -> GenerationRequest:
        """The image-to-video page's fields as a checked request; the image picks the size."""
        fields = self._sampling(random_seed, seed, negative_prompt, video_length, infer_steps,
                                embedded_cfg_scale, cfg_scale, flow_shift)
        picture = self.image(image, i2v_resolution)
        request = self.pipeline.request("" if prompt is None else prompt, picture,
                                        i2v_stability=i2v_stability, **fields)
        self.limits.check(request)
        return request

    def _sampling(self, random_seed: bool, seed, negative_prompt, video_length, infer_steps,
                  embedded_cfg_scale, cfg_scale, flow_shift) -> dict:
        """The fields both pages share, as request fields (a random seed drawn here)."""
        if not isinstance(random_seed, bool):
            raise UsageError(f"random seed must be true or false, got {random_seed!r}", "random_seed")
        use_random = random_seed or seed is None or (_number("seed", seed) < 0)
        if not use_random and seed > MAX_SEED:
            raise UsageError(f"seed {int(seed)} is too large; use 0 to {MAX_SEED}, or -1 for a random seed")
        if isinstance(negative_prompt, str):
            negative_prompt = negative_prompt.strip() or None
        return {"negative_prompt": negative_prompt, "video_length": _integer("video_length", video_length),
                "infer_steps": _integer("infer_steps", infer_steps),
                "seed": random.randrange(2**31) if use_random else _integer("seed", seed),
                "cfg_scale": cfg_scale, "embedded_cfg_scale": embedded_cfg_scale, "flow_shift": flow_shift}

    def _size(self, resolution: str, height: int | None, width: int | None) -> tuple[int, int]:
        if resolution in self.presets:
            return self.presets[resolution]
        if resolution != CUSTOM:
            raise UsageError(f"unknown resolution {resolution!r}; choose one of: "
                             f"{', '.join([*self.presets, CUSTOM])}")
        if height is None or width is None:
            raise UsageError("a custom resolution needs both a height and a width "
                             f"(multiples of {self.pipeline.geometry.size_multiple})")
        return _integer("height", height), _integer("width", width)

    def image(self, payload, resolution) -> I2VImage:
        """An uploaded image (Gradio's file payload), read, checked and bucketed at ``resolution``.

        Messages name the upload as the visitor called it, not the server's copy, and so does the
        output's metadata (with the file's sha256)."""
        if not isinstance(resolution, str) or resolution not in self.i2v_resolutions:
            raise UsageError(f"unknown i2v resolution {_shown(resolution)}; choose one of: "
                             f"{', '.join(self.i2v_resolutions)}", "i2v_resolution")
        if payload is None:
            raise UsageError("no image: upload the image to animate", "image")
        if not _is_file_payload(payload):  # the page's hook refuses these first; a direct call may not
            raise UsageError(f"image must be an uploaded image file, got {_shown(payload)}", "image")
        path, name = Path(payload["path"]), _upload_name(payload)
        try:
            picture = load_i2v_image(path, resolution)
        except UsageError as exc:
            raise UsageError(str(exc).replace(str(path), name), exc.field) from None
        return dataclasses.replace(picture, path=Path(name))

    def run(self, request: GenerationRequest, job: Job, report: Reporter) -> GenerationResult:
        """Generate under the device lock; raises :class:`GenerationCancelled` when cancelled."""

        def on_progress(event: Progress) -> None:
            fraction, job.stage = describe(event)
            if job.cancel.is_set():
                raise GenerationCancelled(f"cancelled at {job.stage}")
            report(fraction, job.stage)

        report(0.0, "waiting for the device")
        with self._device:
            try:
                if job.cancel.is_set():
                    raise GenerationCancelled("cancelled before it started")
                return self.pipeline(request, callback=on_progress, decode=True, show_progress=False)
            finally:
                free_device_memory(self.pipeline.device)

    def save(self, result: GenerationResult) -> tuple[Path, dict]:
        """Write the video under a generated name (never overwriting); return it and its settings."""
        job_id = time.strftime("%Y%m%d-%H%M%S")
        settings = output_metadata(result, 0, model=self.pipeline.name, job_id=job_id, extra={"source": "webui"})
        if isinstance(settings.get("image"), dict):  # image to video: an upload has a name, no path here
            # (and gradio_client would take any {"path": ...} in a result for a file to download)
            image = dict(settings["image"])
            settings["image"] = {"name": image.pop("path", None), **image}
        stem = output_stem(job_id, result.seeds[0], result.request.prompt)
        return write_output(result, 0, self.output_dir, stem, settings), settings

    def cancel(self, session: str) -> str:
        """Stop the session's running job at its next step; wait until the device is free."""
        job = self.jobs.cancel(session)
        if job is None:
            return "Nothing is running in this session."
        if not job.finished.wait(CANCEL_WAIT_S):
            return f"Cancel requested; the job stops after its current step ({job.stage})."
        return f"Cancelled at {job.stage}; the device is free."


def i2v_resolutions(i2v: I2VDefaults, limits: Limits) -> list[str]:
    """The ``--i2v-resolution`` choices whose every bucket fits under ``limits.max_pixels`` (the
    model's own always stays offered: a request over the limit is then refused in one line)."""
    fits = [name for name in I2V_RESOLUTIONS
            if max(h * w for h, w in i2v_buckets(name)) <= limits.max_pixels]
    return fits if i2v.resolution in fits else [*fits, i2v.resolution]


def _upload_name(payload: dict) -> str:
    """The file name the visitor gave the upload: printable, no folder, not too long."""
    name = Path(str(payload.get("orig_name") or payload["path"])).name
    return "".join(c if c.isprintable() else "?" for c in name)[:80] or "upload"


def _number(name: str, value) -> float:
    """A page or API field that must be a finite number (the API may send anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name.replace('_', ' ')} must be a number, got {_shown(value)}", name)
    if not math.isfinite(value):
        raise UsageError(f"{name.replace('_', ' ')} must be a finite number, got {value}", name)
    return value


def _integer(name: str, value) -> int | None:
    """A whole-number field: 33.0 is 33, but 33.5 is refused rather than truncated."""
    if value is None:
        return None
    value = _number(name, value)
    if int(value) != value:
        raise UsageError(f"{name.replace('_', ' ')} must be a whole number, got {value}", name)
    return int(value)


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "anonymous"


def _failure_message(exc: Exception) -> str:
    if is_out_of_memory(exc):
        return ("out of memory while generating; try a smaller size, fewer frames, or restart the "
                "server with --offload model (or blocks) / --use-fp8")
    return f"generation failed ({type(exc).__name__}); the server log has the details"


def _serve(gen: Generator, build: Callable[[], GenerationRequest], history: list, request: gr.Request | None,
           progress) -> tuple:
    """One generation for a page or API call: check (``build``), queue for the device, run, save."""
    try:
        req = build()
    except UsageError as exc:
        raise gr.Error(str(exc), title="Invalid settings", print_exception=False) from None
    session = _session(request)
    job = gen.jobs.start(session, req.prompt)
    started = time.perf_counter()
    try:
        result = gen.run(req, job, lambda fraction, desc: progress(fraction, desc=desc))
        path, settings = gen.save(result)
    except GenerationCancelled:
        log.info("cancelled at %s: %r", job.stage, req.prompt)
        # The cancel button's own answer says the same: whichever reaches the page last is right.
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"Cancelled at {job.stage}; the device is free.", history
    except Exception as exc:
        if is_out_of_memory(exc):  # expected with a large request: one line, no traceback
            log.warning("out of memory for %r: %s", req.settings(), str(exc).splitlines()[0][:200])
        else:
            log.exception("generation failed for %r", req.settings())
        raise gr.Error(_failure_message(exc), print_exception=False) from None
    finally:
        gen.jobs.finish(session, job)
    seconds = time.perf_counter() - started
    log.info("saved %s (seed %d, %.1f s)", path, req.seed, seconds)
    item = HistoryItem(str(path), req.seed, f"seed {req.seed}: {req.prompt[:60]}", poster_frame(result.videos[0]))
    history = [item, *(history or [])][:HISTORY_LENGTH]
    status = f"Done in {seconds:.1f} s: seed {req.seed}, saved as `{path.name}`."
    return str(path), str(path), req.seed, settings, status, history


def make_generate(gen: Generator) -> Callable:
    """The text-to-video handler. Its parameter names are the API's (``gradio_client`` ``/generate``)."""

    def generate(prompt: str, negative_prompt: str, resolution: str, height: float | None,
                 width: float | None, video_length: float, infer_steps: float, seed: float | None,
                 random_seed: bool, embedded_cfg_scale: float | None, cfg_scale: float,
                 flow_shift: float, history: list, request: gr.Request,
                 progress: gr.Progress = gr.Progress()):  # noqa: B008 (Gradio's injection idiom)
        return _serve(gen, lambda: gen.request(
            prompt, negative_prompt, resolution, height, width, video_length, infer_steps, seed,
            random_seed, embedded_cfg_scale, cfg_scale, flow_shift), history, request, progress)

    return generate


def make_generate_i2v(gen: Generator) -> Callable:
    """The image-to-video handler; ``image`` is a file (``gradio_client.handle_file(path)``)."""

    def generate(prompt: str, negative_prompt: str, image: dict | None, i2v_resolution: str,
                 i2v_stability: bool, video_length: float, infer_steps: float, seed: float | None,
                 random_seed: bool, embedded_cfg_scale: float | None, cfg_scale: float,
                 flow_shift: float, history: list, request: gr.Request,
                 progress: gr.Progress = gr.Progress()):  # noqa: B008 (Gradio's injection idiom)
        return _serve(gen, lambda: gen.request_i2v(
            prompt, negative_prompt, image, i2v_resolution, i2v_stability, video_length, infer_steps,
            seed, random_seed, embedded_cfg_scale, cfg_scale, flow_shift), history, request, progress)

    return generate


def make_show_bucket(gen: Generator) -> Callable:
    """The video size an image picks, for the page as soon as the image (or resolution) changes."""

    def show_bucket(image: dict | None, i2v_resolution: str) -> str:
        if image is None:
            return f"Upload an image: its aspect ratio picks the video size among the {i2v_resolution} buckets."
        try:
            picture = gen.image(image, i2v_resolution)
        except UsageError as exc:
            return f"**Cannot use this image:** {exc}"
        source_w, source_h = picture.image.size
        return (f"Video size **{picture.height} x {picture.width}** (height x width): the {i2v_resolution} "
                f"bucket closest to the image's {source_h} x {source_w}; the image is resized and "
                "centre-cropped to it.")

    return show_bucket


def show_history(history: list[HistoryItem]) -> list[tuple[np.ndarray, str]]:
    return [(item.poster, item.caption) for item in history]


def reopen(history: list[HistoryItem], evt: gr.SelectData):
    """A gallery click: the chosen earlier video back in the player, with its file and seed."""
    item = history[evt.index]
    return item.video, item.video, item.seed, f"Earlier result: {item.caption}"


def make_cancel(gen: Generator) -> Callable:
    def cancel(request: gr.Request) -> str:
        return gen.cancel(_session(request))

    return cancel


def _limits_note(gen: Generator) -> str:
    lim, geometry = gen.limits, gen.pipeline.geometry
    frames = f"frame counts are {geometry.time_compression_ratio}n+1."
    if gen.i2v is not None:
        return (f"This server allows up to {lim.max_pixels:,} pixels per frame, {lim.max_frames} frames "
                f"and {lim.max_steps} steps; {frames}")
    return (f"This server allows up to {lim.max_pixels:,} pixels per frame, {lim.max_frames} frames "
            f"and {lim.max_steps} steps. Sizes are multiples of {geometry.size_multiple}; {frames}")


def _intro(gen: Generator) -> str:
    name = gen.pipeline.name
    if gen.i2v is not None:
        text = (f"# HunyuanVideo\nImage to video with **{name}**: give an image (its aspect ratio picks the "
                "video size) and describe the motion. One video is generated at a time; other requests "
                "wait in the queue.")
    else:
        text = (f"# HunyuanVideo\nText to video with **{name}**. One video is generated at a time; "
                "other requests wait in the queue.")
    if is_tiny(name):
        text += ("\n\n**Demo model with random weights:** videos are noise-like. Start the server with "
                 "the official checkpoints for real videos.")
    return text


def _default_resolution(gen: Generator) -> str:
    default = (gen.pipeline.defaults.height, gen.pipeline.defaults.width)
    return next((name for name, hw in gen.presets.items() if hw == default), next(iter(gen.presets), CUSTOM))


def _resolution_fields(gen: Generator) -> tuple[gr.Dropdown, gr.Number, gr.Number]:
    choices = [(preset_label(name, hw), name) for name, hw in gen.presets.items()]
    choices.append(("custom (height x width below)", CUSTOM))
    value = _default_resolution(gen)
    height, width = gen.presets.get(value, (gen.pipeline.defaults.height, gen.pipeline.defaults.width))
    resolution = gr.Dropdown(choices, value=value, label="Resolution", elem_id="resolution")
    with gr.Row():
        custom = value == CUSTOM
        h = gr.Number(height, label="Height (custom)", precision=0, interactive=custom, elem_id="height")
        w = gr.Number(width, label="Width (custom)", precision=0, interactive=custom, elem_id="width")
    return resolution, h, w


def _on_resolution(gen: Generator) -> Callable:
    def show_size(resolution: str, height: float | None, width: float | None):
        if resolution == CUSTOM:
            return gr.update(interactive=True), gr.update(interactive=True)
        h, w = gen.presets.get(resolution, (height, width))
        return gr.update(value=h, interactive=False), gr.update(value=w, interactive=False)

    return show_size


def _sampling_fields(gen: Generator) -> list[gr.components.Component]:
    d, lim = gen.pipeline.defaults, gen.limits
    with gr.Row():
        frames = gr.Number(lim.largest_frames(d.video_length, gen.pipeline.geometry),
                           label=f"Frames ({gen.pipeline.geometry.time_compression_ratio}n+1)", precision=0,
                           elem_id="frames", info=f"at most {lim.max_frames}")
        steps = gr.Number(min(d.infer_steps, lim.max_steps), label="Steps", precision=0, elem_id="steps",
                          info=f"at most {lim.max_steps}")
    with gr.Row():
        seed = gr.Number(-1, label="Seed", precision=0, elem_id="seed", info="-1 = random")
        random_seed = gr.Checkbox(True, label="Random seed", elem_id="random-seed")
    with gr.Row():
        embedded = gr.Number(d.embedded_cfg_scale, label="Embedded guidance", elem_id="embedded-cfg-scale")
        cfg = gr.Number(d.cfg_scale, label="Guidance scale (> 1 runs the negative prompt)", elem_id="cfg-scale")
        shift = gr.Number(d.flow_shift, label="Flow shift", elem_id="flow-shift")
    return [frames, steps, seed, random_seed, embedded, cfg, shift]


def _image_fields(gen: Generator) -> tuple[gr.Image, gr.Markdown]:
    """The image to animate and, under it, the video size it picks."""
    image = gr.Image(label="Image to animate", sources=["upload", "clipboard"], elem_id="image", height=320)
    bucket = gr.Markdown(make_show_bucket(gen)(None, gen.i2v.resolution), elem_id="bucket")
    return image, bucket


def _i2v_fields(gen: Generator) -> tuple[gr.Dropdown, gr.Checkbox]:
    with gr.Row():
        resolution = gr.Dropdown(gen.i2v_resolutions, value=gen.i2v.resolution, label="I2V resolution",
                                 elem_id="i2v-resolution",
                                 info=f"the bucket set the image's size is chosen from (model default "
                                 f"{gen.i2v.resolution})")
        stability = gr.Checkbox(gen.i2v.stability, label="Stability", elem_id="i2v-stability",
                                info=f"keep the video closer to the image; sets flow shift {STABLE_FLOW_SHIFT:g}, "
                                "as the official README pairs them")
    return resolution, stability


def _form(gen: Generator) -> dict[str, gr.components.Component]:
    """The left column: the request's fields (the page's kind decides which), by API name."""
    f: dict[str, gr.components.Component] = {}
    if gen.i2v is not None:
        f["image"], f["bucket"] = _image_fields(gen)
    f["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                             placeholder="Describe the motion" if gen.i2v else "Describe the video to generate")
    with gr.Row():
        f["run"] = gr.Button("Generate", variant="primary", elem_id="generate")
        f["stop"] = gr.Button("Cancel", variant="stop", elem_id="cancel")
    if gen.i2v is not None:
        gr.Examples([[str(ASSETS / name), text] for name, text in EXAMPLE_IMAGES], inputs=[f["image"], f["prompt"]],
                    label="Example images (drawn for this demo)")
    else:
        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[f["prompt"]], label="Example prompts")
    f["negative_prompt"] = gr.Textbox("", label="Negative prompt", lines=2, elem_id="negative-prompt",
                                      placeholder="empty: the official negative prompt (used when guidance scale > 1)")
    if gen.i2v is not None:
        f["i2v_resolution"], f["i2v_stability"] = _i2v_fields(gen)
    else:
        f["resolution"], f["height"], f["width"] = _resolution_fields(gen)
    names = ["video_length", "infer_steps", "seed", "random_seed", "embedded_cfg_scale", "cfg_scale", "flow_shift"]
    f.update(zip(names, _sampling_fields(gen), strict=True))
    gr.Markdown(_limits_note(gen))
    return f


def _results() -> dict[str, gr.components.Component]:
    """The right column: the video, its status, seed, file and settings."""
    r: dict[str, gr.components.Component] = {}
    r["video"] = gr.Video(label="Result", interactive=False, buttons=["download"], elem_id="video")
    r["status"] = gr.Markdown("", label="Status", elem_id="status")
    with gr.Row():
        r["seed_used"] = gr.Number(label="Seed used", precision=0, interactive=False, elem_id="seed-used")
        r["mp4"] = gr.File(label="mp4 (settings embedded)", interactive=False, elem_id="mp4")
    with gr.Accordion("Settings of this video", open=False):
        r["settings"] = gr.JSON(label="Settings")
    return r


I2V_INPUTS = ["prompt", "negative_prompt", "image", "i2v_resolution", "i2v_stability"]
T2V_INPUTS = ["prompt", "negative_prompt", "resolution", "height", "width"]
SAMPLING_INPUTS = ["video_length", "infer_steps", "seed", "random_seed", "embedded_cfg_scale", "cfg_scale",
                   "flow_shift"]


def _wire(gen: Generator, f: dict, r: dict, history: gr.State, gallery: gr.Gallery) -> None:
    """The events: generate (``/generate``), cancel (``/cancel``), the history and the page's own
    updates. The form's values reach ``generate`` as sent (``preprocess=False``, see the module doc)."""
    private = {"api_visibility": "private", "queue": False}
    if gen.i2v is not None:
        handler, names = make_generate_i2v(gen), I2V_INPUTS + SAMPLING_INPUTS
        show_bucket = make_show_bucket(gen)
        for trigger in (f["image"].change, f["i2v_resolution"].change):
            trigger(show_bucket, [f["image"], f["i2v_resolution"]], f["bucket"], preprocess=False, **private)
        default_shift = gen.pipeline.defaults.flow_shift
        f["i2v_stability"].input(lambda on: STABLE_FLOW_SHIFT if on else default_shift, f["i2v_stability"],
                                 f["flow_shift"], **private)
    else:
        handler, names = make_generate(gen), T2V_INPUTS + SAMPLING_INPUTS
        f["resolution"].change(_on_resolution(gen), [f["resolution"], f["height"], f["width"]],
                               [f["height"], f["width"]], **private)
    outputs = [r["video"], r["mp4"], r["seed_used"], r["settings"], r["status"], history]
    job = f["run"].click(handler, [f[name] for name in names] + [history], outputs, api_name="generate",
                         concurrency_limit=1, concurrency_id="device", show_progress_on=[r["video"]],
                         preprocess=False)
    job.then(show_history, history, gallery, **private)
    gallery.select(reopen, history, [r["video"], r["mp4"], r["seed_used"], r["status"]], **private)
    f["stop"].click(make_cancel(gen), None, r["status"], api_name="cancel", concurrency_limit=None)
    f["stop"].click(None, cancels=[job])


def build_demo(pipeline: HunyuanVideoPipeline, *, output_dir: Path, limits: Limits, queue_size: int = 16,
               i2v: I2VDefaults | None = None) -> gr.Blocks:
    """The page around one ``pipeline``; results go under ``output_dir`` with generated names.

    ``i2v``: the model's image-to-video defaults (``ModelVariant.i2v``) for an image-to-video
    pipeline, which gets the image page. Launch it with ``allowed_paths=[output_dir]`` (when
    outside the working and temporary folders) so the page can serve the videos.
    """
    gen = Generator(pipeline, output_dir, limits, i2v)
    with Page(title="HunyuanVideo", analytics_enabled=False) as demo:
        gr.Markdown(_intro(gen))
        history = gr.State([])
        with gr.Row():
            with gr.Column():
                form = _form(gen)
            with gr.Column():
                results = _results()
        gallery = gr.Gallery(label="This session's videos (click one to watch it again)", columns=6,
                             height=240, object_fit="contain", fit_columns=False, allow_preview=False,
                             elem_id="history")
        _wire(gen, form, results, history, gallery)
    return demo.queue(max_size=queue_size, default_concurrency_limit=1)
