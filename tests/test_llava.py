"""The I2V prompt+image encoder (LLaVA): conformance cases and manifest, strict streaming loading,
the 4.39 merge against transformers' own expanded-token path, the selection rules, templates."""

from __future__ import annotations

import copy
import json
import weakref
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlavaForConditionalGeneration, LlavaModel

import hyvideo.text.checkpoint as text_checkpoint
import hyvideo.text.llava as llava_module
from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.conformance import Case, run_case, run_manifest
from hyvideo.conformance.i2v_text_kinds import check_llava_manifest
from hyvideo.conformance.text_kinds import reference_tokenizer
from hyvideo.text import (
    I2V_VIDEO_TEMPLATE,
    I2VTextEncoders,
    LlavaEncodeSettings,
    NEGATIVE_PROMPT_I2V,
    black_image,
    interleave_for,
    load_llava_encoder,
    random_clip_encoder,
    random_llava_encoder,
    tiny_llava_config,
)
from hyvideo.text.llava import llava_key, unused_by_output
from hyvideo.text.prompts import I2V_IMAGE_TEMPLATE, i2v_template_for_frames
from hyvideo.text.tokenizer import derive_crop_start
from tests.conftest import cases_of_kind, conformance_root

KINDS = ("text_encoder_llava_image", "prompt_template_i2v")
MANIFEST = "text_encoder_i2v_llava-llama-3-8b-v1_1.json"
PROMPT = "A cat walks on the grass, realistic style."


def _case_params():
    root = conformance_root()
    if not (root / "cases").is_dir():
        return [pytest.param(None, id="no-data")]
    return [pytest.param(p, id=p.name) for k in KINDS for p in cases_of_kind(root, k)]


@pytest.fixture(scope="module")
def tokenizer():
    return reference_tokenizer()


