"""LoRA: every file format changes the output exactly as the merged weights do.

The expected model is built independently of hyvideo.dit.lora: the LoRA's ``B @ A`` is added to the
weights in the file's own naming (diffusers names for a diffusers LoRA, through the checkpoint
conversion that tests/test_layouts.py checks against diffusers' converter), then loaded normally.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from safetensors.torch import save_file

import sample_video
from hyvideo.checkpoints.keys import dit_from_diffusers, dit_to_diffusers
from hyvideo.dit.fp8 import FP8Linear, convert_to_fp8
from hyvideo.dit.lora import (
    LoRALinear,
    LoraError,
    LoraSpec,
    attach_lora,
    detach_loras,
    fuse_lora,
    load_lora,
    set_lora_scale,
)
from tests.dit_utils import random_dit, random_inputs, tiny_config

RANK = 4
OFFICIAL_TARGETS = ["double_blocks.0.img_attn_qkv", "double_blocks.1.txt_mlp.fc1", "single_blocks.0.linear1",
                    "single_blocks.1.linear2", "double_blocks.0.img_mod.linear", "final_layer.adaLN_modulation.1",
                    "txt_in.individual_token_refiner.blocks.0.self_attn_qkv"]
DIFFUSERS_TARGETS = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
                     "transformer_blocks.0.attn.to_v", "transformer_blocks.1.attn.add_k_proj",
                     "transformer_blocks.0.attn.to_out.0", "transformer_blocks.1.ff.net.0.proj",
                     "single_transformer_blocks.1.attn.to_q", "single_transformer_blocks.1.attn.to_v",
                     "single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.0.proj_out",
                     "single_transformer_blocks.1.norm.linear", "norm_out.linear",
                     "context_embedder.token_refiner.refiner_blocks.0.attn.to_k"]


@pytest.fixture(scope="module")
def base():
    return random_dit(tiny_config())


def _pairs(shapes: dict[str, torch.Size], seed: int = 5) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {name: (torch.randn(RANK, shape[1], generator=g) * 0.3, torch.randn(shape[0], RANK, generator=g) * 0.3)
            for name, shape in shapes.items()}


def _merged(model, pairs, scale: float, diffusers_names: bool):
    """The expected model: B @ A added to the weights under the LoRA's own names."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state = dit_to_diffusers(state) if diffusers_names else state
    for name, (a, b) in pairs.items():
        state[f"{name}.weight"] += scale * (b @ a)
    state = dit_from_diffusers(state) if diffusers_names else state
    merged = copy.deepcopy(model)
    merged.load_state_dict(state, strict=True)
    return merged


def _official_shapes(model):
    sd = model.state_dict()
    return {n: sd[f"{n}.weight"].shape for n in OFFICIAL_TARGETS}


def _diffusers_shapes(model):
    sd = dit_to_diffusers(model.state_dict())
    return {n: sd[f"{n}.weight"].shape for n in DIFFUSERS_TARGETS}


def write_lora(path, fmt: str, pairs, alpha: float | None = None):
    """One LoRA file in a community format."""
    out = {}
    for name, (a, b) in pairs.items():
        if fmt == "kohya":
            key = "lora_unet_" + name.replace(".", "_")
            out |= {f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b}
            if alpha is not None:
                out[f"{key}.alpha"] = torch.tensor(alpha)
        else:
            prefix = {"original": "diffusion_model.", "diffusers": "transformer.", "bare": ""}[fmt]
            out |= {f"{prefix}{name}.lora_A.weight": a, f"{prefix}{name}.lora_B.weight": b}
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


def _out(model, cfg=None):
    x, t, states, mask, pooled, guidance = random_inputs(cfg or tiny_config())
    with torch.no_grad():
        return model(x, t, states, mask, pooled, guidance)


CASES = [  # (format, names, alpha): alpha only where the format carries it
    ("original", "official", None),
    ("bare", "official", None),
    ("kohya", "official", 2.0),
    ("kohya", "diffusers", 8.0),
    ("diffusers", "diffusers", None),
]


