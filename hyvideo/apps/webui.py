"""The Gradio web demo: one pipeline shared by every visitor, one generation at a time.

:func:`build_demo` takes a built pipeline and typed settings (no argparse here; the flags live in
``gradio_server.py``) and returns a queued ``gr.Blocks``. Requests go through Gradio's queue with
``concurrency_limit=1`` and, behind it, one device lock, so a cancelled job that is still finishing
its current step never overlaps the next one. A session's cancel button sets its own job's flag;
the progress callback raises :class:`GenerationCancelled` at the next step.
"""

from __future__ import annotations

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
import numpy as np
import torch

from hyvideo import compat
from hyvideo.apps.cli import is_out_of_memory
from hyvideo.apps.output import output_metadata, output_stem, write_output
from hyvideo.pipeline.geometry import RESOLUTIONS, Geometry
from hyvideo.pipeline.t2v import HunyuanVideoPipeline
from hyvideo.pipeline.types import (
    MAX_SEED,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    Progress,
    UsageError,
)

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


class _AsSent:
    """A form field whose value reaches the handler as it was sent.

    Gradio's own conversions round 33.5 to 34 and turn 5 into "5" silently, and fail on text, NaN
    or an unknown choice with a generic error (and a traceback in the server log); the handler
    checks the raw value instead, with the same one-line messages as the command line.
    """

    def preprocess(self, payload):  # Gradio's hook
        return payload


class ApiNumber(_AsSent, gr.Number):
    pass


class ApiText(_AsSent, gr.Textbox):
    pass


class ApiChoice(_AsSent, gr.Dropdown):
    pass


