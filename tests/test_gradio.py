"""gradio_server.py end to end: the API, a real browser, validation, cancel and the queue.

Two servers are started for the module on free loopback ports: text to video (tiny-random) and
image to video (tiny-random-i2v). Browser tests drive Debian's chromium through Playwright;
without them they skip, unless ``HYVIDEO_REQUIRE_BROWSER=1`` (set by CI) makes a missing browser
a failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import ROOT, stop_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
MAX_PIXELS = 128 * 192  # the tiny model's default size is the largest this test server allows
MAX_FRAMES = 33
MAX_STEPS = 2000
TINY = {"resolution": "custom", "height": 32, "width": 48, "video_length": 5, "infer_steps": 2}
I2V_MAX_PIXELS = 192 * 192  # the largest 144p bucket: the I2V test server offers only 144p
I2V_TINY = {"i2v_resolution": "144p", "video_length": 5, "infer_steps": 2}


def require(reason: str) -> None:
    """Skip for a missing optional tool, or fail where CI requires the browser tests to run."""
    if os.environ.get("HYVIDEO_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (HYVIDEO_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


try:
    import gradio_client
except ImportError:
    gradio_client = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gradio_server.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"gradio_server.py did not answer at {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    output_dir: Path
    log: Path


def start_server(work: Path, model: str, *flags: str) -> Server:
    out, log = work / "videos", work / "server.log"
    port = free_port()
    cmd = [sys.executable, "gradio_server.py", "--model", model, "--server-port", str(port),
           "--output-dir", str(out), *flags]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return Server(proc, f"http://127.0.0.1:{port}/", out, log)


def stop_server(server: Server) -> None:
    stop_process(server.process)
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-3000:]


@pytest.fixture(scope="module", autouse=True)
def booting_server(tmp_path_factory):
    """Start the tiny-random server first thing, so it boots while the in-process tests run."""
    if gradio_client is None:
        require("gradio/gradio_client are not installed (pip install gradio gradio_client)")
    server = start_server(tmp_path_factory.mktemp("webui"), "tiny-random", "--max-pixels", str(MAX_PIXELS),
                          "--max-frames", str(MAX_FRAMES), "--max-steps", str(MAX_STEPS))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module", autouse=True)
def booting_i2v_server(tmp_path_factory, booting_server):
    """The image-to-video server (tiny-random-i2v), booting beside the first one."""
    server = start_server(tmp_path_factory.mktemp("webui_i2v"), "tiny-random-i2v",
                          "--max-pixels", str(I2V_MAX_PIXELS), "--max-frames", "9", "--max-steps", "4")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def server(booting_server):
    """(url, output folder) of the running server, once it answers."""
    wait_until_up(booting_server.url, booting_server.process, booting_server.log)
    return booting_server.url, booting_server.output_dir


@pytest.fixture(scope="module")
def i2v_server(booting_i2v_server):
    """(url, output folder) of the running image-to-video server, once it answers."""
    wait_until_up(booting_i2v_server.url, booting_i2v_server.process, booting_i2v_server.log)
    return booting_i2v_server.url, booting_i2v_server.output_dir


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def generate(c, **fields):
    return c.predict(api_name="/generate", **{"prompt": "a cat", **TINY, **fields})


def wait_for_progress(job, timeout: float = 120) -> None:
    """Until the job reports denoising progress (it holds the device)."""
    from gradio_client.utils import Status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job.status()
        if status.code == Status.PROGRESS and status.progress_data:
            return
        assert not job.done(), f"the job ended before reporting progress: {job.outputs()}"
        time.sleep(0.1)
    pytest.fail("no progress from the job")


# --- in process: the page's logic without a server ------------------------------------------

class FlakyPipeline:
    """Stands in for HunyuanVideoPipeline: fails on its first call, then makes grey videos."""

    name, calls = "flaky", 0

    def __init__(self):
        import torch

        from hyvideo.pipeline.geometry import Geometry
        from hyvideo.pipeline.variants import SamplingDefaults

        self.device = torch.device("cpu")
        self.defaults = SamplingDefaults(height=32, width=48, video_length=5, infer_steps=2)
        self.geometry = Geometry()

    def request(self, prompt, **overrides):
        from hyvideo.pipeline.types import request_from_defaults

        request = request_from_defaults(self.defaults, prompt=prompt, **overrides)
        self.geometry.check_request(request)
        return request

    def __call__(self, request, *, callback, decode, show_progress):
        import torch

        from hyvideo.pipeline.types import GenerationResult, Progress

        self.calls += 1
        callback(Progress("text", 0, 1))
        if self.calls == 1:
            raise RuntimeError("simulated failure deep in the model")
        for step in range(1, request.infer_steps + 1):
            callback(Progress("denoise", step, request.infer_steps))
        video = torch.full((1, 3, request.video_length, request.height, request.width), 0.5)
        return GenerationResult(video, torch.zeros(1), [request.seed], request)


def in_process_form(prompt="a cat", seed=7):
    # prompt, negative, resolution, height, width, frames, steps, seed, random seed, embedded, cfg, shift
    return [prompt, "", "default", None, None, 5, 2, seed, False, 6.0, 1.0, 7.0]


@pytest.fixture
def webui():
    if gradio_client is None:
        require("gradio is not installed (pip install gradio gradio_client)")
    from hyvideo.apps import webui

    return webui


def test_a_failed_generation_gives_one_line_and_leaves_the_server_usable(webui, tmp_path, caplog):
    import gradio as gr

    from hyvideo.apps.video_io import read_mp4_frames

    gen = webui.Generator(FlakyPipeline(), tmp_path, webui.Limits())
    generate = webui.make_generate(gen)
    quiet = lambda *args, **kwargs: None
    with pytest.raises(gr.Error) as failure:
        generate(*in_process_form(), [], None, quiet)
    assert str(failure.value.message) == "generation failed (RuntimeError); the server log has the details"
    assert "simulated failure" in caplog.text  # the traceback goes to the server log
    _video, mp4, seed, _settings, status, history = generate(*in_process_form(), [], None, quiet)
    assert seed == 7 and Path(mp4).parent == tmp_path and history[0].video == mp4
    assert history[0].caption == "seed 7: a cat" and history[0].poster.shape == (32, 48, 3)
    assert read_mp4_frames(mp4).shape == (5, 32, 48, 3) and "Done in" in status


def test_cancel_reaches_only_its_own_session(webui):
    board = webui.JobBoard()
    mine = board.start("session-a", "a cat")
    assert board.cancel("session-b") is None and not mine.cancel.is_set()
    assert board.cancel("session-a") is mine and mine.cancel.is_set()
    board.finish("session-a", mine)
    assert mine.finished.is_set() and board.cancel("session-a") is None


def test_presets_respect_the_pixel_limit_and_keep_the_official_names(webui):
    from hyvideo.pipeline.geometry import RESOLUTIONS

    presets = webui.size_presets(FlakyPipeline(), webui.Limits(max_pixels=960 * 544))
    assert presets["default"] == (32, 48) and presets["540p-16:9"] == (544, 960)
    assert "720p-16:9" not in presets and set(presets) - {"default"} <= set(RESOLUTIONS)
    assert webui.Limits(max_frames=31).largest_frames(129) == 29


def test_the_page_builds_with_named_api_endpoints(webui, tmp_path):
    demo = webui.build_demo(FlakyPipeline(), output_dir=tmp_path, limits=webui.Limits(max_frames=9))
    info = demo.get_api_info()["named_endpoints"]
    assert set(info) == {"/generate", "/cancel"}
    names = [p["parameter_name"] for p in info["/generate"]["parameters"]]
    assert names == ["prompt", "negative_prompt", "resolution", "height", "width", "video_length",
                     "infer_steps", "seed", "random_seed", "embedded_cfg_scale", "cfg_scale", "flow_shift"]


def test_the_image_to_video_page_builds_with_its_own_endpoint(webui, tmp_path):
    from hyvideo.pipeline.variants import I2VDefaults

    limits = webui.Limits(max_pixels=300_000)  # 144p and 360p buckets fit, 540p and 720p do not
    demo = webui.build_demo(FlakyPipeline(), output_dir=tmp_path, limits=limits, i2v=I2VDefaults("144p"))
    info = demo.get_api_info()["named_endpoints"]
    assert set(info) == {"/generate", "/cancel"}
    names = [p["parameter_name"] for p in info["/generate"]["parameters"]]
    assert names == ["prompt", "negative_prompt", "image", "i2v_resolution", "i2v_stability", "video_length",
                     "infer_steps", "seed", "random_seed", "embedded_cfg_scale", "cfg_scale", "flow_shift"]
    assert webui.i2v_resolutions(I2VDefaults("144p"), limits) == ["144p", "360p"]
    assert webui.i2v_resolutions(I2VDefaults("720p"), limits) == ["144p", "360p", "720p"]  # the model's stays


def test_building_the_page_writes_no_file_into_the_package(webui, tmp_path, monkeypatch):
    """Gradio writes a .pyi stub beside any module that defines a Component subclass (in a
    read-only install the write fails). Load the page module from a copy of its folder, build
    both pages, and compare the folder's files."""
    import importlib.util

    from hyvideo.pipeline.variants import load_variant

    folder = tmp_path / "apps"
    shutil.copytree(Path(webui.__file__).parent, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    spec = importlib.util.spec_from_file_location("copied_webui", folder / "webui.py")
    page = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "copied_webui", page)  # dataclasses look their module up
    spec.loader.exec_module(page)  # the module's classes are defined here, from the copy
    assert page.ASSETS == folder / "assets"
    for variant in (load_variant("tiny-random"), load_variant("tiny-random-i2v")):
        pipeline = FlakyPipeline()
        pipeline.defaults = variant.sampling
        page.build_demo(pipeline, output_dir=tmp_path / "out", limits=page.Limits(), i2v=variant.i2v)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


