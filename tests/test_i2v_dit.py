"""Image-to-video DiT conditioning, sampling loop and LoRA format (FORMAT sections 12, 13, 17):
the public cases, token_replace under sequence and CFG parallelism, step caches, compile, the
official LoRA merge rule, and the loop's frame-0 and latent_concat invariants."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch._dynamo.utils import counters

from hyvideo.conformance import Case, run_case, run_manifest
from hyvideo.dit.blocks import gated_tokens, modulate_tokens
from hyvideo.dit.config import dit_config_from_diffusers, dit_config_to_diffusers
from hyvideo.dit.layers import Mod, layer_norm
from hyvideo.dit.loader import build_dit
from hyvideo.dit.lora import LoraError, fuse_lora, greedy_module_path, load_lora
from hyvideo.pipeline.denoise import call_dit
from hyvideo.pipeline.i2v_denoise import denoise_i2v, i2v_start
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.pipeline.variants import load_variant
from hyvideo.runtime.cache import CacheConfig, make_step_cache
from hyvideo.runtime.compile import compile_blocks, reset_compiled
from hyvideo.text.conditioning import TextConditioning
from tests.conftest import ROOT, cases_of_kind, conformance_root
from tests.dit_utils import random_dit, random_inputs, tiny_config
from tests.i2v_parallel_worker import compute

KINDS = ("dit_i2v", "sampling_i2v", "lora_i2v")
TOKEN_REPLACE = tiny_config(i2v_condition_type="token_replace")
LATENT_CONCAT = tiny_config(i2v_condition_type="latent_concat", in_channels=33)


def _cases():
    root = conformance_root()
    if not (root / "cases").is_dir():
        return [pytest.param(None, id="no-data")]
    return [pytest.param(p, id=p.name) for kind in KINDS for p in cases_of_kind(root, kind)]


@pytest.mark.parametrize("case_dir", _cases())
def test_public_case_passes(conformance, case_dir):
    result = run_case(Case.open(case_dir))
    assert result.passed, result.line()


@pytest.mark.parametrize("name", ["dit_HYVideo-I2V-token_replace", "dit_HYVideo-I2V-latent_concat"])
def test_i2v_manifest_builds_the_released_dit(conformance, name):
    result = run_manifest(conformance / "manifests" / f"{name}.json")
    assert result.passed, result.line()


# --- the DiT --------------------------------------------------------------------------------------

def test_split_modulation_equals_per_token_modulation():
    """The two-slice modulation and gate are the per-token rule written out in full."""
    g = torch.Generator().manual_seed(0)
    x, update = torch.randn(2, 10, 8, generator=g), torch.randn(2, 10, 8, generator=g)
    mod, first = (Mod(*torch.randn(3, 2, 8, generator=g)) for _ in range(2))
    for split in (0, 4, 10):
        frame0 = (torch.arange(10) < split)[None, :, None]  # [1, N, 1]
        shift = torch.where(frame0, first.shift[:, None], mod.shift[:, None])
        scale = torch.where(frame0, first.scale[:, None], mod.scale[:, None])
        gate = torch.where(frame0, first.gate[:, None], mod.gate[:, None])
        torch.testing.assert_close(modulate_tokens(x, mod, first, split), layer_norm(x) * (1 + scale) + shift)
        before = x.clone()
        torch.testing.assert_close(gated_tokens(x, update, mod.gate, first.gate, split), x + gate * update)
        assert torch.equal(x, before)  # the residual input is left intact (step caches read it)


def test_token_replace_vector_and_this_ranks_frame0_tokens():
    dit = random_dit(TOKEN_REPLACE)
    t, pooled = torch.tensor([700.0, 300.0]), torch.randn(2, TOKEN_REPLACE.text_states_dim_2)
    grid = (3, 2, 4)  # 8 frame-0 tokens of 24
    with torch.inference_mode():
        first = dit.first_frame(t, pooled, grid, 0, 24)
        want = dit.time_in(torch.zeros(2)) + dit.vector_in(pooled)  # t = 0, no guidance_in
        torch.testing.assert_close(first.vec, want)
        counts = [getattr(dit.first_frame(t, pooled, grid, row, 6), "tokens", 0) for row in (0, 6, 12, 18)]
    assert first.tokens == 8 and counts == [6, 2, 0, 0]
    assert random_dit(tiny_config()).first_frame(t, pooled, grid, 0, 24) is None  # a T2V DiT


def test_token_replace_changes_the_output_and_latent_concat_takes_33_channels():
    plain, replaced = random_dit(tiny_config()), random_dit(TOKEN_REPLACE)
    inputs = random_inputs(TOKEN_REPLACE, batch=2)
    concat = random_dit(LATENT_CONCAT)
    with torch.inference_mode():
        assert (plain(*inputs) - replaced(*inputs)).abs().max() > 1e-2  # same weights (same seed)
        out = concat(*random_inputs(LATENT_CONCAT, batch=2))
    assert out.shape[1] == 16


def test_condition_types_are_checked_and_mapped_to_diffusers():
    with pytest.raises(ValueError, match="needs in_channels 33"):
        tiny_config(i2v_condition_type="latent_concat")
    with pytest.raises(ValueError, match="i2v_condition_type 'concat'"):
        tiny_config(i2v_condition_type="concat")
    for config in (TOKEN_REPLACE, LATENT_CONCAT):
        diffusers = dit_config_to_diffusers(config)
        assert diffusers["image_condition_type"] == config.i2v_condition_type
        assert dit_config_from_diffusers(diffusers) == config
    released = load_variant("HYVideo-I2V")
    assert released.i2v_condition_type == "token_replace" and released.dit.guidance_embed
    assert released.sampling.flow_shift == 17.0 and not released.i2v.stability
    assert load_variant("HYVideo-I2V-latent_concat").dit.in_channels == 33
    assert load_variant("tiny-random-i2v").is_i2v and not load_variant("tiny-random").is_i2v


# --- parallelism, caches, compile ------------------------------------------------------------------

def _torchrun(tmp_path, mode: str, u: int, r: int, cfg: int) -> torch.Tensor:
    pytest.importorskip("yunchang")
    out = tmp_path / f"{mode}_{u}_{r}_{cfg}.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={u * r * cfg}",
                           "--standalone", "tests/i2v_parallel_worker.py", mode, str(out), str(u), str(r), str(cfg)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)["out"]


@pytest.mark.parametrize("mode,u,r,cfg", [("forward", 1, 4, 1), ("denoise", 2, 1, 2)], ids=["ring4", "cfg2_ulysses2"])
def test_token_replace_in_parallel_equals_one_process(tmp_path, mode, u, r, cfg):
    """Each rank modulates exactly its own frame-0 tokens (all, some or none of its chunk)."""
    expected = compute(mode)
    assert (_torchrun(tmp_path, mode, u, r, cfg) - expected).abs().max() <= 1e-4


def _i2v_run(dit, *, step_cache=None, predict=call_dit, stability=False):
    config = dit.config
    x, _, states, mask, pooled, _ = random_inputs(config, batch=1, thw=(3, 4, 6), text_len=9, valid=(7,))
    img = torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(7))
    noise = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(8))
    steps: list = []
    with torch.inference_mode():
        final = denoise_i2v(dit, i2v_start(noise, img, stability=stability), FlowMatchSchedule.create(6, 17.0),
                            TextConditioning(states, mask, pooled), img, embedded_cfg_scale=6.0,
                            callback=steps.append, step_cache=step_cache, predict=predict)
    return final, steps, img


@pytest.mark.parametrize("mode", ["teacache", "first-block"])
def test_step_cache_threshold_zero_is_bit_identical_with_token_replace(mode):
    dit = random_dit(TOKEN_REPLACE)
    plain, _, _ = _i2v_run(dit)
    cache = make_step_cache(CacheConfig(mode, 0.0))
    cached, _, _ = _i2v_run(dit, step_cache=cache)
    assert torch.equal(plain, cached) and cache.stats.skipped == 0


def test_teacache_reads_block0s_real_modulated_input():
    """With token_replace, TeaCache's change indicator is what block 0's qkv really receives."""
    dit = random_dit(TOKEN_REPLACE)
    seen = []
    hook = dit.double_blocks[0].img_attn_qkv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    cache = make_step_cache(CacheConfig("teacache", 0.0))
    cache.begin(1)
    cache.start_step(0)
    with torch.inference_mode():
        dit(*random_inputs(TOKEN_REPLACE, batch=2), step_cache=cache)
    hook.remove()
    assert torch.equal(cache._previous_input, seen[0])


def test_compiled_token_replace_blocks_match_eager_and_reuse_graphs():
    reset_compiled()
    counters.clear()
    try:
        eager, compiled = random_dit(TOKEN_REPLACE), random_dit(TOKEN_REPLACE)
        compile_blocks(compiled)
        graphs = []
        for thw, text_len, valid in [((3, 4, 6), 10, (10,)), ((5, 8, 12), 12, (7,)), ((2, 6, 8), 20, (20,))]:
            inputs = random_inputs(TOKEN_REPLACE, batch=1, thw=thw, text_len=text_len, valid=valid)
            with torch.inference_mode():
                torch.testing.assert_close(compiled(*inputs), eager(*inputs), atol=1e-4, rtol=1e-4)
            graphs.append(counters["stats"]["unique_graphs"])
        assert graphs[0] > 0 and graphs[1] == graphs[0] == graphs[2], graphs  # frame-0 count is symbolic
    finally:
        reset_compiled()


# --- the sampling loop ------------------------------------------------------------------------------

def test_token_replace_frame0_is_the_image_latent_at_every_step():
    inputs: list[torch.Tensor] = []

    def predict(dit, x, *args, **kwargs):
        inputs.append(x.clone())
        return call_dit(dit, x, *args, **kwargs)

    final, steps, img = _i2v_run(random_dit(TOKEN_REPLACE), predict=predict, stability=True)
    assert len(steps) == 6
    for info, x in zip(steps, inputs):
        assert torch.equal(info.latents[:, :, :1], img) and torch.equal(x[:, :, :1], img)
    assert torch.equal(final[:, :, :1], img)
    assert not torch.equal(inputs[0][:, :, 1:], inputs[1][:, :, 1:])  # frames 1.. are stepped


def test_latent_concat_input_channels_and_every_frame_stepped():
    inputs: list[torch.Tensor] = []

    def predict(dit, x, *args, **kwargs):
        inputs.append(x.clone())
        return call_dit(dit, x, *args, **kwargs)

    _, steps, img = _i2v_run(random_dit(LATENT_CONCAT), predict=predict)
    x = inputs[1]
    assert x.shape[1] == 33 and torch.equal(x[:, :16], steps[0].latents)
    assert torch.equal(x[:, 16:32, :1], img) and not x[:, 16:32, 1:].any()
    assert (x[:, 32, 0] == 1).all() and not x[:, 32, 1:].any()
    assert not torch.equal(steps[0].latents[:, :, 0], steps[1].latents[:, :, 0])


def test_stability_mix_uses_the_float32_point_999():
    noise, img = torch.randn(2, 16, 3, 2, 2), torch.randn(1, 16, 1, 2, 2)
    keep = torch.tensor(0.999, dtype=torch.float32)
    # float32 arithmetic: 1 - 0.99900001287 = 0.00099998713 (the goldens' DiT inputs match it bit
    # for bit; FORMAT's "0.0010000467" is not what the reference computes)
    assert (1 - keep).item() == 0.0009999871253967285
    assert torch.equal(i2v_start(noise, img, stability=True), noise * keep + img * (1 - keep))
    assert torch.equal(i2v_start(noise, img, stability=False), noise)


def test_loop_refuses_a_t2v_dit_and_a_single_frame():
    with pytest.raises(ValueError, match="not an image-to-video model"):
        _i2v_run(random_dit(tiny_config()))
    cond = TextConditioning(torch.randn(1, 4, 48), torch.ones(1, 4, dtype=torch.int64), torch.randn(1, 32))
    with pytest.raises(ValueError, match="T >= 2"):
        denoise_i2v(random_dit(TOKEN_REPLACE), torch.randn(1, 16, 1, 4, 6), FlowMatchSchedule.create(2),
                    cond, torch.randn(1, 16, 1, 4, 6))


# --- LoRA -----------------------------------------------------------------------------------------

ADAPTED = ["double_blocks.0.img_attn_qkv", "double_blocks.1.img_mod.linear", "single_blocks.0.modulation.linear",
           "final_layer.linear", "txt_in.individual_token_refiner.blocks.1.mlp.fc1"]


def _pairs(dit, rank=2):
    g = torch.Generator().manual_seed(3)
    out = {}
    for name in ADAPTED:
        linear = dit.get_submodule(name)
        out[name] = (torch.randn(rank, linear.in_features, generator=g).bfloat16(),
                     torch.randn(linear.out_features, rank, generator=g).bfloat16())
    return out


def _write(path, pairs, prefix: str, alpha: float):
    state = {}
    for name, (down, up) in pairs.items():
        key = prefix + name.replace(".", "_")
        state.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                      f"{key}.alpha": torch.tensor(alpha, dtype=torch.bfloat16)})
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("prefix,factor", [("Hunyuan_video_I2V_lora_", 1.0), ("lora_unet_", 2.0)],
                         ids=["official_i2v_alpha_ignored", "kohya_alpha_over_rank"])
def test_lora_merge_rule_by_format(tmp_path, prefix, factor):
    """alpha = 2 * rank: the official I2V files ignore it, our other formats apply alpha/rank."""
    dit = random_dit(TOKEN_REPLACE)
    pairs = _pairs(dit)
    before = {n: dit.get_submodule(n).weight.clone() for n in ADAPTED}
    lora = load_lora(dit, _write(tmp_path / "effect.safetensors", pairs, prefix, alpha=4.0))
    assert sorted(lora.layers) == sorted(ADAPTED)
    fuse_lora(dit, lora, 0.8, restorable=False)
    for name, (down, up) in pairs.items():
        want = before[name] + 0.8 * factor * (up.float() @ down.float())
        torch.testing.assert_close(dit.get_submodule(name).weight, want, atol=1e-6, rtol=1e-6)


def test_official_lora_module_resolution_and_refusals(tmp_path):
    dit = random_dit(TOKEN_REPLACE)
    assert greedy_module_path(dit, "txt_in_individual_token_refiner_blocks_0_mlp_fc2") == \
        "txt_in.individual_token_refiner.blocks.0.mlp.fc2"
    assert greedy_module_path(dit, "double_blocks_1_txt_attn_proj") == "double_blocks.1.txt_attn_proj"
    assert greedy_module_path(dit, "double_blocks_0_no_such_layer") is None
    text = {"Hunyuan_video_I2V_lora_text_model_layers_0_q.lora_down.weight": torch.zeros(2, 4)}
    with pytest.raises(LoraError, match="text encoder"):
        load_lora(dit, _write_raw(tmp_path / "text.safetensors", text))
    wrong = {"Hunyuan_video_I2V_lora_nothing_here.lora_down.weight": torch.zeros(2, 4),
             "Hunyuan_video_I2V_lora_nothing_here.lora_up.weight": torch.zeros(4, 2)}
    with pytest.raises(LoraError, match="none of its 2 keys"):
        load_lora(dit, _write_raw(tmp_path / "wrong.safetensors", wrong))


def _write_raw(path, state):
    save_file(state, str(path))
    return path


def test_released_latent_concat_dit_builds_on_meta():
    model = build_dit(load_variant("HYVideo-I2V-latent_concat").dit, device="meta")
    assert tuple(model.img_in.proj.weight.shape) == (3072, 33, 1, 2, 2)
    assert model.final_layer.linear.out_features == 4 * 16
