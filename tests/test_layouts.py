"""Checkpoint layouts: diffusers folders and single files load and reproduce the conformance outputs.

The diffusers-format weights are made by diffusers' OWN converter
(``convert_hunyuan_video_transformer_to_diffusers``) and saved by diffusers' ``save_pretrained``,
so our table is checked against an independent implementation, not against itself. That converter
hard-codes hidden 3072 when it splits the single-block ``linear1`` (FORMAT.md section 8); for the
tiny weights (hidden 64) the test splits that one tensor itself, into diffusers' names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sample_video
from hyvideo.conformance.core import Case, worst_ratio
from hyvideo.conformance.dit_kinds import dit_config
from hyvideo.checkpoints.keys import dit_to_diffusers, official_dit_state
from hyvideo.dit.config import dit_config_to_diffusers
from hyvideo.dit.loader import load_dit
from hyvideo.checkpoints.layouts import DIFFUSERS, OFFICIAL, detect_layout
from hyvideo.pipeline.diffusers_layout import (
    load_diffusers_transformer,
    load_diffusers_vae,
    read_diffusers_transformer,
)
from hyvideo.checkpoints.reading import CheckpointError

diffusers = pytest.importorskip("diffusers")


def _case(conformance: Path, name: str) -> Case:
    return Case.open(conformance / "cases" / name)


def _check_dit_output(model, case: Case) -> None:
    with torch.inference_mode():
        out = model(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"],
                    case["guidance"] if "guidance" in case else None)
    tol = case.meta["tolerance"]
    assert worst_ratio(out, case["out.x"], tol["atol"], tol["rtol"]) <= 1.0


def diffusers_converted(state: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """Official -> diffusers keys by diffusers' own converter; linear1 split here (see the docstring)."""
    from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers

    state = dict(state)
    split = {}
    for key in [k for k in state if ".linear1." in k]:
        block, kind = key.removeprefix("single_blocks.").split(".linear1.")
        tensor = state.pop(key)
        q, k, v, mlp = tensor.split([hidden, hidden, hidden, tensor.shape[0] - 3 * hidden], dim=0)
        base = f"single_transformer_blocks.{block}."
        split.update({base + "attn.to_q." + kind: q, base + "attn.to_k." + kind: k,
                      base + "attn.to_v." + kind: v, base + "proj_mlp." + kind: mlp})
    return {**convert_hunyuan_video_transformer_to_diffusers(state), **split}


def save_diffusers_transformer(folder: Path, state: dict[str, torch.Tensor], config) -> None:
    """A real diffusers ``transformer/`` folder: the model loads the converted weights strictly and
    ``save_pretrained`` writes config.json and (small shards, to exercise the index) safetensors."""
    model = diffusers.HunyuanVideoTransformer3DModel(**dit_config_to_diffusers(config))
    model.load_state_dict(diffusers_converted(state, config.hidden_size), strict=True)
    model.save_pretrained(folder, max_shard_size="500KB")


def test_diffusers_transformer_folder_reproduces_conformance(conformance, tmp_path):
    case = _case(conformance, "dit_tiny_cfgdistill")
    config = dit_config(case.config, case.settings)
    save_diffusers_transformer(tmp_path / "transformer", load_file(str(case.path / "weights.safetensors")), config)
    assert (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    folder_config, state = read_diffusers_transformer(tmp_path / "transformer")
    assert folder_config == config
    official = load_file(str(case.path / "weights.safetensors"))
    assert state.keys() == official.keys() and all(torch.equal(state[k], official[k]) for k in state)
    model = load_diffusers_transformer(tmp_path / "transformer", config=config, dtype=torch.float32)
    _check_dit_output(model, case)


def test_our_table_agrees_with_diffusers_converter(conformance):
    state = load_file(str(_case(conformance, "dit_tiny_cfgdistill").path / "weights.safetensors"))
    ours, theirs = dit_to_diffusers(state), diffusers_converted(state, 64)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "diffusion_model."])
def test_single_file_reproduces_conformance(conformance, tmp_path, prefix):
    case = _case(conformance, "dit_tiny_cfgdistill")
    state = load_file(str(case.path / "weights.safetensors"))
    extra = {"first_stage_model.decoder.conv_in.conv.weight": torch.zeros(2)} if prefix.startswith("model.") else {}
    file = tmp_path / "hunyuan_video_t2v_720p_bf16.safetensors"
    save_file({**{prefix + k: v for k, v in state.items()}, **extra}, str(file))
    _check_dit_output(load_dit(file, dit_config(case.config, case.settings), dtype=torch.float32), case)


def test_single_file_fp8_with_map_reproduces_conformance(conformance, tmp_path):
    case = _case(conformance, "fp8_tiny_cfgdistill")
    state = load_file(str(case.path / "weights.safetensors"))
    file = tmp_path / "hunyuan_fp8.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in state.items()}, str(file))
    save_file(load_file(str(case.path / "fp8_map.safetensors")), str(tmp_path / "hunyuan_fp8_map.safetensors"))
    _check_dit_output(load_dit(file, dit_config(case.config, case.settings), dtype=torch.float32), case)