@pytest.mark.parametrize("argv, model, resolution", [
    (["--model", "tiny-random"], "tiny-random", None),
    (["--model", "tiny-random", "--i2v-mode"], "tiny-random-i2v", "144p"),
    (["--model", "tiny-random-i2v", "--i2v-resolution", "360p"], "tiny-random-i2v", "360p"),
    (["--model", "HYVideo-T/2", "--i2v-mode"], "HYVideo-I2V", "720p"),
    (["--i2v-mode", "--i2v-condition-type", "latent_concat"], "HYVideo-I2V-latent_concat", "720p"),
])
def test_server_flags_select_the_image_to_video_page(argv, model, resolution):
    from hyvideo.apps import web
    from hyvideo.pipeline.variants import load_variant, variant_names

    args = web.build_parser(variant_names()).parse_args(argv)
    web.select_i2v(args)
    defaults = web.i2v_defaults(args, load_variant(args.model))
    assert args.model == model and (defaults and defaults.resolution) == resolution


@pytest.mark.parametrize("argv, message", [
    (["--model", "tiny-random", "--i2v-resolution", "144p"],
     "--i2v-resolution: --model tiny-random is a text-to-video model; use one of"),
    (["--model", "HYVideo-T/2", "--i2v-condition-type", "token_replace"], "--i2v-condition-type: --model HYVideo-T/2"),
    (["--model", "tiny-random-i2v", "--i2v-condition-type", "latent_concat"],
     "--i2v-condition-type latent_concat: model tiny-random-i2v is token_replace"),
])
def test_server_image_to_video_flags_are_never_ignored(argv, message):
    from hyvideo.apps import web
    from hyvideo.pipeline.variants import variant_names

    with pytest.raises(ValueError, match=re.escape(message)):
        web.select_i2v(web.build_parser(variant_names()).parse_args(argv))