@pytest.mark.parametrize("fmt,names,alpha", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_format_equals_the_merged_weights(base, tmp_path, fmt, names, alpha):
    pairs = _pairs(_official_shapes(base) if names == "official" else _diffusers_shapes(base))
    file = write_lora(tmp_path / "style.safetensors", fmt, pairs, alpha)
    scale = 0.7
    effective = scale * (alpha / RANK if alpha is not None else 1.0)
    expected_model = _merged(base, pairs, effective, names == "diffusers")
    expected = _out(expected_model)
    lora = load_lora(base, LoraSpec(file))
    assert not lora.unmatched

    fused = copy.deepcopy(base)
    handle = fuse_lora(fused, lora, scale)
    got = _out(fused)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    handle.unfuse()  # back to the base weights, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), base.state_dict().values()))

    branch = copy.deepcopy(base)
    attach_lora(branch, lora, scale)
    assert isinstance(branch.double_blocks[0].img_attn_qkv, LoRALinear) or names == "diffusers"
    got = _out(branch)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_scale_zero_and_detach_give_the_base_model(base, tmp_path):
    pairs = _pairs(_official_shapes(base))
    lora = load_lora(base, write_lora(tmp_path / "a.safetensors", "original", pairs))
    reference = _out(base)
    fused = copy.deepcopy(base)
    fuse_lora(fused, lora, 0.0)
    assert torch.equal(_out(fused), reference)
    branch = copy.deepcopy(base)
    attach_lora(branch, lora, 0.0)
    assert torch.equal(_out(branch), reference)
    set_lora_scale(branch, "a", 1.0)  # switch on without reloading
    assert torch.allclose(_out(branch), _out(_merged(base, pairs, 1.0, False)), atol=1e-4)
    detach_loras(branch)
    assert branch.state_dict().keys() == base.state_dict().keys()
    assert torch.equal(_out(branch), reference)


def test_two_loras_add_up(base, tmp_path):
    p1, p2 = _pairs(_official_shapes(base), seed=1), _pairs(_official_shapes(base), seed=2)
    l1 = load_lora(base, write_lora(tmp_path / "one.safetensors", "original", p1))
    l2 = load_lora(base, write_lora(tmp_path / "two.safetensors", "kohya", p2, alpha=RANK))
    model = copy.deepcopy(base)
    fuse_lora(model, l1, 0.5)
    attach_lora(model, l2, 1.0)
    expected = _merged(_merged(base, p1, 0.5, False), p2, 1.0, False)
    assert torch.allclose(_out(model), _out(expected), atol=1e-4)


def _fp8_copy(model):
    """The model with its block Linears in FP8 (weights quantized with max|W|/448 scales)."""
    fp8 = copy.deepcopy(model)
    dense = {n: m.weight.detach().clone() for n, m in fp8.named_modules() if isinstance(m, torch.nn.Linear)}
    convert_to_fp8(fp8)
    for name, module in fp8.named_modules():
        if isinstance(module, FP8Linear):
            w = dense[name]
            scale = w.abs().max() / 448
            module.weight = torch.nn.Parameter((w / scale).to(torch.float8_e4m3fn), requires_grad=False)
            module.fp8_scale = scale
    return fp8


def _dequantized(fp8):
    dense = copy.deepcopy(fp8)
    for name, module in list(dense.named_modules()):
        if isinstance(module, FP8Linear):
            linear = torch.nn.Linear(module.in_features, module.out_features)
            linear.weight = torch.nn.Parameter(module.dequantized_weight(torch.float32))
            linear.bias = module.bias
            parent, _, child = name.rpartition(".")
            setattr(dense.get_submodule(parent), child, linear)
    return dense


def test_fp8_side_branch_is_exact_and_fuse_requantizes(base, tmp_path):
    pairs = _pairs(_official_shapes(base))
    fp8 = _fp8_copy(base)
    lora = load_lora(fp8, write_lora(tmp_path / "f.safetensors", "original", pairs))
    expected = _out(_merged(_dequantized(fp8), pairs, 1.0, False))
    branch = copy.deepcopy(fp8)
    attach_lora(branch, lora, 1.0)
    assert torch.allclose(_out(branch), expected, atol=1e-4)
    fused = copy.deepcopy(fp8)
    handle = fuse_lora(fused, lora, 1.0)
    qkv = fused.double_blocks[0].img_attn_qkv
    assert qkv.weight.dtype == torch.float8_e4m3fn
    want = _merged(_dequantized(fp8), pairs, 1.0, False).double_blocks[0].img_attn_qkv.weight
    assert torch.allclose(qkv.fp8_scale, want.abs().max() / 448)  # the new per-tensor scale
    # e4m3 keeps 3 mantissa bits: the requantized weight is within half a step (1/16 relative).
    assert ((qkv.dequantized_weight(torch.float32) - want).abs() <= want.abs() / 16 + qkv.fp8_scale).all()
    err = (_out(fused) - expected).abs().max() / expected.abs().max()
    assert err < 0.1, err
    handle.unfuse()
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(fused.state_dict().values(), fp8.state_dict().values()))