def test_single_file_in_diffusers_keys(conformance, tmp_path):
    case = _case(conformance, "dit_tiny_cfgdistill")
    state = load_file(str(case.path / "weights.safetensors"))
    file = tmp_path / "transformer.safetensors"
    save_file(diffusers_converted(state, 64), str(file))
    _check_dit_output(load_dit(file, dit_config(case.config, case.settings), dtype=torch.float32), case)


def test_unknown_prefix_is_reported_by_the_strict_load(tmp_path):
    file = tmp_path / "odd.safetensors"
    save_file({"net.img_in.proj.weight": torch.zeros(1)}, str(file))
    assert official_dit_state(load_file(str(file))).keys() == {"net.img_in.proj.weight"}
    from tests.dit_utils import tiny_config

    with pytest.raises(CheckpointError, match="unexpected keys: net.img_in.proj.weight"):
        load_dit(file, tiny_config(), dtype=torch.float32)


def test_diffusers_vae_folder_loads_the_same_model(conformance, tmp_path):
    case = _case(conformance, "vae_tiny_884_public")
    cfg = json.loads((case.path / "config.json").read_text())
    theirs = diffusers.AutoencoderKLHunyuanVideo(
        in_channels=cfg.get("in_channels", 3), out_channels=cfg.get("out_channels", 3),
        latent_channels=cfg["latent_channels"], block_out_channels=tuple(cfg["block_out_channels"]),
        down_block_types=("HunyuanVideoDownBlock3D",) * len(cfg["block_out_channels"]),
        up_block_types=("HunyuanVideoUpBlock3D",) * len(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"], norm_num_groups=cfg["norm_num_groups"],
        scaling_factor=cfg.get("scaling_factor", 0.476986),
    )
    official = load_file(str(case.path / "weights.safetensors"))
    theirs.load_state_dict(official, strict=True)  # the same tensor keys
    theirs.save_pretrained(tmp_path / "vae")
    saved = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert "temporal_compression_ratio" in saved and saved["_class_name"] == "AutoencoderKLHunyuanVideo"
    ours = load_diffusers_vae(tmp_path / "vae", dtype=torch.float32)
    from hyvideo.vae import load_vae

    reference = load_vae(case.path, dtype=torch.float32)
    for field in ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                  "scaling_factor", "time_compression_ratio", "spatial_compression_ratio"):
        assert getattr(ours.config, field) == getattr(reference.config, field), field
    a, b = ours.state_dict(), reference.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_detect_layout(tmp_path):
    assert detect_layout(tmp_path / "absent") == OFFICIAL  # the official loader reports the download
    (tmp_path / "off" / "hunyuan-video-t2v-720p").mkdir(parents=True)
    assert detect_layout(tmp_path / "off") == OFFICIAL
    (tmp_path / "dif" / "transformer").mkdir(parents=True)
    assert detect_layout(tmp_path / "dif") == DIFFUSERS
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "model_index.json").write_text("{}")
    assert detect_layout(tmp_path / "idx") == DIFFUSERS
    (tmp_path / "neither").mkdir()
    with pytest.raises(CheckpointError, match="neither the official layout .no hunyuan-video-t2v-720p/"):
        detect_layout(tmp_path / "neither")