# --- API (gradio_client) ---------------------------------------------------------------------

def test_api_generate_returns_the_requested_mp4_with_its_settings(server):
    from hyvideo.apps.video_io import read_mp4_frames, read_mp4_metadata

    url, out = server
    video, mp4, seed_used, settings, status, *_ = generate(
        client(url), prompt="waves at dusk", video_length=9, infer_steps=3, seed=1234, random_seed=False)
    assert read_mp4_frames(mp4).shape == (9, 32, 48, 3)
    meta = read_mp4_metadata(mp4)
    assert meta["seed"] == seed_used == settings["seed"] == 1234
    assert meta["prompt"] == "waves at dusk" and meta["infer_steps"] == 3 and meta["random_weights"]
    saved = [p for p in out.glob("*.mp4") if "seed1234_waves_at_dusk" in p.name]
    assert len(saved) == 1 and saved[0].name in status  # under --output-dir, a generated name
    assert read_mp4_frames(video).shape == (9, 32, 48, 3)


@pytest.mark.parametrize("fields, message", [
    ({"height": 40}, "height 40 is not a positive multiple of 16; use 32 or 48"),
    ({"video_length": 6}, "video length 6 is not 4n+1; use 5 or 9"),
    ({"prompt": "  "}, "the prompt is empty: describe the video to generate"),
    ({"seed": 2**63, "random_seed": False}, "seed 9223372036854775808 is too large"),
    ({"height": 256, "width": 256}, "video size 256x256 has 65,536 pixels per frame; this server allows at most 24,576"),
    ({"video_length": 37}, "video length 37 is more than this server allows (33 frames)"),
    ({"infer_steps": MAX_STEPS + 1}, f"infer steps {MAX_STEPS + 1} is more than this server allows"),
])
def test_api_rejects_bad_input_with_the_cli_message(server, fields, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=re.escape(message)):
        generate(client(server[0]), **fields)


