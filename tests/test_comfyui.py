"""The node pack in comfyui/, tested in a real ComfyUI (v0.3.75, built by tests/comfyui_harness.py).

One server is started for the module, on a free loopback port, with ``comfyui/`` linked into its
custom_nodes, two small LoRA files in its models/loras and ComfyUI's own ``example.png`` (which
the image-to-video workflows load) plus a 1x1 PNG in its input/. If ComfyUI cannot be built here (no
network for the first build, say) the tests skip with one line; ``HYVIDEO_REQUIRE_COMFYUI=1``
(set by CI) makes that a failure.
"""

from __future__ import annotations

import copy
import json
import re
import shutil

import pytest
import torch

from tests import comfyui_harness as harness
from tests.conftest import ROOT

PACK = ROOT / "comfyui"
WORKFLOWS = PACK / "workflows"
SAMPLER, DECODE = "3", "4"  # node ids in the example workflows
LOAD_IMAGE, I2V_IMAGE = "7", "8"  # ... and in the image-to-video ones
EXAMPLE_IMAGE = "example.png"  # ships in ComfyUI/input; the I2V workflows load it


def workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def tiny_lora(seed: int) -> dict[str, torch.Tensor]:
    """A rank-4 LoRA on two Linears of the tiny DiT (official module names)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"double_blocks.0.img_attn_qkv": (192, 64), "single_blocks.1.linear2": (64, 320)}
    state = {}
    for module, (out, inp) in shapes.items():
        state[f"{module}.lora_A.weight"] = torch.randn(4, inp, generator=g) * 0.5
        state[f"{module}.lora_B.weight"] = torch.randn(out, 4, generator=g) * 0.5
    return state


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from safetensors.torch import save_file

    try:
        env = harness.prepare(log=lambda message: None)
    except Exception as err:  # any build failure is reported the same way: skip, or fail in CI
        harness.unavailable(str(err))
    base = tmp_path_factory.mktemp("comfyui")
    (base / "models" / "loras").mkdir(parents=True)
    for seed in (1, 2):
        save_file(tiny_lora(seed), str(base / "models" / "loras" / f"tiny_{seed}.safetensors"))
    (base / "input").mkdir()
    shutil.copy(env.folder / "input" / EXAMPLE_IMAGE, base / "input" / EXAMPLE_IMAGE)
    from PIL import Image

    Image.new("RGB", (1, 1), (255, 0, 0)).save(base / "input" / "one_pixel.png")
    srv = harness.ComfyServer(env, base, {"hyvideo_nodes": PACK})
    try:
        srv.start()
    except harness.ComfyUIUnavailable as err:
        harness.unavailable(str(err))
    yield srv
    srv.stop()


def test_harness_runs_builtin_nodes(server):
    """ComfyUI's own nodes: an image batch saved as PNGs, an animated WEBP and an H.264 MP4."""
    from PIL import Image

    prompt = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 48, "batch_size": 5, "color": 0xFF0000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "builtin/img"}},
        "3": {"class_type": "SaveAnimatedWEBP",
              "inputs": {"images": ["1", 0], "filename_prefix": "builtin/anim", "fps": 8.0,
                         "lossless": True, "quality": 80, "method": "default"}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "5": {"class_type": "SaveVideo",
              "inputs": {"video": ["4", 0], "filename_prefix": "builtin/vid", "format": "mp4", "codec": "h264"}},
    }
    run = server.run(prompt, timeout=120)
    assert run.outcome == "execution_success", run.error
    assert sorted(run.executed_nodes()) == ["1", "2", "3", "4", "5"]
    folder = server.output_dir / "builtin"
    pngs = sorted(folder.glob("img_*.png"))
    assert len(pngs) == 5
    with Image.open(pngs[0]) as image:
        assert image.size == (64, 48) and image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    with Image.open(next(folder.glob("anim_*.webp"))) as anim:  # (identical frames are merged)
        assert anim.format == "WEBP" and anim.size == (64, 48)
    import imageio.v2 as imageio

    with imageio.get_reader(next(folder.glob("vid_*.mp4")), "ffmpeg") as reader:
        assert reader.count_frames() == 5 and reader.get_meta_data()["codec"] == "h264"
    history = server.history(run.prompt_id)
    assert history["status"]["status_str"] == "success"
    assert {f["filename"] for f in history["outputs"]["2"]["images"]} == {p.name for p in pngs}

    # Same prompt again: every node comes from ComfyUI's cache, nothing runs.
    rerun = server.run(prompt, timeout=60)
    assert rerun.outcome == "execution_success" and rerun.executed_nodes() == []
    assert sorted(rerun.of_type("execution_cached")[0]["nodes"]) == ["1", "2", "3", "4", "5"]