@pytest.fixture(scope="module")
def source_model() -> LlavaModel:
    """A tiny random LlavaModel (576 patches, llava vocabulary), float32."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return LlavaModel(tiny_llava_config()).eval()


@pytest.fixture(scope="module")
def encoder(source_model, tokenizer):
    from hyvideo.text.llava import LlavaTextImageEncoder, clip_image_processor

    return LlavaTextImageEncoder(source_model, tokenizer, clip_image_processor(48),
                                 pad_token_id=128258)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    g = torch.Generator().manual_seed(0)
    return Image.fromarray(torch.randint(0, 256, (40, 28, 3), generator=g, dtype=torch.uint8).numpy())


# ---------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("case_path", _case_params())
def test_conformance_case(case_path, conformance):
    if case_path is None:
        pytest.skip("no conformance data")
    result = run_case(Case.open(case_path))
    print(result.line())
    assert result.passed, result.line()


def test_manifest_full_size_key_set(conformance):
    result = run_manifest(conformance / "manifests" / MANIFEST)
    assert result.passed, result.line()


def test_manifest_checker_reports_mismatches(conformance):
    meta = json.loads((conformance / "manifests" / MANIFEST).read_text())
    assert check_llava_manifest(meta) == []
    broken = copy.deepcopy(meta)
    broken["keys"] = [e for e in broken["keys"] if "post_layernorm.bias" not in e["key"]]
    assert any("post_layernorm.bias" in p for p in check_llava_manifest(broken))
    broken = copy.deepcopy(meta)
    entry = next(e for e in broken["keys"] if e["key"].endswith("linear_1.weight"))
    entry["shape"] = [4096, 1025]
    assert any("linear_1.weight" in p for p in check_llava_manifest(broken))
    broken = copy.deepcopy(meta)
    entry = next(e for e in broken["keys"] if ".layers.29." in e["key"])
    entry["affects_reference_output"] = False  # layer 29 of 32 is read by hidden_states[-3]
    assert any("layers.29" in p for p in check_llava_manifest(broken))


def test_the_public_case_fails_with_a_wrong_interleave(conformance, monkeypatch):
    """The runner really compares: interleave 2 instead of 4 changes the output."""
    import hyvideo.conformance.i2v_text_kinds as kinds

    path = conformance / "cases" / "text_encoder_llava_image_tiny_public"
    real = kinds._settings
    monkeypatch.setattr(kinds, "_settings", lambda case: LlavaEncodeSettings(
        **{**real(case).__dict__, "image_embed_interleave": 2}))
    assert not run_case(Case.open(path)).passed


# ---------------------------------------------------------------------------- templates


def test_i2v_template_prefix_and_token_positions(tokenizer):
    assert derive_crop_start(tokenizer, I2V_VIDEO_TEMPLATE) == I2V_VIDEO_TEMPLATE.crop_start == 103
    ids = tokenizer(I2V_VIDEO_TEMPLATE.format(PROMPT))["input_ids"]
    assert ids[I2V_VIDEO_TEMPLATE.image_emb_start] == tokenizer.convert_tokens_to_ids("<image>")
    assert [i for i, t in enumerate(ids) if t == 271] == [4, 98, 102, len(ids) - 1]
    # The image template's official crop_start does not match its prefix (never used in I2V).
    assert derive_crop_start(tokenizer, I2V_IMAGE_TEMPLATE) == 38 != I2V_IMAGE_TEMPLATE.crop_start


def test_one_frame_is_refused():
    assert i2v_template_for_frames(2) is I2V_VIDEO_TEMPLATE
    with pytest.raises(ValueError, match="more than 1 frame"):
        i2v_template_for_frames(1)


def test_interleave_per_condition_type():
    assert interleave_for("token_replace") == 4 and interleave_for("latent_concat") == 2
    with pytest.raises(ValueError, match="token_replace"):
        interleave_for("concat")


# ---------------------------------------------------------------------------- encoding


def _expanded_reference(model: LlavaModel, ids, mask, pixel_values, pad_id):
    """transformers' own path (newer LLaVA): <image> expanded to 576 ids in the input, the
    features scattered by LlavaModel.forward. With 4.39's zeroed pad embeddings and position ids
    it must give the same hidden states as our merge."""
    pos = int((ids[0] == model.config.image_token_index).nonzero())
    expanded = torch.cat([ids[:, :pos], ids.new_full((1, 576), model.config.image_token_index),
                          ids[:, pos + 1:]], dim=1)
    merged_mask = torch.cat([mask[:, :pos], mask.new_ones(1, 576), mask[:, pos + 1:]], dim=1)
    embeds = model.language_model.embed_tokens(expanded).masked_fill((expanded == pad_id)[..., None], 0)
    features = model.get_image_features(pixel_values=pixel_values, vision_feature_layer=-2,
                                        vision_feature_select_strategy="default").pooler_output[0]
    is_image = (expanded == model.config.image_token_index)[..., None].expand_as(embeds)
    embeds = embeds.masked_scatter(is_image, features)
    position_ids = (merged_mask.cumsum(-1) - 1).masked_fill(merged_mask == 0, 1)
    out = model(inputs_embeds=embeds, attention_mask=merged_mask, position_ids=position_ids,
                output_hidden_states=True)
    return out.hidden_states[-3]


def test_merge_equals_transformers_expanded_path(encoder, source_model, picture):
    ids, mask = encoder.tokenize([PROMPT])
    pixel_values = encoder.pixel_values([picture])
    ours, merged_mask = encoder.hidden_states(ids, mask, pixel_values)
    with torch.inference_mode():
        reference = _expanded_reference(source_model, ids, mask, pixel_values, 128258)
    assert ours.shape == (1, 359 - 1 + 576, 16)
    assert int(merged_mask.sum()) == int(mask.sum()) - 1 + 576
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_selection_shapes_and_positions(encoder, picture):
    ids, mask = encoder.tokenize([PROMPT])
    pixel_values = encoder.pixel_values([picture])
    h, _ = encoder.hidden_states(ids, mask, pixel_values)
    states, out_mask = encoder.encode_tokens(ids, mask, pixel_values)
    assert states.shape == (1, 144 + 252, 16) and encoder.output_length == 396
    torch.testing.assert_close(states[:, :144], h[:, 5:581:4])  # image part, every 4th
    j = [i for i, t in enumerate(ids[0].tolist()) if t == 271][-1]
    n_text = j - 4 - 103  # prompt tokens + nothing else: the header tokens are cut
    torch.testing.assert_close(states[:, 144:144 + n_text], h[:, 103 + 575:j - 4 + 575])
    torch.testing.assert_close(states[:, 144 + n_text], h[:, j + 575])  # the kept final "\n\n"
    expected_mask = [1] * (144 + n_text + 1) + [0] * (252 - n_text - 1)
    assert out_mask[0].tolist() == expected_mask


def test_latent_concat_keeps_every_second_image_token(source_model, tokenizer, picture):
    from hyvideo.text.llava import LlavaTextImageEncoder, clip_image_processor

    enc = LlavaTextImageEncoder(source_model, tokenizer, clip_image_processor(48),
                                LlavaEncodeSettings(image_embed_interleave=2), pad_token_id=128258)
    states, mask = enc.encode([PROMPT], [picture], num_frames=33)
    assert states.shape == (1, 288 + 252, 16) and bool(mask[0, :288].all())


def test_truncated_prompt_uses_the_sequence_end(encoder, picture):
    long_prompt = " ".join(["word"] * 400)
    ids, mask = encoder.tokenize([long_prompt])
    assert (ids[0] == 271).sum() == 3 and bool(mask.all())  # the header's "\n\n" was cut away
    h, _ = encoder.hidden_states(ids, mask, encoder.pixel_values([picture]))
    states, out_mask = encoder.encode_tokens(ids, mask, encoder.pixel_values([picture]))
    torch.testing.assert_close(states[:, 144:], h[:, 103 + 575:359 - 4 + 575])
    assert bool(out_mask.all())


def test_prompt_with_blank_lines_and_batch(encoder, picture):
    """Rows are selected one by one; a prompt's own "\\n\\n" comes before the header's."""
    prompts = ["first line\n\nsecond line", PROMPT]
    states, mask = encoder.encode(prompts, [picture, black_image(picture.size)], num_frames=5)
    assert states.shape == (2, 396, 16)
    alone, alone_mask = encoder.encode(prompts[:1], [picture], num_frames=5)
    torch.testing.assert_close(states[:1], alone, atol=1e-5, rtol=1e-5)
    assert torch.equal(mask[:1], alone_mask)


def test_bad_encode_inputs(encoder, picture):
    with pytest.raises(ValueError, match="more than 1 frame"):
        encoder.encode([PROMPT], [picture], num_frames=1)
    with pytest.raises(ValueError, match="<image>"):
        encoder.encode(["a <image> here"], [picture], num_frames=5)
    with pytest.raises(ValueError, match="1 prompts but 2 images"):
        encoder.encode([PROMPT], [picture, picture], num_frames=5)


def test_weights_outside_the_read_layers_do_not_matter(tokenizer, picture):
    """unused_by_output (used by the manifest check) is what the computation reads."""
    config = tiny_llava_config()
    enc = random_llava_encoder(config, tokenizer, seed=5)
    args = (*enc.tokenize([PROMPT]), enc.pixel_values([picture]))
    base = enc.encode_tokens(*args)[0]
    unused = unused_by_output(config)
    assert "language_model.layers.3." in unused and "vision_tower.vision_model.post_layernorm." in unused
    params = {nested(n): p for n, p in enc.model.named_parameters()}
    with torch.no_grad():
        for name, p in params.items():
            if name.startswith(unused):
                p.add_(1.0)
    assert torch.equal(enc.encode_tokens(*args)[0], base)
    with torch.no_grad():
        for prefix in ("language_model.layers.1.", "vision_tower.vision_model.encoder.layers.1.",
                       "multi_modal_projector.linear_2."):
            p = next(p for n, p in params.items() if n.startswith(prefix))
            noise = torch.randn_like(p)  # not a constant: the layer norms would cancel it
            p.add_(noise)
            assert not torch.allclose(enc.encode_tokens(*args)[0], base), prefix
            p.sub_(noise)


def nested(name: str) -> str:
    """A parameter name in the file's layout (transformers >= 5.14 drops ``vision_model.``)."""
    if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
        return "vision_tower.vision_model." + name[len("vision_tower."):]
    return name


