"""scripts/benchmark.py and hyvideo/flops.py: the FLOP formula, the meters, a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hyvideo.pipeline.variants import load_variant
from hyvideo.runtime.flops import attention_flops, dit_forward_flops, image_tokens, linear_flops
from tests.dit_utils import random_dit, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("hyvideo_benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_released_model_at_720p_matches_the_issue_figure():
    config = load_variant("HYVideo-T/2-cfgdistill").dit
    assert image_tokens(config, (33, 90, 160)) == 118_800
    flops = dit_forward_flops(config, (33, 90, 160), text_tokens=256)
    assert flops.total == pytest.approx(12.07e15, rel=0.02)
    assert flops.attention_share == pytest.approx(0.87, abs=0.02)
    # The figure is blocks only: attention 60 x 4 S^2 C plus 60 x 24 S C^2 of Linears.
    s, c = 118_800 + 256, 3072
    assert flops.attention == 60 * 4 * s * s * c
    assert flops.double_linear + flops.single_linear == pytest.approx(60 * 24 * s * c * c, rel=1e-4)
    # Real CFG: one step is a forward of batch 2.
    assert dit_forward_flops(config, (33, 90, 160), batch=2).total == 2 * flops.total


@pytest.mark.parametrize("guidance,valid", [(True, 7), (False, 5)])
def test_count_equals_torch_flop_counter_on_a_real_forward(guidance, valid):
    """Every Linear, the patch Conv3d and every attention our DiT runs, counted by torch (the
    explicit-softmax backend: torch has no FLOP formula for the CPU's fused SDPA kernel)."""
    cfg = tiny_config(guidance_embed=guidance)
    model = random_dit(cfg, attention_backend="torch")
    thw = (2, 4, 6)
    x = torch.randn(1, cfg.in_channels, *thw)
    states = torch.randn(1, valid, cfg.text_states_dim)
    mask = torch.ones(1, valid, dtype=torch.int64)  # all valid: nothing is dropped
    pooled = torch.randn(1, cfg.text_states_dim_2)
    guidance_in = torch.tensor([6000.0]) if guidance else None
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, torch.tensor([900.0]), states, mask, pooled, guidance_in)
    assert dit_forward_flops(cfg, thw, text_tokens=valid).total == counter.get_total_flops()


def test_flop_helpers_and_bad_input():
    assert linear_flops(10, 3, 4) == 240
    assert attention_flops(5, 7, 8) == 4 * 5 * 7 * 8
    with pytest.raises(ValueError, match="not divisible"):
        dit_forward_flops(tiny_config(), (3, 5, 6))
    with pytest.raises(ValueError, match="text_tokens"):
        dit_forward_flops(tiny_config(), (2, 4, 6), text_tokens=-1)


def test_rss_meter_sees_a_freed_allocation_in_its_stage_only(bench):
    meter = bench.RssMeter()
    meter.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written: resident
    del block
    first = meter.mark()
    second = meter.mark()
    meter.stop()
    assert first >= 60 * 2**20
    assert second < 16 * 2**20


def test_random_init_scales(bench):
    layer = torch.nn.Sequential(torch.nn.Linear(400, 300), torch.nn.LayerNorm(300))
    bench.init_random_(layer, seed=1)
    assert layer[0].weight.std().item() == pytest.approx(400**-0.5, rel=0.05)
    assert layer[1].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert layer[0].bias.abs().max().item() < 0.15


def test_tiny_run_agrees_with_diffusers_and_reports_every_stage(bench):
    setup = bench.make_setup("tiny", 32, 32, 5)
    result = bench.benchmark(setup, torch.device("cpu"), steps=2, repeats=1)
    agreement = result["agreement"]
    assert agreement["latents_max_abs_diff"] <= 1e-4 * max(1.0, agreement["latents_max_abs"])
    assert agreement["frames_max_abs_diff"] <= 1e-4
    assert agreement["frames_shape"] == [1, 3, 5, 32, 32]
    # Same weights, held once: diffusers' DiT and VAE reuse nearly all of our tensors.
    assert result["shared_bytes"] >= 0.95 * result["diffusers_bytes"]
    for who in ("ours", "diffusers"):
        stages = [name for name, _, _ in result["laps"][who][0]]
        assert stages.count("text") == 1 and stages.count("step") == 2 and stages.count("decode") == 1
        summary = result["summary"][who]
        for _, key in bench.TIME_ROWS:
            assert summary[key] > 0
        assert summary["peak"] == max(summary[k] for _, k in bench.MEMORY_ROWS)
        assert summary["tflops"] > 0 and summary["mfu"] is None  # no peak given on the CPU
    ratios = result["paired_ratio"]
    assert ratios["total_s"] > 0 and set(ratios) >= {k for _, k in bench.TIME_ROWS + bench.MEMORY_ROWS}
    report = bench.format_report(result)
    for name, _ in bench.TIME_ROWS + bench.MEMORY_ROWS:
        assert name in report


def test_full_on_cpu_exits_2_with_one_line(bench, capsys):
    assert bench.main(["--full", "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "--full needs a GPU" in err


def test_full_setup_has_the_released_shapes(bench):
    """Parameter counts on the meta device against the official checkpoints' manifests."""
    from hyvideo.vae import build_vae

    setup = bench.make_setup("full")
    assert setup.dit == load_variant("HYVideo-T/2-cfgdistill").dit
    assert (setup.height, setup.width, setup.frames) == (720, 1280, 129)
    assert (setup.dit_dtype, setup.vae_dtype, setup.text_dtype) == (torch.bfloat16, torch.float16, torch.float16)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(bench._meta_llama(setup.llm, torch.float16)) == 7_505_186_816  # LlamaModel of llava-llama-3-8b
    assert count(bench._meta_clip(setup.clip, torch.float16)) == 123_060_480  # CLIP-L text tower
    assert count(build_vae(setup.vae, device="meta")) == 246_478_803
    assert bench.make_setup("full", 544, 960).width == 960


@pytest.mark.parametrize("argv,message", [
    (["--sizes", "256by256"], "HEIGHTxWIDTH"),
    (["--frames", "10", "--config", "tiny"], "4n+1"),
    (["--sizes", "250x256", "--config", "tiny"], "multiple of 16"),
    (["--steps", "0", "--config", "tiny"], "--steps"),
])
def test_bad_arguments_exit_2_with_one_line(bench, capsys, argv, message):
    assert bench.main(["--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