def test_cancel_stops_a_long_run_and_the_next_request_works(server):
    c = client(server[0])
    job = c.submit(api_name="/generate", prompt="a long one", **{**TINY, "infer_steps": MAX_STEPS})
    wait_for_progress(job)
    assert client(server[0]).predict(api_name="/cancel") == "Nothing is running in this session."
    start = time.monotonic()
    message = c.predict(api_name="/cancel")
    assert message.startswith("Cancelled at denoising ") and message.endswith("the device is free.")
    step, steps = map(int, message.split("denoising ")[1].split(";")[0].split("/"))
    assert steps == MAX_STEPS and step < MAX_STEPS
    assert time.monotonic() - start < 30
    assert job.result()[4].startswith("Cancelled at denoising")
    _video, _mp4, seed_used, settings, _status = generate(c, seed=-1, random_seed=False)  # the device is free
    assert seed_used >= 0 and settings["seed"] == seed_used  # -1: a random seed, reported


def test_two_concurrent_requests_both_complete_one_at_a_time(server):
    from gradio_client.utils import Status

    first, second = client(server[0]), client(server[0])
    long_job = first.submit(api_name="/generate", prompt="first", **{**TINY, "infer_steps": 40})
    wait_for_progress(long_job)
    short_job = second.submit(api_name="/generate", prompt="second", **TINY)
    seen = set()
    while not long_job.done():
        seen.add(short_job.status().code)
        assert not short_job.done(), "the second request ran beside the first"
        time.sleep(0.05)
    assert Status.IN_QUEUE in seen or Status.STARTING in seen  # it waited its turn
    results = long_job.result(), short_job.result(timeout=120)
    assert [r[3]["prompt"] for r in results] == ["first", "second"]
    assert results[0][1] != results[1][1]


# --- image to video (the tiny-random-i2v server) ------------------------------------------------