def test_i2v_text_encoders_with_clip_and_the_black_negative(encoder, picture, tmp_path):
    from transformers import CLIPTextConfig

    from hyvideo.text.tokenizer import load_clip_tokenizer
    from tests.test_text import _tiny_clip_folder

    clip_config = CLIPTextConfig(vocab_size=514, hidden_size=8, intermediate_size=16,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 max_position_embeddings=77, eos_token_id=513)
    clip = random_clip_encoder(clip_config, load_clip_tokenizer(_tiny_clip_folder(tmp_path)))
    encoders = I2VTextEncoders(encoder, clip)
    cond = encoders.encode(["  " + PROMPT + "\n"], picture, num_frames=33)
    assert cond.states.shape == (1, 396, 16) and cond.mask.shape == (1, 396)
    assert cond.mask.dtype == torch.int64 and cond.pooled.shape == (1, 8)
    torch.testing.assert_close(cond.pooled, clip.encode([PROMPT])[0], rtol=0, atol=0)
    negative = encoders.encode_negative([NEGATIVE_PROMPT_I2V], picture, num_frames=33)
    black = encoders.encode([NEGATIVE_PROMPT_I2V], [Image.new("RGB", picture.size)], num_frames=33)
    torch.testing.assert_close(negative.states, black.states, rtol=0, atol=0)
    with_picture = encoders.encode([NEGATIVE_PROMPT_I2V], picture, num_frames=33)
    assert not torch.allclose(negative.states[:, :144], with_picture.states[:, :144])