def test_harness_reports_validation_errors(server):
    """/prompt validates limits before queueing: an out-of-range input is an HTTP 400."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 48, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bad"}},
    }
    status, reply = server.queue_prompt(prompt)
    assert status == 400
    (error,) = reply["node_errors"]["1"]["errors"]
    assert error["type"] == "value_smaller_than_min" and error["details"] == "width"


# --- the hyvideo node pack -------------------------------------------------------------------------

def test_object_info_lists_every_node_with_its_limits(server):
    from comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    info = server.object_info()
    assert set(NODE_CLASS_MAPPINGS) <= set(info), server.log_tail()
    for name in NODE_CLASS_MAPPINGS:
        assert info[name]["category"] == "HunyuanVideo (hyvideo)"
        assert info[name]["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[name]
    sampler = info["HyVideoSampler"]["input"]["required"]
    assert (sampler["steps"][1]["min"], sampler["steps"][1]["max"]) == (1, 1000)
    assert sampler["width"][1]["step"] == 16 and sampler["width"][1]["min"] == 16
    assert sampler["frames"][1]["step"] == 4 and sampler["seed"][1]["max"] == 2**63 - 1
    assert sampler["cfg"][1]["min"] == 1.0 and "720p-16:9" in sampler["size"][0]
    assert set(sampler["step_cache"][0]) == {"none", "teacache", "first-block"}
    loader = info["HyVideoModelLoader"]["input"]["required"]
    assert loader["model"][1]["default"] == "tiny-random"
    assert {"none", "model", "sequential", "blocks"} == set(loader["offload"][0])
    assert loader["blocks_on_device"][1]["min"] == 1
    assert info["HyVideoLoraLoader"]["input"]["required"]["lora"][0] == ["tiny_1.safetensors", "tiny_2.safetensors"]
    assert info["HyVideoSampler"]["output"] == ["LATENT"] and info["HyVideoDecode"]["output"] == ["IMAGE"]


def progress_of(run, node: str) -> list[tuple[int, int]]:
    return [(d["value"], d["max"]) for d in run.of_type("progress") if d["node"] == node]


def test_tiny_workflow_writes_a_video_with_progress_per_step(server):
    import imageio.v2 as imageio

    prompt = workflow("t2v_tiny.json")
    run = server.run(prompt, timeout=600)
    assert run.outcome == "execution_success", (run.error, server.log_tail())
    steps = prompt[SAMPLER]["inputs"]["steps"]
    assert progress_of(run, SAMPLER) == [(k, steps) for k in range(1, steps + 1)]
    (video,) = server.history(run.prompt_id)["outputs"]["6"]["images"]
    path = server.output_dir / video["subfolder"] / video["filename"]
    assert path.suffix == ".mp4" and path.parent.name == "hyvideo"
    with imageio.get_reader(path, "ffmpeg") as reader:
        meta = reader.get_meta_data()
        assert reader.count_frames() == prompt[SAMPLER]["inputs"]["frames"]
        assert meta["size"] == (prompt[SAMPLER]["inputs"]["width"], prompt[SAMPLER]["inputs"]["height"])


def test_a_cached_rerun_executes_nothing_and_a_new_seed_only_the_sampler_onwards(server):
    prompt = workflow("t2v_tiny.json")
    server.run(prompt, timeout=600)  # (cached already when the previous test ran)
    again = server.run(prompt, timeout=600)
    assert again.outcome == "execution_success" and again.executed_nodes() == []
    reseeded = copy.deepcopy(prompt)
    reseeded[SAMPLER]["inputs"]["seed"] += 1
    run = server.run(reseeded, timeout=600)
    assert run.outcome == "execution_success"
    assert sorted(run.executed_nodes()) == [SAMPLER, DECODE, "5", "6"]  # loader and text reused
    loads = re.findall(r"hyvideo: loading tiny-random$", server.log_path.read_text(), re.MULTILINE)
    assert len(loads) == 1  # loaded once


def test_interrupt_stops_at_the_next_step(server):
    prompt = workflow("t2v_tiny.json")
    prompt[SAMPLER]["inputs"].update(steps=300, seed=7)
    seen = {}

    def interrupt_once(srv, message):
        data = message.get("data", {})
        if message.get("type") == "progress" and data.get("node") == SAMPLER and "at" not in seen:
            seen["at"] = data["value"]
            srv.interrupt()

    run = server.run(prompt, timeout=600, on_message=interrupt_once)
    assert run.outcome == "execution_interrupted"
    (stopped,) = run.of_type("execution_interrupted")
    assert stopped["node_id"] == SAMPLER
    values = [v for v, _ in progress_of(run, SAMPLER)]
    # Steps already under way when /interrupt arrived may still report; none after the next one.
    assert max(values) <= seen["at"] + 2 < 300
    after = server.run(workflow("t2v_tiny.json"), timeout=600)  # the server goes on normally
    assert after.outcome == "execution_success"


def test_out_of_range_inputs_are_refused_with_http_400(server):
    for node, name, value, kind in ((SAMPLER, "steps", 0, "value_smaller_than_min"),
                                    (SAMPLER, "width", 8, "value_smaller_than_min"),
                                    (SAMPLER, "cfg", 101.0, "value_bigger_than_max"),
                                    ("1", "blocks_on_device", 0, "value_smaller_than_min"),
                                    ("1", "offload", "everywhere", "value_not_in_list")):
        prompt = workflow("t2v_tiny.json")
        prompt[node]["inputs"][name] = value
        status, reply = server.queue_prompt(prompt)
        assert status == 400, (name, reply)
        (error,) = reply["node_errors"][node]["errors"]
        assert error["type"] == kind and error["extra_info"]["input_name"] == name


@pytest.mark.parametrize("name", ["t2v_official.json", "t2v_fp8_blockswap_24gb.json", "i2v_official.json"])
def test_missing_checkpoint_is_an_execution_error(server, name):
    """The official workflows pass validation; without the checkpoints the loader says where it looked."""
    run = server.run(workflow(name), timeout=120)
    assert run.outcome == "execution_error"
    assert run.error["node_id"] == "1" and run.error["node_type"] == "HyVideoModelLoader"
    message = run.error["exception_message"].splitlines()[0]
    assert "model folder 'HunyuanVideo' not found" in message and "models/hyvideo/HunyuanVideo" in message


def test_a_size_the_model_cannot_make_is_an_execution_error(server):
    prompt = workflow("t2v_tiny.json")
    prompt[SAMPLER]["inputs"]["width"] = 40  # within the limits, but not a multiple of 16
    run = server.run(prompt, timeout=120)
    assert run.outcome == "execution_error" and run.error["node_id"] == SAMPLER
    assert "width 40" in run.error["exception_message"] and "16" in run.error["exception_message"]


def _latent_workflow(loras: list[tuple[str, float]], prefix: str) -> dict:
    """Loader -> LoRA nodes -> text -> sampler -> ComfyUI's SaveLatent, and the frames through
    ComfyUI's ImageScaleBy into its SaveAnimatedWEBP."""
    base = workflow("t2v_tiny.json")
    prompt = {k: base[k] for k in ("1", "2", SAMPLER, DECODE)}
    model = ["1", 0]
    for i, (lora, strength) in enumerate(loras):
        node = f"l{i}"
        prompt[node] = {"class_type": "HyVideoLoraLoader",
                        "inputs": {"model": model, "lora": lora, "strength": strength}}
        model = [node, 0]
    prompt[SAMPLER]["inputs"].update(model=model, steps=3)
    prompt["7"] = {"class_type": "SaveLatent", "inputs": {"samples": [SAMPLER, 0], "filename_prefix": prefix}}
    prompt["8"] = {"class_type": "ImageScaleBy",
                   "inputs": {"image": [DECODE, 0], "upscale_method": "nearest-exact", "scale_by": 0.5}}
    prompt["9"] = {"class_type": "SaveAnimatedWEBP",
                   "inputs": {"images": ["8", 0], "filename_prefix": prefix, "fps": 8.0, "lossless": True,
                              "quality": 80, "method": "default"}}
    return prompt