def picture(path: Path, size: tuple[int, int] = (300, 160)) -> Path:
    """A small landscape test image (width, height): a gradient with a disc, so crops differ."""
    import numpy as np
    from PIL import Image, ImageDraw

    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    image = Image.fromarray(np.stack([np.tile(ramp, (height, 1))] * 3, axis=-1))
    ImageDraw.Draw(image).ellipse([width // 3, height // 4, width // 2, height * 3 // 4], fill=(200, 40, 40))
    image.save(path)
    return path


def generate_i2v(c, image, **fields):
    from gradio_client import handle_file

    return c.predict(api_name="/generate", **{"prompt": "a cat", "image": handle_file(str(image)), **I2V_TINY,
                                              **fields})


def test_i2v_api_animates_an_uploaded_image(i2v_server, tmp_path):
    from hyvideo.apps.video_io import read_mp4_frames, read_mp4_metadata
    from hyvideo.pipeline.image_input import bucket_for

    image = picture(tmp_path / "my photo.png")
    height, width = bucket_for(160, 300, "144p")
    video, mp4, seed_used, settings, status, *_ = generate_i2v(
        client(i2v_server[0]), image, prompt="the disc rolls", seed=5, random_seed=False, i2v_stability=True)
    assert read_mp4_frames(mp4).shape == (5, height, width, 3) == read_mp4_frames(video).shape
    meta = read_mp4_metadata(mp4)
    assert meta == settings and meta["seed"] == seed_used == 5 and meta["i2v_stability"] is True
    assert meta["image"] == {"name": "my photo.png", "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
                             "source_size": [160, 300], "bucket": [height, width]}
    assert meta["model"] == "tiny-random-i2v" and (height, width) != (160, 300)
    saved = [p for p in i2v_server[1].glob("*.mp4") if "seed5_the_disc_rolls" in p.name]
    assert len(saved) == 1 and saved[0].name in status


def bad_image(folder: Path, kind: str) -> Path:
    """A file for one way an upload cannot be animated."""
    from PIL import Image

    if kind == "text":
        (folder / "notes.png").write_text("not a picture")
        return folder / "notes.png"
    if kind == "animated":
        frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
        frames[0].save(folder / "blink.gif", save_all=True, append_images=frames[1:])
        return folder / "blink.gif"
    if kind == "tiny":
        Image.new("RGB", (1, 1)).save(folder / "dot.png")
        return folder / "dot.png"
    Image.new("1", (9000, 8000)).save(folder / "huge.png")  # 72 megapixels, a few kB on disk
    return folder / "huge.png"


@pytest.mark.parametrize("kind, message", [
    ("text", "image notes.png: not an image file PIL can read (valid: a still image file"),
    ("animated", "image blink.gif: an animated image (2 frames); save one frame as a still image"),
    ("tiny", "image dot.png: 1x1 px is too small"),
    ("huge", "image huge.png: 9000x8000 px is 69 megapixels, too many"),
])
def test_i2v_api_refuses_a_bad_image_in_one_line(i2v_server, tmp_path, kind, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as failure:
        generate_i2v(client(i2v_server[0]), bad_image(tmp_path, kind))
    assert str(failure.value).startswith(message) and "\n" not in str(failure.value)
    assert str(tmp_path) not in str(failure.value)  # the upload's name, not a path on either machine


@pytest.mark.parametrize("image, message", [
    (None, "no image: upload the image to animate"),
    ("photo.png", "image must be an image file (gradio_client: image=handle_file(path)), got 'photo.png'"),
    ({"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}},
     "image '/etc/hostname' is not a file uploaded to this server"),
])
def test_i2v_api_takes_only_an_uploaded_file(i2v_server, image, message):
    """Raw HTTP (gradio_client would upload a local path itself): a file on the server is refused."""
    import json

    url = f"{i2v_server[0]}gradio_api/call/generate"
    data = ["a cat", "", image, "144p", False, 5, 2, 1, False, 6.0, 1.0, 17.0]
    request = urllib.request.Request(url, json.dumps({"data": data}).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}/{event}", timeout=60) as response:
        answer = response.read().decode()
    assert "event: error" in answer and json.loads(answer.split("data:", 1)[1])["error"].startswith(message)


# --- a real browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require("Playwright for Python is not installed (pip install playwright; no `playwright install`)")
    if not CHROMIUM.exists():
        require(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    # Only the local server: anything else (fonts, analytics, CDNs) is refused.
    context.route("**/*", lambda route: route.continue_() if urlparse(route.request.url).hostname == "127.0.0.1"
                  else route.abort())
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#prompt textarea")
    return context, page


@pytest.fixture
def page(browser, server):
    context, page = open_page(browser, server[0])
    yield page
    context.close()


@pytest.fixture
def i2v_page(browser, i2v_server):
    context, page = open_page(browser, i2v_server[0])
    yield page
    context.close()


def pick(page, dropdown: str, option: str) -> None:
    page.click(f"#{dropdown} input")
    page.get_by_role("option", name=option).click()


def fill_form(page, prompt: str, frames: int, steps: int) -> None:
    page.fill("#prompt textarea", prompt)
    page.fill("#frames input", str(frames))
    page.fill("#steps input", str(steps))


def test_browser_generates_a_video_with_progress(page, tmp_path):
    fill_form(page, "A cat walks on the grass, realistic style.", frames=5, steps=4)
    pick(page, "resolution", "model default (128x192)")
    page.click("#generate")
    page.wait_for_selector("#video >> text=/denoising \\d+\\/4|encoding text|decoding/")
    page.wait_for_function("() => document.querySelector('#video video')?.getAttribute('src')", timeout=120_000)
    assert page.locator("#video video").get_attribute("src").endswith(".mp4")
    assert "Done in" in page.inner_text("#status")
    page.wait_for_function("() => document.querySelector('#history img')?.naturalWidth > 0")  # history
    shot = Path(os.environ.get("HYVIDEO_WEBUI_SCREENSHOT", tmp_path / "webui.png"))
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_browser_shows_the_validation_message(page, server):
    before = set(server[1].glob("*.mp4"))
    fill_form(page, "a cat", frames=5, steps=2)
    pick(page, "resolution", "custom (height x width below)")
    page.fill("#height input", "40")
    page.click("#generate")
    toast = page.wait_for_selector("text=height 40 is not a positive multiple of 16; use 32 or 48")
    assert toast.is_visible()
    assert "Traceback" not in page.content()
    assert set(server[1].glob("*.mp4")) == before


def test_browser_cancel_stops_a_long_run(page, server):
    fill_form(page, "a long one", frames=5, steps=MAX_STEPS)
    pick(page, "resolution", "custom (height x width below)")
    page.fill("#height input", "32")
    page.fill("#width input", "48")
    page.click("#generate")
    page.wait_for_selector(f"#video >> text=/denoising \\d+\\/{MAX_STEPS}/")
    page.click("#cancel")
    # The cancel handler answers once the running step has ended (up to CANCEL_WAIT_S on a busy
    # machine), so wait longer than Playwright's default minute.
    page.wait_for_selector("#status >> text=/Cancelled at denoising \\d+\\/\\d+; the device is free/",
                           timeout=150_000)
    assert generate(client(server[0]))[2] >= 0  # the next request is served


def test_browser_i2v_upload_shows_the_bucket_then_generates(i2v_page, tmp_path):
    page = i2v_page
    assert page.inner_text("#bucket").startswith("Upload an image")
    page.get_by_text("A pink flower sways").click()  # an example: its picture and its prompt
    page.wait_for_selector("#bucket >> text=/Video size 192 x 192/")
    assert page.input_value("#prompt textarea").startswith("A pink flower sways")
    page.click("#image button[aria-label='Remove Image']")
    page.set_input_files("#image input[type=file]", str(bad_image(tmp_path, "text")))
    page.wait_for_selector("#bucket >> text=Cannot use this image: image notes.png: not an image file PIL can read")
    page.click("#image button[aria-label='Remove Image']")
    page.set_input_files("#image input[type=file]", str(picture(tmp_path / "wide.png")))
    page.wait_for_selector("#bucket >> text=/Video size 128 x 224 .* the image's 160 x 300/")  # before generating
    fill_form(page, "the disc rolls to the right", frames=5, steps=2)
    page.click("#i2v-stability input")
    page.wait_for_function("() => document.querySelector('#flow-shift input').value === '7'")  # official pairing
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#video video')?.getAttribute('src')", timeout=120_000)
    assert "Done in" in page.inner_text("#status")
    page.wait_for_function("() => document.querySelector('#history img')?.naturalWidth > 0")  # history
    shot = Path(os.environ.get("HYVIDEO_WEBUI_I2V_SCREENSHOT", tmp_path / "webui_i2v.png"))
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