# ---------------------------------------------------------------------------- loading


def _legacy_state(model: LlavaModel, lm_head: bool) -> dict[str, torch.Tensor]:
    """The transformers-4.39 file layout of ``model``'s weights (float16)."""
    state = {}
    for key, value in model.state_dict().items():
        name = "language_model.model." + key.removeprefix("language_model.") \
            if key.startswith("language_model.") else key
        state[name] = value.to(torch.float16).contiguous()
    if lm_head:
        state["language_model.lm_head.weight"] = state["language_model.model.embed_tokens.weight"].clone()
    return state


def _write_folder(folder: Path, model: LlavaModel, *, lm_head=False, edit=None) -> Path:
    from hyvideo.text.llava import clip_image_processor

    folder.mkdir(parents=True, exist_ok=True)
    state = _legacy_state(model, lm_head)
    if edit:
        edit(state)
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, str(folder / name))
    index = {"weight_map": {k: n for n, names in shards.items() for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config = model.config.to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    clip_image_processor(48).save_pretrained(str(folder))
    return folder


def test_strict_load_of_the_official_layout(tmp_path, source_model, tokenizer, picture):
    folder = _write_folder(tmp_path / "te", source_model, lm_head=True)
    enc = load_llava_encoder(folder, dtype=torch.float32, tokenizer=tokenizer)
    expected = _legacy_state(source_model, lm_head=False)
    for key, value in enc.model.state_dict().items():
        file_key = llava_key_inverse(key)
        assert torch.equal(value, expected[file_key].float()), key
    assert enc.dtype == torch.float32 and enc.pad_token_id == 128258
    states, mask = enc.encode([PROMPT], [picture], num_frames=5)
    assert states.shape == (1, 396, 16) and torch.isfinite(states).all()


def llava_key_inverse(key: str) -> str:
    return "language_model.model." + key.removeprefix("language_model.") \
        if key.startswith("language_model.") else key


@pytest.mark.parametrize("problem, edit", [
    ("missing keys: multi_modal_projector.linear_2.bias",
     lambda s: s.pop("multi_modal_projector.linear_2.bias")),
    ("unexpected keys: vision_tower.extra.weight",
     lambda s: s.__setitem__("vision_tower.extra.weight", torch.zeros(2))),
    ("shape mismatches (file != model): multi_modal_projector.linear_1.bias (3,) != (16,)",
     lambda s: s.__setitem__("multi_modal_projector.linear_1.bias", torch.zeros(3))),
])
def test_strict_load_names_the_mismatch_before_reading_data(tmp_path, source_model, tokenizer,
                                                              monkeypatch, problem, edit):
    folder = _write_folder(tmp_path / "bad", source_model, edit=edit)
    reads = []
    _spy_reads(monkeypatch, reads)
    with pytest.raises(CheckpointError) as err:
        load_llava_encoder(folder, dtype=torch.float32, tokenizer=tokenizer)
    assert problem in str(err.value) and "\n" not in str(err.value)
    assert reads == []  # headers only: no tensor was read


def test_an_integer_tensor_is_refused_before_reading_data(tmp_path, source_model, tokenizer,
                                                          monkeypatch):
    """The headers' dtypes are checked: an integer tensor where the model has a floating weight
    is refused (it would be cast silently into meaningless weights), before any tensor is read."""
    folder = _write_folder(tmp_path / "int", source_model, edit=lambda s: s.__setitem__(
        "multi_modal_projector.linear_1.bias", torch.zeros(16, dtype=torch.int64)))
    reads = []
    _spy_reads(monkeypatch, reads)
    with pytest.raises(CheckpointError) as err:
        load_llava_encoder(folder, dtype=torch.float32, tokenizer=tokenizer)
    message = str(err.value)
    assert "tensors are not floating point: multi_modal_projector.linear_1.bias (torch.int64)" \
        in message and "\n" not in message
    assert reads == []


def _spy_reads(monkeypatch, log: list, on_read=None):
    """Wrap safe_open in hyvideo.text.checkpoint (the text encoders' reader) so every get_tensor
    is seen."""
    real = text_checkpoint.safe_open

    class Handle:
        def __init__(self, *args, **kwargs):
            self._inner = real(*args, **kwargs)

        def __enter__(self):
            self._h = self._inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self._inner.__exit__(*exc)

        def keys(self):
            return self._h.keys()

        def get_slice(self, key):
            return self._h.get_slice(key)

        def get_tensor(self, key):
            if on_read:
                on_read(key)
            tensor = self._h.get_tensor(key)
            log.append(weakref.ref(tensor))
            return tensor

    monkeypatch.setattr(text_checkpoint, "safe_open", Handle)


def test_streaming_load_never_holds_a_second_copy(tmp_path, source_model, tokenizer, monkeypatch):
    """While loading (float16 files -> float32 model), at every read at most one tensor as read
    from the file is alive besides the model's own parameters, and the model was built on the
    meta device (no randomly initialised copy)."""
    folder = _write_folder(tmp_path / "te", source_model)
    built: list[LlavaModel] = []
    real_build = llava_module.LlavaModel

    def build(config):
        built.append(real_build(config))
        return built[-1]

    monkeypatch.setattr(llava_module, "LlavaModel", build)
    reads: list = []
    peaks: list[int] = []

    def on_read(key):
        model = built[0]
        loaded = {p.data_ptr() for p in model.parameters() if not p.is_meta}
        alive = [r() for r in reads if r() is not None]
        peaks.append(sum(1 for t in alive if t.data_ptr() not in loaded))
        if len(peaks) == 1:
            assert all(p.is_meta for p in model.parameters())

    _spy_reads(monkeypatch, reads, on_read)
    enc = load_llava_encoder(folder, dtype=torch.float32, tokenizer=tokenizer)
    assert len(peaks) == len(enc.model.state_dict()) and max(peaks) <= 1
    assert all(r() is None for r in reads)  # every float16 copy is gone


def test_diffusers_layout_saved_by_this_transformers(tmp_path, tokenizer, picture):
    """hunyuanvideo-community/HunyuanVideo-I2V: text_encoder/ (a LlavaForConditionalGeneration
    save) and image_processor/."""
    from hyvideo.text.llava import LlavaTextImageEncoder, clip_image_processor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        full = LlavaForConditionalGeneration(tiny_llava_config()).eval()
    full.save_pretrained(str(tmp_path / "text_encoder"))
    clip_image_processor(48).save_pretrained(str(tmp_path / "image_processor"))
    with safe_open(str(tmp_path / "text_encoder" / "model.safetensors"), "pt") as handle:
        assert "language_model.lm_head.weight" in handle.keys()  # the legacy names are written
    # (tokenizer/ is read by load_llm_tokenizer, tested with the T2V encoder; saving and
    # reading the 128k-token tokenizer would take seconds here)
    loaded = load_llava_encoder(tmp_path / "text_encoder", dtype=torch.float32,
                                tokenizer=tokenizer, processor_folder=tmp_path / "image_processor")
    direct = LlavaTextImageEncoder(full.model, tokenizer, clip_image_processor(48),
                                   pad_token_id=128258)
    got = loaded.encode([PROMPT], [picture], num_frames=5)
    want = direct.encode([PROMPT], [picture], num_frames=5)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    assert torch.equal(got[1], want[1])


def test_key_table():
    assert llava_key("language_model.model.layers.0.mlp.up_proj.weight") == \
        "language_model.layers.0.mlp.up_proj.weight"
    assert llava_key("model.language_model.norm.weight") == "language_model.norm.weight"
    assert llava_key("vision_tower.vision_model.pre_layrnorm.weight") == \
        "vision_tower.vision_model.pre_layrnorm.weight"
    assert llava_key("model.multi_modal_projector.linear_1.bias") == "multi_modal_projector.linear_1.bias"
    assert llava_key("language_model.lm_head.weight") is None and llava_key("lm_head.weight") is None
    assert llava_key("vision_tower.vision_model.embeddings.position_ids") is None
    assert llava_key("something.else") == "something.else"  # reported as unexpected


def test_not_a_llava_folder(tmp_path, tokenizer):
    folder = tmp_path / "llm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not a LLaVA config"):
        load_llava_encoder(folder, tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match="text encoder folder not found"):
        load_llava_encoder(tmp_path / "nowhere", tokenizer=tokenizer)


def _reference_selection(h, ids, mask, interleave):
    """FORMAT.md section 14's selection, written out: image part, then the prompt part."""
    where = (ids[0] == 271).nonzero().flatten().tolist()
    j = ids.shape[1] if len(where) == 3 else where[-1]
    image = h[:, 5:581:interleave]
    text = torch.cat([h[:, 103 + 575:j - 4 + 575], h[:, j + 575:]], dim=1)
    text_mask = torch.cat([mask[:, 103:j - 4], mask[:, j:]], dim=1)
    return torch.cat([image, text], 1), torch.cat([mask.new_ones(image.shape[:2]), text_mask], 1)


def test_runner_takes_the_official_geometry_and_interleave_2(tmp_path, tokenizer):
    """A case like the hidden one (336-px processor, patch 14, interleave 2, a single float16 file
    with lm_head), its expected outputs made by transformers' expanded-token path."""
    from hyvideo.text.llava import clip_image_processor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        model = LlavaModel(tiny_llava_config(image_size=336, patch_size=14)).eval()
        model = model.half().float()  # the weights the float16 file holds
        image = torch.randint(0, 256, (375, 500, 3), dtype=torch.uint8)
    folder = tmp_path / "case" / "model_folder"
    folder.mkdir(parents=True)
    save_file(_legacy_state(model, lm_head=True), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    processor = clip_image_processor(336)
    processor.save_pretrained(str(folder))
    runs = {"short": {"prompt": PROMPT, "image": "image_rgb"},
            "negative_black": {"prompt": NEGATIVE_PROMPT_I2V, "image": "all-black image"}}
    tensors, outputs = {"image_rgb": image}, []
    for run, spec in runs.items():
        picture = Image.fromarray(image.numpy())
        picture = picture if run == "short" else Image.new("RGB", picture.size)
        batch = tokenizer([I2V_VIDEO_TEMPLATE.format(spec["prompt"])], padding="max_length",
                          truncation=True, max_length=359, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        pixels = processor(images=picture, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            h = _expanded_reference(model, ids, mask, pixels, 128258)
        states, states_mask = _reference_selection(h, ids, mask, interleave=2)
        tensors.update({f"{run}.hidden_state": states, f"{run}.attention_mask": states_mask,
                        f"{run}.input_ids": ids, f"{run}.pixel_values": pixels})
        outputs += [f"{run}.hidden_state", f"{run}.attention_mask"]
    save_file(tensors, str(tmp_path / "case" / "tensors.safetensors"))
    case = {"kind": "text_encoder_llava_image", "name": "hidden_like", "outputs": outputs,
            "tolerance": {"atol": 1e-4, "rtol": 1e-4},
            "settings": {"text_len": 256, "max_length": 359, "image_embed_interleave": 2,
                         "template": I2V_VIDEO_TEMPLATE.name, "runs": runs}}
    (tmp_path / "case" / "case.json").write_text(json.dumps(case))
    result = run_case(Case.open(tmp_path / "case"))
    assert result.passed and result.worst < 0.05, result.line()
    assert tensors["short.hidden_state"].shape == (1, 288 + 252, 16)
