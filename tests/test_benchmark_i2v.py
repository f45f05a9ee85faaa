"""scripts/benchmark_i2v.py: our image-to-video pipeline and diffusers' on the same weights agree
(text states, image latent, final latents, frames), and every stage is reported; bad arguments
exit 2 with one line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_i2v():
    name = "hyvideo_benchmark_i2v_script"
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "benchmark_i2v.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_tiny_run_agrees_with_diffusers_and_reports_every_stage(bench_i2v):
    setup = bench_i2v.make_setup("tiny", 32, 48, 5)
    assert setup.base.dit.i2v_condition_type == "token_replace"
    result = bench_i2v.benchmark(setup, torch.device("cpu"), steps=2, repeats=1)
    a = result["agreement"]
    # Text: diffusers' LlavaForConditionalGeneration around our LlavaModel, its own template code.
    assert a["text_mask_equal"] and a["text_tokens"] > 144  # the 144 image tokens, then the prompt
    assert a["text_states_max_abs_diff"] <= 1e-5 * max(1.0, a["text_states_max_abs"])
    assert a["pooled_max_abs_diff"] <= 1e-5
    assert a["image_latent_max_abs_diff"] <= 1e-5  # frame 0 of both is the image latent
    assert a["latents_max_abs_diff"] <= 1e-4 * max(1.0, a["latents_max_abs"])
    assert a["frames_max_abs_diff"] <= 1e-4 and a["frames_shape"] == [1, 3, 5, 32, 48]
    # Same weights, held once: diffusers' own are its LLaVA's language-model head and the final
    # layer's modulation (the key table swaps its shift/scale halves into a new tensor).
    head = setup.base.llm["vocab_size"] * setup.base.llm["hidden_size"] * 4
    own = result["diffusers_bytes"] - result["shared_bytes"]
    assert head <= own <= head + 0.01 * result["diffusers_bytes"]
    for who in ("ours", "diffusers"):
        stages = [name for name, _, _ in result["laps"][who][0]]
        assert [stages.count(s) for s in ("text", "image", "step", "decode")] == [1, 1, 2, 1]
        assert stages.index("text") < stages.index("image") < stages.index("step")
        summary = result["summary"][who]
        assert all(summary[key] > 0 for _, key in bench_i2v.TIME_ROWS)
        assert summary["peak"] == max(summary[k] for _, k in bench_i2v.MEMORY_ROWS)
    report = bench_i2v.format_report(result)
    for name, _ in bench_i2v.TIME_ROWS + bench_i2v.MEMORY_ROWS:
        assert name in report
    assert "masks equal" in report


def test_medium_setup_has_the_i2v_shapes(bench_i2v):
    setup = bench_i2v.make_setup("medium")
    config = setup.llava_config()
    vision = config.vision_config
    assert (vision.image_size // vision.patch_size) ** 2 == 576  # the official template's constant
    assert config.text_config.hidden_size == setup.base.dit.text_states_dim
    assert (setup.base.height, setup.base.width, setup.base.frames) == (256, 256, 17)
    assert bench_i2v.make_setup("full").vision == bench_i2v.VIT_L_336


@pytest.mark.parametrize("argv,message", [
    (["--full", "--device", "cpu"], "--full needs a GPU"),
    (["--config", "tiny", "--frames", "1"], "more than one frame"),
    (["--config", "tiny", "--frames", "10"], "4n+1"),
    (["--config", "tiny", "--size", "250x256"], "multiple of 16"),
    (["--config", "tiny", "--size", "big"], "HEIGHTxWIDTH"),
    (["--config", "tiny", "--steps", "0"], "--steps"),
])
def test_bad_arguments_exit_2_with_one_line(bench_i2v, capsys, argv, message):
    assert bench_i2v.main(["--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