@pytest.mark.parametrize("setup,message", [
    ("neither", "is neither the official layout (no hunyuan-video-t2v-720p/ folder) nor the diffusers layout"),
    ("partial", "missing vae/, text_encoder_2/, tokenizer_2/"),
])
def test_cli_bad_layout_is_one_clear_line(tmp_path, capsys, setup, message):
    base = tmp_path / "base"
    base.mkdir()
    if setup == "partial":
        for name in ("transformer", "text_encoder", "tokenizer"):
            (base / name).mkdir()
    code = sample_video.main(["--prompt", "x", "--model-base", str(base), "--save-path", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and message in err[0], err


# --- the whole pipeline from a diffusers-layout folder -------------------------------------------

def write_diffusers_layout(root: Path, pipe) -> Path:
    """Save the tiny in-memory pipeline's components as the diffusers layout would hold them."""
    from hyvideo.pipeline.tiny import write_clip_tokenizer_files

    dit_cfg = pipe.dit.config
    model = diffusers.HunyuanVideoTransformer3DModel(**dit_config_to_diffusers(dit_cfg))
    model.load_state_dict(diffusers_converted(pipe.dit.state_dict(), dit_cfg.hidden_size), strict=True)
    model.save_pretrained(root / "transformer")
    vcfg = pipe.vae.config
    vae = diffusers.AutoencoderKLHunyuanVideo(
        latent_channels=vcfg.latent_channels, block_out_channels=vcfg.block_out_channels,
        down_block_types=("HunyuanVideoDownBlock3D",) * vcfg.num_blocks,
        up_block_types=("HunyuanVideoUpBlock3D",) * vcfg.num_blocks,
        layers_per_block=vcfg.layers_per_block, norm_num_groups=vcfg.norm_num_groups,
        scaling_factor=vcfg.scaling_factor)
    vae.load_state_dict(pipe.vae.state_dict(), strict=True)
    vae.save_pretrained(root / "vae")
    pipe.text_encoders.llm.model.save_pretrained(root / "text_encoder")
    pipe.text_encoders.llm.tokenizer.save_pretrained(root / "tokenizer")
    pipe.text_encoders.clip.model.save_pretrained(root / "text_encoder_2")
    write_clip_tokenizer_files(root / "tokenizer_2")  # vocab.json + merges.txt, as published
    (root / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanVideoPipeline"}))
    return root


def test_pipeline_from_diffusers_layout_equals_the_in_memory_one(tmp_path):
    from hyvideo.checkpoints.layouts import CheckpointPaths
    from hyvideo.pipeline.options import LoadOptions, Precisions
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline

    cpu = RuntimeOptions(device=torch.device("cpu"))
    reference = load_pipeline(LoadOptions(model="tiny-random"), cpu)
    base = write_diffusers_layout(tmp_path / "HunyuanVideo", reference)
    keys = load_file(str(next((base / "text_encoder").glob("*.safetensors"))))
    assert not any(k.startswith("model.") for k in keys)  # a bare LlamaModel save
    opts = LoadOptions(model="HYVideo-T/2-cfgdistill", paths=CheckpointPaths(model_base=base),
                       precisions=Precisions("fp32", "fp32", "fp32", "fp32"))
    pipe = load_pipeline(opts, cpu)
    request = reference.request("a cat", seed=3, height=32, width=32, video_length=5, infer_steps=2)
    a = reference(request, decode=True, show_progress=False)
    b = pipe(request, decode=True, show_progress=False)
    assert torch.allclose(a.latents, b.latents, atol=1e-5) and torch.allclose(a.videos, b.videos, atol=1e-5)


def test_i2v_pipeline_from_diffusers_layout_equals_the_in_memory_one(tmp_path):
    """hunyuanvideo-community/HunyuanVideo-I2V's layout: the token_replace transformer
    (image_condition_type), the LLaVA (vision tower included) with its image_processor/."""
    import numpy as np
    from PIL import Image

    from hyvideo.checkpoints.layouts import CheckpointPaths
    from hyvideo.pipeline.image_input import load_i2v_image
    from hyvideo.pipeline.options import LoadOptions, Precisions
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline

    cpu = RuntimeOptions(device=torch.device("cpu"))
    reference = load_pipeline(LoadOptions(model="tiny-random-i2v"), cpu)
    base = tmp_path / "HunyuanVideo-I2V"
    llava = reference.text_encoders.llava
    write_diffusers_layout(base, _as_t2v_names(reference))
    import shutil

    shutil.rmtree(base / "text_encoder")
    llava.model.save_pretrained(base / "text_encoder")
    llava.tokenizer.save_pretrained(base / "tokenizer")
    llava.image_processor.save_pretrained(base / "image_processor")
    config = json.loads((base / "transformer" / "config.json").read_text())
    assert config["image_condition_type"] == "token_replace"
    opts = LoadOptions(model="HYVideo-I2V", paths=CheckpointPaths(model_base=base),
                       precisions=Precisions("fp32", "fp32", "fp32", "fp32"))
    pipe = load_pipeline(opts, cpu)
    picture = tmp_path / "p.png"
    Image.fromarray((np.random.RandomState(1).rand(60, 90, 3) * 255).astype("uint8")).save(picture)
    request = reference.request("a cat", load_i2v_image(picture, "144p"), seed=3, video_length=5, infer_steps=2)
    a = reference(request, decode=True, show_progress=False)
    b = pipe(request, decode=True, show_progress=False)
    assert torch.allclose(a.latents, b.latents, atol=1e-5) and torch.allclose(a.videos, b.videos, atol=1e-5)
    t2v = LoadOptions(model="HYVideo-T/2-cfgdistill", paths=CheckpointPaths(model_base=base),
                      precisions=Precisions("fp32", "fp32", "fp32", "fp32"))
    with pytest.raises(CheckpointError, match="describes an image-to-video .token_replace. model"):
        load_pipeline(t2v, cpu)


def _as_t2v_names(pipe):
    """The I2V pipeline seen through write_diffusers_layout's attribute names (its LLM slot is
    written over by the LLaVA afterwards)."""
    from types import SimpleNamespace

    text = SimpleNamespace(llm=SimpleNamespace(model=pipe.text_encoders.clip.model,
                                               tokenizer=pipe.text_encoders.llava.tokenizer),
                           clip=pipe.text_encoders.clip)
    return SimpleNamespace(dit=pipe.dit, vae=pipe.vae, text_encoders=text)