def _saved_latent(server, run, node: str = "7") -> torch.Tensor:
    from safetensors.torch import load_file

    (saved,) = server.history(run.prompt_id)["outputs"][node]["latents"]
    return load_file(str(server.output_dir / saved["subfolder"] / saved["filename"]))["latent_tensor"]


def test_latents_and_loras_match_the_library(server):
    """The LATENT ComfyUI saves is our pipeline's latents / the VAE scaling factor, with and
    without two stacked LoRAs; the frames flow through ComfyUI's own image nodes."""
    from PIL import Image

    from hyvideo.dit.lora import LoraSpec, apply_loras, detach_loras

    plain = server.run(_latent_workflow([], "latents/plain"), timeout=600)
    assert plain.outcome == "execution_success", plain.error
    stacked = [("tiny_1.safetensors", 0.7), ("tiny_2.safetensors", -1.5)]
    with_loras = server.run(_latent_workflow(stacked, "latents/lora"), timeout=600)
    assert with_loras.outcome == "execution_success", with_loras.error
    assert "1" not in with_loras.executed_nodes()  # the loaded model is reused under the LoRAs

    from comfyui.engine import pipeline_for
    from comfyui.nodes import HyVideoModelLoader

    (spec,) = HyVideoModelLoader().load(**workflow("t2v_tiny.json")["1"]["inputs"])
    pipe = pipeline_for(spec)  # the same tiny model, in this process
    s = workflow("t2v_tiny.json")[SAMPLER]["inputs"]
    request = pipe.request(workflow("t2v_tiny.json")["2"]["inputs"]["prompt"], height=s["height"],
                           width=s["width"], video_length=s["frames"], infer_steps=3, seed=s["seed"])
    expected = pipe(request, decode=False, show_progress=False).latents / pipe.vae.scaling_factor
    # (another process: thread counts may order float sums differently)
    assert torch.allclose(_saved_latent(server, plain), expected, rtol=0, atol=1e-5)
    loras = server.models_dir / "loras"
    apply_loras(pipe.dit, [LoraSpec(loras / name, strength) for name, strength in stacked], fuse=False)
    expected_lora = pipe(request, decode=False, show_progress=False).latents / pipe.vae.scaling_factor
    detach_loras(pipe.dit)
    assert not torch.equal(expected_lora, expected)
    assert torch.allclose(_saved_latent(server, with_loras), expected_lora, rtol=0, atol=1e-5)
    (webp,) = server.history(plain.prompt_id)["outputs"]["9"]["images"]
    with Image.open(server.output_dir / webp["subfolder"] / webp["filename"]) as image:
        assert image.size == (s["width"] // 2, s["height"] // 2)


def test_prompt_rewrite_through_an_endpoint(server):
    """The text node asks an OpenAI-compatible endpoint (a stand-in on loopback) for the rewrite
    and encodes its answer; ComfyUI's PreviewAny shows the prompt that was used."""
    import http.server
    import threading

    asked = []

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            asked.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"choices": [{"message": {"content": "A red fox runs through fresh snow."}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    try:
        base = workflow("t2v_tiny.json")
        prompt = {"1": base["1"], "2": base["2"],
                  "p": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}}
        prompt["2"]["inputs"].update(prompt="a fox in snow", rewrite="master",
                                     rewrite_endpoint=f"http://127.0.0.1:{endpoint.server_port}/v1")
        run = server.run(prompt, timeout=120)
    finally:
        endpoint.shutdown()
        endpoint.server_close()
    assert run.outcome == "execution_success", run.error
    assert server.history(run.prompt_id)["outputs"]["p"]["text"] == ["A red fox runs through fresh snow."]
    (request,) = asked
    assert "Mode: master" in request["messages"][0]["content"]
    assert request["messages"][0]["content"].endswith("Prompt: a fox in snow")


# --- image to video --------------------------------------------------------------------------------

def test_object_info_lists_the_image_to_video_node_and_inputs(server):
    info = server.object_info()
    node = info["HyVideoI2VImage"]
    required = node["input"]["required"]
    assert required["image"][0] == "IMAGE"
    assert required["i2v_resolution"][0] == ["144p", "360p", "540p", "720p"]
    assert required["i2v_resolution"][1]["default"] == "720p"
    assert required["i2v_stability"][0] == "BOOLEAN" and required["i2v_stability"][1]["default"] is False
    assert node["output"] == ["HYVIDEO_I2V_IMAGE", "INT", "INT"]
    assert node["output_name"] == ["i2v_image", "width", "height"]
    text = info["HyVideoTextEncode"]["input"]
    assert text["optional"]["image"][0] == "HYVIDEO_I2V_IMAGE" and "image" not in text["required"]
    variants = info["HyVideoModelLoader"]["input"]["required"]["variant"]
    assert {"HYVideo-I2V", "HYVideo-I2V-latent_concat", "tiny-random-i2v"} <= set(variants[0])
    assert variants[1]["default"] == "HYVideo-T/2-cfgdistill"
    assert info["LoadImage"]["input"]["required"]["image"][0] == [EXAMPLE_IMAGE, "one_pixel.png"]


def test_i2v_tiny_workflow_writes_a_video_and_matches_the_library(server):
    """LoadImage -> our I2V nodes -> CreateVideo/SaveVideo: the video has the image's bucket size,
    and the LATENT ComfyUI saves is the I2V pipeline's latents (the image given as a file)."""
    import imageio.v2 as imageio

    from hyvideo.pipeline.image_input import bucket_for, load_i2v_image

    prompt = workflow("i2v_tiny.json")
    prompt["9"] = {"class_type": "SaveLatent", "inputs": {"samples": [SAMPLER, 0], "filename_prefix": "latents/i2v"}}
    run = server.run(prompt, timeout=600)
    assert run.outcome == "execution_success", (run.error, server.log_tail())
    s = prompt[SAMPLER]["inputs"]
    assert progress_of(run, SAMPLER) == [(k, s["steps"]) for k in range(1, s["steps"] + 1)]
    resolution = prompt[I2V_IMAGE]["inputs"]["i2v_resolution"]
    height, width = bucket_for(768, 768, resolution)  # example.png is 768 x 768
    (video,) = server.history(run.prompt_id)["outputs"]["6"]["images"]
    with imageio.get_reader(server.output_dir / video["subfolder"] / video["filename"], "ffmpeg") as reader:
        assert reader.count_frames() == s["frames"] and reader.get_meta_data()["size"] == (width, height)

    from comfyui.engine import pipeline_for
    from comfyui.nodes import HyVideoModelLoader

    (spec,) = HyVideoModelLoader().load(**prompt["1"]["inputs"])
    pipe = pipeline_for(spec)  # tiny-random-i2v, the same random weights, in this process
    image = load_i2v_image(server.base / "input" / EXAMPLE_IMAGE, resolution)
    request = pipe.request(prompt["2"]["inputs"]["prompt"], image, video_length=s["frames"],
                           infer_steps=s["steps"], seed=s["seed"], flow_shift=s["flow_shift"])
    expected = pipe(request, decode=False, show_progress=False).latents / pipe.vae.scaling_factor
    saved = _saved_latent(server, run, "9")
    assert saved.shape == expected.shape == (1, 16, (s["frames"] - 1) // 4 + 1, height // 8, width // 8)
    assert torch.allclose(saved, expected, rtol=0, atol=1e-5)
    # token_replace: frame 0 is the image's latent, untouched by the sampler
    assert torch.allclose(saved[:, :, :1], pipe.image_latents(request).cpu() / pipe.vae.scaling_factor, atol=1e-5)


def test_a_bad_image_is_an_execution_error(server):
    prompt = workflow("i2v_tiny.json")
    prompt[LOAD_IMAGE]["inputs"]["image"] = "one_pixel.png"
    run = server.run(prompt, timeout=120)
    assert run.outcome == "execution_error"
    assert run.error["node_id"] == I2V_IMAGE and run.error["node_type"] == "HyVideoI2VImage"
    message = run.error["exception_message"]
    assert message.startswith("image (the first frame of the IMAGE input): 1x1 px is too small") and "16x16" in message


def test_the_image_and_the_model_must_agree(server):
    """An I2V model's text node without the image, and a T2V model's with one: a node error each."""
    no_image = workflow("i2v_tiny.json")
    del no_image["2"]["inputs"]["image"]
    run = server.run(no_image, timeout=120)
    assert run.outcome == "execution_error" and run.error["node_id"] == "2"
    assert "model tiny-random-i2v is image-to-video" in run.error["exception_message"]
    t2v_with_image = workflow("i2v_tiny.json")
    t2v_with_image["1"]["inputs"]["variant"] = "HYVideo-T/2-cfgdistill"
    run = server.run(t2v_with_image, timeout=120)
    assert run.outcome == "execution_error" and run.error["node_id"] == "2"
    assert "model tiny-random is text-to-video" in run.error["exception_message"]