def test_no_match_is_an_error_with_examples(base, tmp_path):
    file = tmp_path / "sdxl.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0.lora_up.weight": torch.zeros(8, 4)}, str(file))
    with pytest.raises(LoraError, match="none of its 2 keys matches a layer of the DiT .examples: lora_unet_down"):
        load_lora(base, file)


def test_partial_match_is_logged_with_counts(base, tmp_path, caplog):
    pairs = _pairs(_official_shapes(base))
    file = tmp_path / "p.safetensors"
    extra = {"diffusion_model.img_in.proj.lora_A.weight": torch.zeros(4, 64),
             "text_encoder.layers.0.q.lora_A.weight": torch.zeros(4, 4)}
    write_lora(file, "original", pairs)
    from safetensors.torch import load_file

    save_file({**load_file(str(file)), **extra}, str(file))
    with caplog.at_level(logging.INFO, logger="hyvideo.dit.lora"):
        lora = load_lora(base, file)
    assert len(lora.layers) == len(OFFICIAL_TARGETS)
    assert f"2 of {2 * len(pairs) + 2} keys matched no DiT layer" in caplog.text
    assert f"{len(OFFICIAL_TARGETS)} layers of the DiT adapted" in caplog.text


def test_wrong_shape_is_an_error(base, tmp_path):
    file = tmp_path / "big.safetensors"
    save_file({"double_blocks.0.img_attn_qkv.lora_A.weight": torch.zeros(4, 3072),
               "double_blocks.0.img_attn_qkv.lora_B.weight": torch.zeros(9216, 4)}, str(file))
    with pytest.raises(LoraError, match="takes 64 inputs, the LoRA's down matrix has 3072"):
        load_lora(base, file)


def test_peft_folder_alpha(base, tmp_path):
    pairs = _pairs(_diffusers_shapes(base))
    folder = tmp_path / "peft"
    folder.mkdir()
    write_lora(folder / "adapter_model.safetensors", "bare", pairs)
    (folder / "adapter_config.json").write_text(json.dumps({"r": RANK, "lora_alpha": 2}))
    model = copy.deepcopy(base)
    fuse_lora(model, load_lora(model, folder), 1.0)
    assert torch.allclose(_out(model), _out(_merged(base, pairs, 0.5, True)), atol=1e-5)


def test_spec_parsing():
    assert LoraSpec.parse("a/b.safetensors") == LoraSpec(__import__("pathlib").Path("a/b.safetensors"), 1.0)
    assert LoraSpec.parse("a/b.safetensors:0.8").scale == 0.8
    assert LoraSpec.parse("C:\\loras\\x.safetensors").scale == 1.0


# --- the CLI --------------------------------------------------------------------------------------

SMALL = ["--model", "tiny-random", "--video-size", "32", "32", "--video-length", "5", "--infer-steps", "2",
         "--quiet", "--output-type", "latents", "--seed", "1", "--prompt", "a cat"]


def _latents(folder):
    from safetensors.torch import load_file

    (file,) = folder.glob("*.safetensors")
    return load_file(str(file))["latents"]


def test_cli_lora_changes_the_output_fused_or_as_a_branch(tmp_path):
    from hyvideo.pipeline.variants import load_variant
    from hyvideo.dit.loader import build_dit

    model = build_dit(load_variant("tiny-random").dit, dtype=torch.float32, device="meta")
    sd = model.state_dict()
    pairs = _pairs({n: sd[f"{n}.weight"].shape for n in OFFICIAL_TARGETS})
    file = write_lora(tmp_path / "tiny_style.safetensors", "kohya", pairs, alpha=4.0)
    # (scale 0 == the base model is checked above, without the CLI's cost)
    runs = {"none": [], "one": ["--lora", str(file)], "branch": ["--lora", f"{file}:1.0", "--no-lora-fuse"]}
    got = {}
    for name, extra in runs.items():
        assert sample_video.main([*SMALL, *extra, "--save-path", str(tmp_path / name)]) == 0
        got[name] = _latents(tmp_path / name)
    assert not torch.allclose(got["one"], got["none"], atol=1e-3)
    assert torch.allclose(got["one"], got["branch"], atol=1e-4)
    record = json.loads((tmp_path / "one" / "manifest.jsonl").read_text().splitlines()[0])
    assert record["loras"] == [{"path": str(file), "scale": 1.0}]


def test_cli_missing_lora_is_one_line(tmp_path, capsys):
    code = sample_video.main([*SMALL, "--lora", str(tmp_path / "nope.safetensors:0.5"),
                              "--save-path", str(tmp_path / "o")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "LoRA file not found" in err[0], err