class Page(gr.Blocks):
    """The page; an API call with too few values gets one line, not a traceback in the log."""

    def validate_inputs(self, block_fn, inputs):  # Gradio's hook
        try:
            super().validate_inputs(block_fn, inputs)
        except ValueError:
            names = [getattr(c, "label", None) or type(c).__name__ for c in block_fn.inputs]
            raise gr.Error(f"this endpoint takes {len(names)} values ({', '.join(map(str, names))}); "
                           f"the request has {len(inputs)}", print_exception=False) from None


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
    return (frame[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def free_device_memory(device: torch.device) -> None:
    """Drop what a finished or abandoned run left behind (tensors, allocator caches)."""
    gc.collect()
    compat.empty_cache(device)


class Generator:
    """The pipeline behind a device lock, writing each result under ``output_dir``."""

    def __init__(self, pipeline: HunyuanVideoPipeline, output_dir: Path, limits: Limits) -> None:
        self.pipeline = pipeline
        self.output_dir = Path(output_dir)
        self.limits = limits
        self.presets = size_presets(pipeline, limits)
        self.jobs = JobBoard()
        self._device = threading.Lock()

    def request(self, prompt: str, negative_prompt: str | None, resolution: str, height: int | None,
                width: int | None, video_length: int | None, infer_steps: int | None, seed: int | None,
                random_seed: bool, embedded_cfg_scale: float | None, cfg_scale: float | None,
                flow_shift: float | None) -> GenerationRequest:
        """The page's fields as a checked request (raises :class:`UsageError`)."""
        # The request checks every value's type and range; these two are the page's own fields.
        if not isinstance(resolution, str):
            raise UsageError(f"resolution must be a preset name or {CUSTOM!r}, got {resolution!r}", "resolution")
        if not isinstance(random_seed, bool):
            raise UsageError(f"random seed must be true or false, got {random_seed!r}", "random_seed")
        height, width = self._size(resolution, height, width)
        use_random = random_seed or seed is None or (_number("seed", seed) < 0)
        if not use_random and seed > MAX_SEED:
            raise UsageError(f"seed {int(seed)} is too large; use 0 to {MAX_SEED}, or -1 for a random seed")
        request = self.pipeline.request(
            "" if prompt is None else prompt, height=height,
            negative_prompt=negative_prompt.strip() or None if isinstance(negative_prompt, str) else negative_prompt,
            width=width, video_length=_integer("video_length", video_length),
            infer_steps=_integer("infer_steps", infer_steps),
            seed=random.randrange(2**31) if use_random else _integer("seed", seed), cfg_scale=cfg_scale,
            embedded_cfg_scale=embedded_cfg_scale, flow_shift=flow_shift,
        )
        self.limits.check(request)
        return request

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


def _number(name: str, value) -> float:
    """A page or API field that must be a finite number (the API may send anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = repr(value) if len(repr(value)) <= 40 else f"{type(value).__name__} {repr(value)[:40]}..."
        raise UsageError(f"{name.replace('_', ' ')} must be a number, got {shown}", name)
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


def make_generate(gen: Generator) -> Callable:
    """The generate handler. Its parameter names are the API's (``gradio_client`` ``/generate``)."""

    def generate(prompt: str, negative_prompt: str, resolution: str, height: float | None,
                 width: float | None, video_length: float, infer_steps: float, seed: float | None,
                 random_seed: bool, embedded_cfg_scale: float | None, cfg_scale: float,
                 flow_shift: float, history: list, request: gr.Request,
                 progress: gr.Progress = gr.Progress()):  # noqa: B008 (Gradio's injection idiom)
        try:
            req = gen.request(prompt, negative_prompt, resolution, height, width, video_length,
                              infer_steps, seed, random_seed, embedded_cfg_scale, cfg_scale, flow_shift)
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
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"Cancelled at {job.stage}.", history
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
        item = HistoryItem(str(path), req.seed, f"seed {req.seed}: {req.prompt[:60]}",
                           poster_frame(result.videos[0]))
        history = [item, *(history or [])][:HISTORY_LENGTH]
        status = f"Done in {seconds:.1f} s: seed {req.seed}, saved as `{path.name}`."
        return str(path), str(path), req.seed, settings, status, history

    return generate


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
    lim = gen.limits
    return (f"This server allows up to {lim.max_pixels:,} pixels per frame, {lim.max_frames} frames "
            f"and {lim.max_steps} steps. Sizes are multiples of {gen.pipeline.geometry.size_multiple}; "
            f"frame counts are {gen.pipeline.geometry.time_compression_ratio}n+1.")


def _intro(pipeline: HunyuanVideoPipeline) -> str:
    text = f"# HunyuanVideo\nText to video with **{pipeline.name}**. One video is generated at a time; " \
           "other requests wait in the queue."
    if pipeline.name == "tiny-random":
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
    resolution = ApiChoice(choices, value=value, label="Resolution", elem_id="resolution")
    with gr.Row():
        custom = value == CUSTOM
        h = ApiNumber(height, label="Height (custom)", precision=0, interactive=custom, elem_id="height")
        w = ApiNumber(width, label="Width (custom)", precision=0, interactive=custom, elem_id="width")
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
        frames = ApiNumber(lim.largest_frames(d.video_length, gen.pipeline.geometry),
                           label=f"Frames ({gen.pipeline.geometry.time_compression_ratio}n+1)", precision=0,
                           elem_id="frames", info=f"at most {lim.max_frames}")
        steps = ApiNumber(min(d.infer_steps, lim.max_steps), label="Steps", precision=0, elem_id="steps",
                          info=f"at most {lim.max_steps}")
    with gr.Row():
        seed = ApiNumber(-1, label="Seed", precision=0, elem_id="seed", info="-1 = random")
        random_seed = gr.Checkbox(True, label="Random seed", elem_id="random-seed")
    with gr.Row():
        embedded = ApiNumber(d.embedded_cfg_scale, label="Embedded guidance", elem_id="embedded-cfg-scale")
        cfg = ApiNumber(d.cfg_scale, label="Guidance scale (> 1 runs the negative prompt)", elem_id="cfg-scale")
        shift = ApiNumber(d.flow_shift, label="Flow shift", elem_id="flow-shift")
    return [frames, steps, seed, random_seed, embedded, cfg, shift]


def build_demo(pipeline: HunyuanVideoPipeline, *, output_dir: Path, limits: Limits,
               queue_size: int = 16) -> gr.Blocks:
    """The page around one ``pipeline``; results go under ``output_dir`` with generated names.

    Launch it with ``allowed_paths=[output_dir]`` so the page can serve the videos.
    """
    gen = Generator(pipeline, output_dir, limits)
    with Page(title="HunyuanVideo", analytics_enabled=False) as demo:
        gr.Markdown(_intro(pipeline))
        history = gr.State([])
        with gr.Row():
            with gr.Column():
                prompt = ApiText(label="Prompt", lines=3, elem_id="prompt",
                                    placeholder="Describe the video to generate")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts")
                negative = ApiText("", label="Negative prompt", lines=2, elem_id="negative-prompt",
                                      placeholder="empty: the official negative prompt (used when guidance scale > 1)")
                resolution, height, width = _resolution_fields(gen)
                frames, steps, seed, random_seed, embedded, cfg, shift = _sampling_fields(gen)
                gr.Markdown(_limits_note(gen))
            with gr.Column():
                video = gr.Video(label="Result", interactive=False, buttons=["download"], elem_id="video")
                status = gr.Markdown("", label="Status", elem_id="status")
                with gr.Row():
                    seed_used = gr.Number(label="Seed used", precision=0, interactive=False, elem_id="seed-used")
                    mp4 = gr.File(label="mp4 (settings embedded)", interactive=False, elem_id="mp4")
                with gr.Accordion("Settings of this video", open=False):
                    settings = gr.JSON(label="Settings")
        gallery = gr.Gallery(label="This session's videos (click one to watch it again)", columns=6,
                             height=240, object_fit="contain", fit_columns=False, allow_preview=False,
                             elem_id="history")

        resolution.change(_on_resolution(gen), [resolution, height, width], [height, width],
                          api_visibility="private", queue=False)
        inputs = [prompt, negative, resolution, height, width, frames, steps, seed, random_seed,
                  embedded, cfg, shift, history]
        outputs = [video, mp4, seed_used, settings, status, history]
        job = run.click(make_generate(gen), inputs, outputs, api_name="generate", concurrency_limit=1,
                        concurrency_id="device", show_progress_on=[video])
        job.then(show_history, history, gallery, api_visibility="private", queue=False)
        gallery.select(reopen, history, [video, mp4, seed_used, status], api_visibility="private", queue=False)
        stop.click(make_cancel(gen), None, status, api_name="cancel", concurrency_limit=None)
        stop.click(None, cancels=[job])
    return demo.queue(max_size=queue_size, default_concurrency_limit=1)
