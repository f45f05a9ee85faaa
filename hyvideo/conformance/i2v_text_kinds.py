"""Conformance runners for the I2V prompt+image encoder, its templates and the image input
(FORMAT.md sections 14 and 15), and the full-size ``text_encoder_i2v`` manifest check.

They use the pipeline's own code: :mod:`hyvideo.text.llava` (loader, CLIP processor, merge and
selection), :mod:`hyvideo.text.prompts` and :mod:`hyvideo.pipeline.image_input`. The tokenizer is
the llava Llama-3 one rebuilt offline (the cases hold none).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor, LlavaForConditionalGeneration

from hyvideo.conformance.core import Case
from hyvideo.conformance.text_kinds import first_mismatch, reference_tokenizer, template_token_ids
from hyvideo.pipeline.image_input import (
    I2V_RESOLUTIONS,
    bucket_for,
    i2v_buckets,
    resize_center_crop,
    vae_pixels,
)
from hyvideo.text.llava import (
    LlavaEncodeSettings,
    LlavaTextImageEncoder,
    black_image,
    interleave_for,
    llava_config,
    key_mapper,
    llava_key,
    load_llava_encoder,
    unused_by_output,
)
from hyvideo.text.prompts import I2V_PROMPT_TEMPLATES, I2V_VIDEO_TEMPLATE

__all__ = [
    "run_text_encoder_llava_image",
    "run_prompt_template_i2v",
    "run_image_preprocess_i2v",
    "check_llava_manifest",
]

_VIDEO_FRAMES = 129  # any count > 1: the I2V encoder refuses 1-frame videos
_PIXEL_ATOL = 1e-5  # the processor's pixel values are a sanity check of the inputs


def _settings(case: Case) -> LlavaEncodeSettings:
    s = case.settings
    interleave = s.get("image_embed_interleave")
    if interleave is None:  # else from the DiT conditioning type (token_replace by default)
        interleave = interleave_for(s.get("i2v_condition_type", "token_replace"))
    return LlavaEncodeSettings(
        text_len=s.get("text_len", 256),
        hidden_state_skip_layer=s.get("hidden_state_skip_layer", 2),
        apply_final_norm=s.get("apply_final_norm", False),
        image_embed_interleave=interleave,
    )


def _check_template(case: Case, encoder: LlavaTextImageEncoder) -> None:
    s, template = case.settings, encoder.template
    if s.get("template", template.name) != template.name:
        raise AssertionError(f"case template {s['template']!r}, the encoder uses {template.name!r}")
    if s.get("template_string", template.template) != template.template:
        raise AssertionError("the case's template string differs from I2V_VIDEO_TEMPLATE")
    for key, value in s.get("template_constants", {}).items():
        if getattr(template, key) != value:
            raise AssertionError(
                f"template constant {key}: ours {getattr(template, key)}, case {value}")
    if s.get("max_length", encoder.max_length) != encoder.max_length:
        raise AssertionError(f"max_length: ours {encoder.max_length}, case {s['max_length']}")


def _run_image(case: Case, run: str, spec: dict) -> Image.Image:
    """The run's image: a stored uint8 tensor, or a black image of ``image_rgb``'s size."""
    name = spec.get("image", "image_rgb")
    if name in case:
        return Image.fromarray(case[name].numpy())
    if "black" in name or "black" in run:
        height, width = case["image_rgb"].shape[:2]
        return black_image((width, height))
    raise AssertionError(f"{run}: unknown image {name!r}")


def _check_inputs(case: Case, run: str, got: dict[str, torch.Tensor]) -> None:
    name = first_mismatch(case, run, got, atol=_PIXEL_ATOL)
    if name is not None:
        raise AssertionError(f"{name}: our tokenizer / image processor differs from the case")


def run_text_encoder_llava_image(case: Case) -> dict[str, torch.Tensor]:
    encoder = load_llava_encoder(case.path / "model_folder", dtype=torch.float32,
                                 settings=_settings(case), tokenizer=reference_tokenizer())
    _check_template(case, encoder)
    out: dict[str, torch.Tensor] = {}
    for run, spec in case.settings["runs"].items():
        input_ids, mask = encoder.tokenize([spec["prompt"].strip()])  # inference.py strips
        pixel_values = encoder.pixel_values([_run_image(case, run, spec)])
        _check_inputs(case, run, {"input_ids": input_ids, "tokenizer_attention_mask": mask,
                                  "pixel_values": pixel_values})
        states, states_mask = encoder.encode_tokens(input_ids, mask, pixel_values)
        out[f"{run}.hidden_state"], out[f"{run}.attention_mask"] = states, states_mask
    return out


def _positions(ids: list[int], token: int) -> list[int]:
    return [i for i, t in enumerate(ids) if t == token]


def run_prompt_template_i2v(case: Case) -> dict[str, torch.Tensor]:
    tokenizer = reference_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    out: dict[str, torch.Tensor] = {}
    for name, spec in case.settings["token_ids"].items():
        template = I2V_PROMPT_TEMPLATES[name]
        prompts = spec["prompts"]
        ids = template_token_ids(tokenizer, name, template, spec["template"],
                                 {key: prompt["text"] for key, prompt in prompts.items()})
        for key, value in spec["constants"].items():
            if getattr(template, key) != value:
                raise AssertionError(
                    f"{name}: constant {key} is {getattr(template, key)}, not {value}")
        if len(ids[f"{name}.prefix_ids"]) != spec["prefix_token_count_including_bos"]:
            raise AssertionError(f"{name}: {len(ids[f'{name}.prefix_ids'])} prefix tokens")
        for key, prompt in prompts.items():
            tokens = ids[f"{name}.{key}.input_ids"].tolist()
            if (_positions(tokens, template.double_return_token_id) != prompt["positions_of_271"]
                    or _positions(tokens, image_id) != [prompt["position_of_image_token"]]):
                raise AssertionError(f"{name}.{key}: positions of 271 / <image> differ")
        out.update(ids)
    if I2V_VIDEO_TEMPLATE.name not in case.settings["token_ids"]:
        raise AssertionError("the case lacks the I2V video template")
    return out


def _uint8(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.uint8))  # a writable copy


def _check_mapping(case: Case) -> None:
    for entry in case.settings.get("mapping", []):
        for resolution in I2V_RESOLUTIONS:
            got = bucket_for(entry["image_height"], entry["image_width"], resolution)
            if resolution in entry and list(got) != list(entry[resolution]):
                raise AssertionError(f"{entry['image_width']}x{entry['image_height']} at "
                                     f"{resolution}: bucket {got}, expected {entry[resolution]}")


def run_image_preprocess_i2v(case: Case) -> dict[str, torch.Tensor]:
    _check_mapping(case)
    image = Image.fromarray(case["image_rgb"].numpy())
    height, width = bucket_for(image.height, image.width, case.settings["i2v_resolution"])
    crop = resize_center_crop(image, (height, width))
    vae_input = vae_pixels(crop)  # [1, 3, 1, h, w]
    processor = CLIPImageProcessor(**case.config["clip_preprocessor_config"])
    clip_u8 = processor(images=image, do_rescale=False, do_normalize=False,
                        return_tensors="np")["pixel_values"][0]  # [3, S, S], integer values
    black = black_image(image.size)
    out = {
        "target_hw": torch.tensor([height, width], dtype=torch.int64),
        "vae_input_uint8": _uint8(np.asarray(crop)),
        "vae_input_shape": torch.tensor(vae_input.shape, dtype=torch.int64),
        "vae_input": vae_input,
        "clip_resized_cropped_uint8": _uint8(np.rint(clip_u8).transpose(1, 2, 0)),
        "clip_pixel_values": processor(images=image, return_tensors="pt")["pixel_values"],
        "clip_pixel_values_black": processor(images=black, return_tensors="pt")["pixel_values"],
    }
    for resolution in I2V_RESOLUTIONS:
        buckets = torch.tensor(i2v_buckets(resolution), dtype=torch.int64)  # [N, 2] (h, w)
        out[f"crop_size_list_{resolution}"] = buckets
    return out


# ---------------------------------------------------------------------------- manifest


def check_llava_manifest(meta: dict) -> list[str]:
    """Problems (empty = pass) of the full-size LLaVA, built on meta, against the manifest: our
    key table maps every listed key (but lm_head, never loaded) onto ``LlavaModel`` with its
    shape, nothing is left over, and :func:`unused_by_output` agrees on what affects the output.
    """
    config = llava_config(meta["config"], source="manifest config")
    with torch.device("meta"):
        full = LlavaForConditionalGeneration(config)
    ours = {k: tuple(v.shape) for k, v in full.model.state_dict().items()}
    lm_head = tuple(full.lm_head.weight.shape)
    unused = unused_by_output(config)
    rename = key_mapper(full.model)
    problems, covered, affecting = [], set(), 0
    for entry in meta["keys"]:
        key, shape, name = entry["key"], tuple(entry["shape"]), rename(entry["key"])
        if name is None:
            if key != "language_model.lm_head.weight" or shape != lm_head:
                problems.append(f"{key} {shape} is skipped by our key table")
            affects = False
        elif name not in ours:
            problems.append(f"{key} -> {name}: not in our model")
            continue
        else:
            covered.add(name)
            affects = not llava_key(key).startswith(unused)  # unused: in the file's (nested) names
            if ours[name] != shape:
                problems.append(f"{key}: our shape {ours[name]} != {shape}")
        if affects != entry["affects_reference_output"]:
            problems.append(f"{key}: affects output {affects}, manifest "
                            f"{entry['affects_reference_output']}")
        affecting += entry["numel"] if affects else 0
    problems += [f"not in the manifest: {k}" for k in ours if k not in covered]
    total = sum(np.prod(s, dtype=np.int64) for s in ours.values()) + np.prod(lm_head)
    if int(total) != meta["total_parameters"] or len(ours) + 1 != meta["num_keys"]:
        problems.append(f"{len(ours) + 1} keys / {total} parameters != "
                        f"{meta['num_keys']} / {meta['total_parameters']}")
    if affecting != meta["parameters_affecting_output"]:
        problems.append(f"{affecting} parameters affect the output, manifest "
                        f"{meta['parameters_affecting_output']}")
    return problems
