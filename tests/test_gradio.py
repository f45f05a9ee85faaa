"""gradio_server.py end to end: the API, a real browser, validation, cancel and the queue.

One server (tiny random model) is started for the module on a free loopback port. Browser tests
drive Debian's chromium through Playwright; without them they skip, unless
``HYVIDEO_REQUIRE_BROWSER=1`` (set by CI) makes a missing browser a failure.
"""

from __future__ import annotations

import os
import re
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


@pytest.fixture(scope="module", autouse=True)
def booting_server(tmp_path_factory):
    """Start the tiny-random server first thing, so it boots while the in-process tests run."""
    if gradio_client is None:
        require("gradio/gradio_client are not installed (pip install gradio gradio_client)")
    work = tmp_path_factory.mktemp("webui")
    out, log = work / "videos", work / "server.log"
    port = free_port()
    cmd = [sys.executable, "gradio_server.py", "--model", "tiny-random", "--server-port", str(port),
           "--output-dir", str(out), "--max-pixels", str(MAX_PIXELS), "--max-frames", str(MAX_FRAMES),
           "--max-steps", str(MAX_STEPS)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        yield Server(proc, f"http://127.0.0.1:{port}/", out, log)
    finally:
        stop_process(proc)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def server(booting_server):
    """(url, output folder) of the running server, once it answers."""
    wait_until_up(booting_server.url, booting_server.process, booting_server.log)
    return booting_server.url, booting_server.output_dir


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


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    # Only the local server: anything else (fonts, analytics, CDNs) is refused.
    context.route("**/*", lambda route: route.continue_() if urlparse(route.request.url).hostname == "127.0.0.1"
                  else route.abort())
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server[0])
    page.wait_for_selector("#prompt textarea")
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
