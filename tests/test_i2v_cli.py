"""Image to video from the command line: sample_image2video.py and sample_video.py --i2v-mode on
the tiny random I2V model, batch files with an image per row, torchrun == one process, offload ==
none, and the image-to-video mistakes refused in one line before any model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hyvideo.apps import sample
from hyvideo.apps.video_io import read_mp4_metadata
from tests.conftest import ROOT
from tests.test_parallel import TOL, torchrun

FAST = ["--model", "tiny-random-i2v", "--video-length", "9", "--infer-steps", "2", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    for name, (h, w) in {"wide.png": (90, 160), "tall.png": (200, 120)}.items():
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(folder / name)
    return folder


def run(argv, capsys=None, i2v=True) -> int:
    return sample.main(argv, i2v=i2v)


def test_sample_image2video_writes_an_mp4_with_the_image_in_its_metadata(images, tmp_path):
    assert run([*FAST, "--prompt", "a red fox", "--i2v-image-path", str(images / "wide.png"),
                "--save-path", str(tmp_path)]) == 0
    (video,) = tmp_path.glob("*.mp4")
    meta = read_mp4_metadata(video)
    assert meta["model"] == "tiny-random-i2v" and meta["image"]["bucket"] == [meta["height"], meta["width"]]
    assert meta["height"] < meta["width"]  # a landscape image picks a landscape bucket
    assert len(meta["image"]["sha256"]) == 64 and meta["image"]["source_size"] == [90, 160]


def test_sample_video_i2v_mode_maps_tiny_random_to_its_i2v_sibling(images, tmp_path):
    argv = ["--model", "tiny-random", "--i2v-mode", *FAST[2:], "--prompt", "a red fox",
            "--i2v-image-path", str(images / "tall.png"), "--save-path", str(tmp_path), "--output-type", "latents"]
    assert run(argv, i2v=False) == 0
    record = json.loads((tmp_path / "manifest.jsonl").read_text())
    assert record["model"] == "tiny-random-i2v" and record["height"] > record["width"]


def test_batch_rows_carry_their_images_relative_to_the_file(images, tmp_path):
    batch = images / "batch.jsonl"
    batch.write_text('{"prompt": "a fox", "image": "wide.png", "id": "w"}\n'
                     '{"prompt": "a tree", "image": "tall.png", "id": "t"}\n')
    out = tmp_path / "out"
    assert run([*FAST, "--prompt-file", str(batch), "--save-path", str(out), "--output-type", "latents"]) == 0
    records = {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records["w"]["image"]["path"].endswith("wide.png") and records["t"]["image"]["path"].endswith("tall.png")
    assert records["w"]["image"]["sha256"] != records["t"]["image"]["sha256"]
    assert (records["w"]["height"], records["w"]["width"]) != (records["t"]["height"], records["t"]["width"])


@pytest.mark.parametrize("argv,i2v,message", [
    (["--video-length", "1"], True, "image-to-video needs more than one frame"),
    (["--video-size", "64", "64"], True, "--video-size: in image-to-video the image picks the video size"),
    (["--i2v-image-path", "{missing}"], True, "nope.png: no such file"),
    (["--i2v-image-path", "{text}"], True, "notes.png: not an image file"),
    (["--i2v-condition-type", "latent_concat"], True, "model tiny-random-i2v is token_replace"),
    (["--model", "tiny-random", "--i2v-image-path", "{wide}"], False, "--i2v-image-path needs --i2v-mode"),
    (["--model", "HYVideo-T/2-cfgdistill", "--i2v-mode", "--i2v-image-path", "{wide}",
      "--model-base", "{ckpts}"], False, "holds the text-to-video model"),
    (["--use-lora"], True, "--use-lora needs --lora-path"),
    (["--lora-path", "{wide}"], True, "--lora-path needs --use-lora"),
])
def test_image_to_video_mistakes_are_one_line(images, tmp_path, capsys, argv, i2v, message):
    (tmp_path / "notes.png").write_text("not a picture")
    ckpts = tmp_path / "ckpts" / "hunyuan-video-t2v-720p"
    ckpts.mkdir(parents=True)
    subs = {"missing": str(tmp_path / "nope.png"), "text": str(tmp_path / "notes.png"),
            "wide": str(images / "wide.png"), "ckpts": str(tmp_path / "ckpts")}
    base = [] if "--model" in argv else ["--model", "tiny-random-i2v"]
    image = [] if any("--i2v-image-path" == a for a in argv) else ["--i2v-image-path", str(images / "wide.png")]
    out = tmp_path / "out"
    code = run([*base, *[a.format(**subs) for a in argv], *image, "--prompt", "x", "--save-path", str(out)],
               i2v=i2v)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_a_row_image_without_i2v_mode_is_refused(images, tmp_path, capsys):
    batch = images / "t2v.jsonl"
    batch.write_text('{"prompt": "a fox", "image": "wide.png"}\n')
    assert sample.main(["--model", "tiny-random", "--prompt-file", str(batch), "--save-path", str(tmp_path)]) == 2
    assert "read only in image-to-video mode" in capsys.readouterr().err


def test_torchrun_two_processes_equal_one(images, tmp_path):
    pytest.importorskip("yunchang")
    args = [*FAST, "--prompt", "a red fox", "--i2v-image-path", str(images / "wide.png"),
            "--output-type", "latents"]
    single, para = tmp_path / "single", tmp_path / "ulysses"
    assert run([*args, "--save-path", str(single)]) == 0
    proc = torchrun(2, ROOT / "sample_image2video.py", *args, "--ulysses-degree", "2", "--save-path", para)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    (a,), (b,) = single.glob("*.safetensors"), para.glob("*.safetensors")
    assert (load_file(str(a))["latents"] - load_file(str(b))["latents"]).abs().max() <= TOL


def test_offload_modes_equal_none(images):
    from hyvideo.pipeline.image_input import load_i2v_image
    from hyvideo.pipeline.options import LoadOptions
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline
    from hyvideo.runtime.offload import OffloadConfig
    from tests.test_offload import assert_offload_modes_equal_none

    pipe = load_pipeline(LoadOptions(model="tiny-random-i2v"), RuntimeOptions(device=torch.device("cpu")))
    request = pipe.request("a fox", load_i2v_image(images / "wide.png", "144p"), video_length=5,
                           infer_steps=2, seed=1, i2v_stability=True)
    assert_offload_modes_equal_none(pipe, request, (OffloadConfig("model"), OffloadConfig("blocks", 1)))
    reference = pipe(request, show_progress=False)
    assert torch.equal(reference.latents[:, :, :1], pipe.image_latents(request).cpu())  # frame 0 = the image


def test_an_i2v_model_without_i2v_mode_is_refused(capsys, tmp_path):
    assert sample.main(["--model", "tiny-random-i2v", "--prompt", "x", "--save-path", str(tmp_path)]) == 2
    assert "animates an image: add --i2v-mode" in capsys.readouterr().err
