"""scripts/convert_to_diffusers.py: the tiny model written as a diffusers folder, then loaded by
diffusers' own ``HunyuanVideoPipeline.from_pretrained`` and by our loader; all three agree."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from tests.conftest import ROOT

diffusers = pytest.importorskip("diffusers")

PROMPT = "A cat walks on the grass, realistic style."
SIZE = dict(height=32, width=48, video_length=5, infer_steps=3, seed=1)


@pytest.fixture(scope="module")
def convert():
    spec = importlib.util.spec_from_file_location("hyvideo_convert_to_diffusers",
                                                  ROOT / "scripts" / "convert_to_diffusers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(convert, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-diffusers"
    # A tiny shard size (0.5 MiB) makes the transformer sharded, as the 13B one is.
    assert convert.main(["--model", "tiny-random", "--output", str(out), "--max-shard-size", "0.0005"]) == 0
    return out


def _load(**load):
    from hyvideo.pipeline.options import LoadOptions
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline

    return load_pipeline(LoadOptions(**load), RuntimeOptions(device=torch.device("cpu")))


@pytest.fixture(scope="module")
def ours():
    pipe = _load(model="tiny-random")
    return pipe, pipe(pipe.request(PROMPT, **SIZE), show_progress=False)


def test_folder_layout(exported):
    index = json.loads((exported / "model_index.json").read_text())
    assert index["_class_name"] == "HunyuanVideoPipeline"
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert name in index and (exported / name).is_dir(), name
    shards = sorted((exported / "transformer").glob("diffusion_pytorch_model-*-of-*.safetensors"))
    weight_map = json.loads((exported / "transformer" / "diffusion_pytorch_model.safetensors.index.json")
                            .read_text())["weight_map"]
    assert len(shards) > 1 and set(weight_map.values()) == {p.name for p in shards}
    assert "single_transformer_blocks.0.attn.to_q.weight" in weight_map
    scheduler = json.loads((exported / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["shift"] == 7.0


def test_diffusers_output_equals_ours(exported, ours):
    pipe, result = ours
    theirs = diffusers.HunyuanVideoPipeline.from_pretrained(str(exported))
    theirs.set_progress_bar_config(disable=True)
    assert theirs.transformer.dtype == torch.float32
    noise = pipe.noise(result.request, [SIZE["seed"]], torch.float32)  # what ours started from
    with torch.no_grad():
        latents = theirs(prompt=PROMPT, height=SIZE["height"], width=SIZE["width"],
                         num_frames=SIZE["video_length"], num_inference_steps=SIZE["infer_steps"],
                         guidance_scale=6.0, latents=noise, output_type="latent", return_dict=False)[0]
        theirs.vae.disable_tiling()
        theirs.vae.use_framewise_decoding = False
        video = theirs.vae.decode(latents / theirs.vae.config.scaling_factor, return_dict=False)[0]
        frames = theirs.video_processor.postprocess_video(video, output_type="pt")  # [1, T, 3, H, W]
    scale = float(result.latents.abs().max())
    assert scale > 0.1  # not a degenerate all-zero comparison
    assert (latents - result.latents).abs().max() <= 1e-5 * scale
    assert (frames.permute(0, 2, 1, 3, 4) - result.videos).abs().max() <= 1e-5


def test_our_loader_reads_the_export_bit_for_bit(exported, ours):
    from hyvideo.checkpoints.layouts import CheckpointPaths
    from hyvideo.pipeline.options import Precisions

    _, result = ours
    pipe = _load(paths=CheckpointPaths(model_base=exported), precisions=Precisions("fp32", "fp32", "fp32", "fp32"))
    again = pipe(pipe.request(PROMPT, flow_shift=7.0, **SIZE), show_progress=False)
    assert torch.equal(again.latents, result.latents) and torch.equal(again.videos, result.videos)


def _official_tree(base, pipe):
    """The tiny model written in the official ``ckpts/`` layout."""
    from hyvideo.pipeline.variants import variant_spec

    model = base / "hunyuan-video-t2v-720p"
    (model / "transformers").mkdir(parents=True)
    torch.save({"module": pipe.dit.state_dict()}, model / "transformers" / "mp_rank_00_model_states.pt")
    (model / "vae").mkdir()
    (model / "vae" / "config.json").write_text(json.dumps(variant_spec("tiny-random")["vae"]))
    torch.save(pipe.vae.state_dict(), model / "vae" / "pytorch_model.pt")
    for folder, encoder in (("text_encoder", pipe.text_encoders.llm), ("text_encoder_2", pipe.text_encoders.clip)):
        encoder.model.save_pretrained(base / folder)
        encoder.tokenizer.save_pretrained(base / folder)
    pipe.text_encoders.clip.tokenizer.backend_tokenizer.model.save(str(base / "text_encoder_2"))


def _tensors(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_official_layout_converts_to_the_same_tensors(convert, exported, ours, tmp_path, monkeypatch):
    from hyvideo.pipeline import variants

    _official_tree(tmp_path / "ckpts", ours[0])
    tiny = variants.load_variant("tiny-random")
    # The official path takes the DiT config from the model variant: let the tiny one stand in.
    monkeypatch.setattr(variants, "load_variant", lambda name: tiny)
    out = tmp_path / "out"
    assert convert.main(["--model-base", str(tmp_path / "ckpts"), "--output", str(out)]) == 0
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = _tensors(out / part), _tensors(exported / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    for part in ("transformer", "vae"):
        assert (json.loads((out / part / "config.json").read_text())
                == json.loads((exported / part / "config.json").read_text()))


def test_a_checkpoint_of_another_variant_is_refused(convert, ours, tmp_path, capsys):
    _official_tree(tmp_path / "ckpts", ours[0])
    capsys.readouterr()  # transformers' saving progress
    code = convert.main(["--model-base", str(tmp_path / "ckpts"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "does not match HYVideoDiffusionTransformer" in err and "HYVideo-T/2-cfgdistill" in err


def test_refuses_a_non_empty_output(convert, exported, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["--model", "tiny-random", "--output", str(exported)])
    assert exit_info.value.code == 2
    assert "--output" in capsys.readouterr().err


def test_missing_checkpoints_are_one_line(convert, tmp_path, capsys):
    code = convert.main(["--model-base", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nowhere" in err
    assert not (tmp_path / "out").exists()


def test_the_fp8_dit_is_refused(convert, ours, tmp_path):
    dit = ours[0].dit
    state = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in dit.state_dict().items()}
    with pytest.raises(convert.UsageError, match="float8 weights .* bf16 mp_rank_00_model_states.pt"):
        convert.write_transformer(state, dit.config, tmp_path / "transformer")
    assert not (tmp_path / "transformer").exists()
