"""The image-to-video prompt+image encoder: the full LLaVA-Llama-3-8B (``ckpts/text_encoder_i2v``).

``ckpts/text_encoder_i2v`` is xtuner/llava-llama-3-8b-v1_1-transformers: a CLIP ViT-L/14-336
vision tower, a Linear-GELU-Linear projector and Llama-3-8B, saved by transformers 4.39 (keys
``vision_tower.vision_model.*``, ``multi_modal_projector.linear_1/2``, ``language_model.model.*``,
``language_model.lm_head.weight``). The modules are transformers' own (``LlavaModel``: its
``CLIPVisionModel``, projector and ``LlamaModel``); this file only reproduces what the reference
(HunyuanVideo-I2V, transformers 4.39.3) does around them:

1. ``I2V_VIDEO_TEMPLATE.format(prompt.strip())``, tokenized to ``text_len + 103`` = 359 tokens
   (pad ``<pad>`` 128258 on the right, truncation). Token 5 is the one ``<image>`` (128257).
2. The image goes through the folder's CLIPImageProcessor (shortest edge -> 336 bicubic, centre
   crop, CLIP mean/std). The vision tower's ``hidden_states[-2]`` without CLS (576 patches) goes
   through the projector.
3. 4.39's merge: the ``<image>`` token is *replaced* by the 576 features (359 - 1 + 576 = 934
   positions), the input embedding of every ``<pad>`` token is zeroed and
   ``position_ids = cumsum(mask) - 1`` with padded positions set to 1. Newer transformers expand
   ``<image>`` in the processor instead; the last two details change only padded rows, which the
   DiT never attends to, but they make every row match the reference.
4. ``h = hidden_states[-(skip + 1)]`` of the Llama (skip 2, no final norm).
5. Selection (the DiT's ``text_states``): the image features subsampled every
   ``image_embed_interleave``-th (4 for token_replace: 144; 2 for latent_concat: 288), then the
   prompt part with the template and the 4 assistant-header tokens cut away (252 tokens).

Loading is strict and streams: the model is built on the meta device, every file's keys and
shapes are checked against it from the safetensors headers before any tensor is read, then each
shard's tensors are cast and assigned in turn, so the weights exist once, in their final dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    LlavaConfig,
    LlavaModel,
    PreTrainedTokenizerBase,
)

from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.text.checkpoint import (
    materialized,
    read_config,
    seeded_random,
    stream_weights,
    weight_files,
)
from hyvideo.text.clip import CLIPTextEncoder, load_clip_encoder, rebuild_position_ids
from hyvideo.text.conditioning import TextConditioning
from hyvideo.text.encoder import text_conditioning
from hyvideo.text.llm import LLMEncodeSettings, rebuild_rotary
from hyvideo.text.prompts import I2V_VIDEO_TEMPLATE, ImagePromptTemplate, i2v_template_for_frames
from hyvideo.text.tokenizer import check_crop_start, load_llm_tokenizer, tokenize_padded

__all__ = [
    "LLAVA_HINT",
    "LLAVA_KEY_TABLE",
    "I2VTextEncoders",
    "LlavaEncodeSettings",
    "LlavaTextImageEncoder",
    "black_image",
    "canonical_llava_key",
    "clip_image_processor",
    "interleave_for",
    "llava_config",
    "llava_key",
    "llava_text_config",
    "load_i2v_text_encoders",
    "load_image_processor",
    "load_llava_encoder",
    "random_llava_encoder",
    "tiny_llava_config",
    "unused_by_output",
]

LLAVA_HINT = (
    "ckpts/text_encoder_i2v is the xtuner/llava-llama-3-8b-v1_1-transformers folder "
    "(see ckpts/README.md)"
)

# Checkpoint key prefix -> LlavaModel key prefix: the one table of the LLaVA layouts, read by
# this loader and by the extraction of the language model (hyvideo.text.extract). The first
# matching row wins. The official folder uses the transformers < 4.52 names (which
# save_pretrained of every later version writes as well); the in-memory names of >= 4.52 are
# accepted too. lm_head (absent when tied) is never loaded here: the encoder reads hidden states.
LLAVA_KEY_TABLE: tuple[tuple[str, str], ...] = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "language_model."),
    ("vision_tower.", "vision_tower."),
    ("multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.", "lm_head."),
    ("model.language_model.", "language_model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
# Non-persistent buffers that some older saves carry; they are rebuilt, never read.
_REBUILT_BUFFERS = ("rotary_emb.inv_freq", "embeddings.position_ids")

# The reference's interleave per DiT conditioning type.
_INTERLEAVE = {"token_replace": 4, "latent_concat": 2}


def canonical_llava_key(key: str) -> str | None:
    """Checkpoint key -> ``LlavaModel`` key (``lm_head.*`` included) through
    :data:`LLAVA_KEY_TABLE`; None when no row matches."""
    for old, new in LLAVA_KEY_TABLE:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def llava_key(key: str) -> str | None:
    """Checkpoint key -> ``LlavaModel`` key through :data:`LLAVA_KEY_TABLE` (None = not loaded:
    ``lm_head`` and the rebuilt buffers).

    A key no row matches is kept as it is, so a wrong file is reported as unexpected keys.
    """
    if key.endswith(_REBUILT_BUFFERS):
        return None
    name = canonical_llava_key(key)
    if name is None:
        return key
    return None if name.startswith("lm_head.") else name


def interleave_for(condition_type: str) -> int:
    """Image-token subsampling of the reference: 4 for token_replace, 2 for latent_concat."""
    if condition_type not in _INTERLEAVE:
        raise ValueError(f"unknown i2v condition type {condition_type!r}; "
                         f"valid: {', '.join(_INTERLEAVE)}")
    return _INTERLEAVE[condition_type]


@dataclass(frozen=True)
class LlavaEncodeSettings(LLMEncodeSettings):
    """How the I2V text states are taken (the reference's CLI defaults): the LLM's settings,
    where ``text_len`` is the prompt tokens in the window (the output keeps ``text_len - 4``),
    and the image features kept.

    Attributes:
        image_embed_interleave: keep every n-th image feature (4 token_replace, 2 latent_concat).
    """

    image_embed_interleave: int = 4


def llava_text_config(config: dict, source: str, hint: str = LLAVA_HINT) -> dict:
    """The Llama ``text_config`` of a LLaVA config.json dict; else a CheckpointError naming
    ``source`` and ``hint``."""
    if config.get("model_type") != "llava" or not isinstance(config.get("text_config"), dict):
        raise CheckpointError(
            f"{source} is not a LLaVA config (model_type {config.get('model_type')!r}, "
            f"expected 'llava' with a text_config; {hint})"
        )
    text = config["text_config"]
    if text.get("model_type", "llama") != "llama":
        raise CheckpointError(
            f"{source}: the language model is {text.get('model_type')!r}, not llama")
    return text


def llava_config(config: dict, source: str = "config") -> LlavaConfig:
    """A LlavaConfig (Llama text model, CLIP vision tower) from a config.json dict."""
    llava_text_config(config, source)
    vision = config.get("vision_config") or {}
    if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise CheckpointError(
            f"{source}: the vision tower is {vision.get('model_type')!r}, not CLIP")
    return LlavaConfig.from_dict(copy.deepcopy(config))  # its __init__ edits the sub-dicts


_NESTED_VISION = "vision_tower.vision_model."


def key_mapper(model: LlavaModel) -> Callable[[str], str | None]:
    """Checkpoint key -> this transformers' ``LlavaModel`` key (None = not loaded):
    :func:`llava_key`, then ``vision_tower.vision_model.*`` -> ``vision_tower.*`` where the
    installed transformers' CLIPVisionModel has no ``vision_model`` wrapper (5.14 and later)."""
    flat = not any(k.startswith(_NESTED_VISION) for k in model.state_dict())

    def mapped(key: str) -> str | None:
        name = llava_key(key)
        if flat and name is not None and name.startswith(_NESTED_VISION):
            return "vision_tower." + name[len(_NESTED_VISION):]
        return name

    return mapped


def vision_body(model: LlavaModel) -> torch.nn.Module:
    """The vision tower's embeddings/encoder holder under every transformers we allow."""
    return getattr(model.vision_tower, "vision_model", model.vision_tower)


def unused_by_output(config: LlavaConfig, settings: LlavaEncodeSettings = LlavaEncodeSettings()
                     ) -> tuple[str, ...]:
    """Key prefixes (``LlavaModel`` names) whose weights cannot change the encoder's output.

    The vision tower is read at ``hidden_states[vision_feature_layer]`` (-2: its last layer and
    ``post_layernorm`` are unused) and the Llama at ``hidden_states[-(skip + 1)]`` (its last
    ``skip`` layers and, without ``apply_final_norm``, the final norm are unused).
    """
    vision_layers = config.vision_config.num_hidden_layers
    # hidden_states[k] is the output of k layers: [-2] leaves the last layer unused.
    first_unused = vision_layers + 1 + config.vision_feature_layer
    unused = [f"vision_tower.vision_model.encoder.layers.{i}."
              for i in range(first_unused, vision_layers)]
    unused.append("vision_tower.vision_model.post_layernorm.")
    layers = config.text_config.num_hidden_layers
    skip = settings.hidden_state_skip_layer
    unused += [f"language_model.layers.{i}." for i in range(layers - skip, layers)]
    if skip > 0 and not settings.apply_final_norm:
        unused.append("language_model.norm.")
    return tuple(unused)


# ---------------------------------------------------------------------------- loading


def _rebuild_buffers(model: LlavaModel, device: torch.device | str | None) -> None:
    # Non-persistent buffers are computed at construction, so a meta build leaves them empty.
    rebuild_rotary(model.language_model, device)
    rebuild_position_ids(vision_body(model).embeddings, device)


def load_image_processor(folder: str | Path) -> CLIPImageProcessor:
    """The CLIPImageProcessor of ``folder/preprocessor_config.json`` (the official folder, or the
    diffusers layout's ``image_processor/``). transformers' PIL implementation, on purpose: its
    resize and crop are the reference's, byte for byte."""
    folder = Path(folder)
    if not (folder / "preprocessor_config.json").is_file():
        raise CheckpointError(f"no preprocessor_config.json in {folder} ({LLAVA_HINT})")
    return CLIPImageProcessor.from_pretrained(str(folder))


def clip_image_processor(size: int) -> CLIPImageProcessor:
    """The official processor settings for an ``size``-px tower (336 for ViT-L/14-336), built
    offline: shortest edge -> size (bicubic), centre crop size x size, CLIP mean/std."""
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def load_llava_encoder(
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
    settings: LlavaEncodeSettings = LlavaEncodeSettings(),
    tokenizer: PreTrainedTokenizerBase | None = None,
    tokenizer_folder: str | Path | None = None,
    processor_folder: str | Path | None = None,
) -> LlavaTextImageEncoder:
    """Load ``ckpts/text_encoder_i2v`` (or the diffusers layout's ``text_encoder/``).

    Args:
        folder: config.json + safetensors (one file or shards with an index).
        dtype: compute precision (float16 like the reference; float32 for conformance).
        device: where the weights go (default CPU).
        tokenizer: use this tokenizer; else the files of ``tokenizer_folder`` (default ``folder``;
            the diffusers layout keeps them in ``tokenizer/``).
        processor_folder: where ``preprocessor_config.json`` is (default ``folder``; the diffusers
            layout's ``image_processor/``).
    """
    folder = Path(folder)
    raw = read_config(folder, LLAVA_HINT)
    config = llava_config(raw, source=str(folder / "config.json"))
    files = weight_files(folder, LLAVA_HINT)
    processor = load_image_processor(processor_folder or folder)
    if tokenizer is None:
        tokenizer = load_llm_tokenizer(tokenizer_folder or folder)
    with torch.device("meta"):
        model = LlavaModel(config)
    stream_weights(model, files, key_mapper(model), dtype=dtype, device=device,
                   source=f"LLaVA weights in {folder}")
    _rebuild_buffers(model, device)
    return LlavaTextImageEncoder(materialized(model, str(folder)), tokenizer, processor, settings,
                                 pad_token_id=raw.get("pad_token_id"))


def tiny_llava_config(*, hidden_size: int = 16, layers: int = 4, vision_hidden: int = 16,
                      vision_layers: int = 3, image_size: int = 48, patch_size: int = 2
                      ) -> LlavaConfig:
    """A tiny LLaVA with the real structure and the official token ids: by default a 48-px CLIP
    tower with patch 2 (24 x 24 = 576 patches, as the reference's constants need; 336 / 14 is
    the official geometry), a Llama with the llava vocabulary (128320)."""
    return LlavaConfig(
        text_config={
            "model_type": "llama", "vocab_size": 128320, "hidden_size": hidden_size,
            "intermediate_size": 3 * hidden_size, "num_hidden_layers": layers,
            "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0, "max_position_embeddings": 8192,
            "bos_token_id": 128000, "eos_token_id": 128001,
        },
        vision_config={
            "model_type": "clip_vision_model", "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden, "num_hidden_layers": vision_layers,
            "num_attention_heads": 2, "image_size": image_size, "patch_size": patch_size,
            "projection_dim": vision_hidden, "hidden_act": "quick_gelu",
        },
        image_token_index=128257,
        pad_token_id=128258,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def random_llava_encoder(
    config: LlavaConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    image_processor: CLIPImageProcessor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    settings: LlavaEncodeSettings = LlavaEncodeSettings(),
) -> LlavaTextImageEncoder:
    """A randomly initialised LLaVA encoder (tests, the tiny preset); global RNG untouched.

    ``image_processor`` defaults to the official settings at the tower's ``image_size``.
    """
    model = seeded_random(LlavaModel, config, seed=seed, device=device, dtype=dtype)
    processor = image_processor or clip_image_processor(config.vision_config.image_size)
    return LlavaTextImageEncoder(materialized(model, "random LLaVA"), tokenizer, processor,
                                 settings, pad_token_id=getattr(config, "pad_token_id", None))


# ---------------------------------------------------------------------------- encoding


def black_image(size: tuple[int, int]) -> Image.Image:
    """An all-black RGB image of ``size`` = (width, height): the negative branch's image."""
    return Image.new("RGB", size)


def _patch_count(config: LlavaConfig) -> int:
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches if config.vision_feature_select_strategy == "default" else patches + 1


class LlavaTextImageEncoder:
    """LLaVA (transformers' ``LlavaModel``) + tokenizer + CLIP image processor, with the
    reference's I2V template, merge and selection. Outputs are in the model's dtype and device.
    """

    template: ImagePromptTemplate = I2V_VIDEO_TEMPLATE

    def __init__(self, model: LlavaModel, tokenizer: PreTrainedTokenizerBase,
                 image_processor: CLIPImageProcessor,
                 settings: LlavaEncodeSettings = LlavaEncodeSettings(), *,
                 pad_token_id: int | None = None) -> None:
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.settings = settings
        # 4.39 zeroes the embeddings of config.pad_token_id (-1, i.e. nothing, when unset).
        self.pad_token_id = pad_token_id
        self.max_length = settings.text_len + check_crop_start(tokenizer, self.template)
        self._check_model()

    def _check_model(self) -> None:
        config, template, settings = self.model.config, self.template, self.settings
        if _patch_count(config) != template.image_emb_len:
            raise ValueError(f"the vision tower gives {_patch_count(config)} image features; the "
                             f"reference's template constants need {template.image_emb_len}")
        image_id = self.tokenizer.convert_tokens_to_ids("<image>")
        if image_id != config.image_token_index:
            raise ValueError(f"tokenizer's <image> is {image_id}, the model's image token is "
                             f"{config.image_token_index}")
        if len(self.tokenizer) > config.text_config.vocab_size:
            raise ValueError(f"tokenizer ({len(self.tokenizer)} tokens) does not fit the model's "
                             f"vocab_size {config.text_config.vocab_size}")
        crop = self.image_processor.crop_size
        if (crop["height"], crop["width"]) != (config.vision_config.image_size,) * 2:
            raise ValueError(f"image processor crops to {crop}, the vision tower takes "
                             f"{config.vision_config.image_size} px")
        settings.check_layers(config.text_config.num_hidden_layers)
        if settings.image_embed_interleave < 1 or settings.text_len < 4:
            raise ValueError(f"bad settings {settings}")

    @property
    def device(self) -> torch.device:
        return self.model.language_model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.language_model.embed_tokens.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def output_length(self) -> int:
        """Tokens per prompt of the output: image features kept + ``text_len - 4``."""
        image = -(-self.template.image_emb_len // self.settings.image_embed_interleave)
        return image + self.settings.text_len - 4

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask [B, text_len + 103] int64 of the templated prompts."""
        return tokenize_padded(self.tokenizer, [self.template.format(p) for p in prompts], self.max_length)

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[B, 3, S, S] float32: the CLIP processor's resize, crop and normalisation."""
        rgb = [image.convert("RGB") for image in images]
        return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features [B, 576, D] (vision ``hidden_states[-2]`` without CLS)."""
        config = self.model.config
        vision_dtype = vision_body(self.model).embeddings.patch_embedding.weight.dtype
        out = self.model.get_image_features(
            pixel_values=pixel_values.to(self.device, vision_dtype),
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
        return torch.stack(list(out.pooler_output))  # a list of [576, D] per image

    def merge(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """4.39's merge: each row's one ``<image>`` token replaced by its image's features.

        Args:
            input_ids, attention_mask: [B, N] int64.
            features: [B, F, D].
        Returns:
            inputs_embeds [B, N - 1 + F, D] (pad embeddings zeroed), mask [B, N - 1 + F] and
            position_ids (cumsum(mask) - 1, padded positions 1), both int64.
        """
        image_id = self.model.config.image_token_index
        is_image = input_ids == image_id  # [B, N]
        counts = is_image.sum(dim=1)
        if not bool((counts == 1).all()):
            raise ValueError(f"each prompt must hold exactly one <image> token (the template's), "
                             f"got {counts.tolist()}: remove '<image>' from the prompt")
        embeds = self.model.language_model.embed_tokens(input_ids)  # [B, N, D]
        if self.pad_token_id is not None:
            embeds = embeds.masked_fill((input_ids == self.pad_token_id)[..., None], 0.0)
        rows, masks = [], []
        for b, pos in enumerate(is_image.int().argmax(dim=1).tolist()):
            image = features[b].to(embeds.dtype)
            rows.append(torch.cat([embeds[b, :pos], image, embeds[b, pos + 1:]]))
            ones = attention_mask.new_ones(image.shape[0])
            masks.append(torch.cat([attention_mask[b, :pos], ones, attention_mask[b, pos + 1:]]))
        merged, mask = torch.stack(rows), torch.stack(masks)
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        return merged, mask, position_ids

    @torch.inference_mode()
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen Llama layer over the merged sequence: [B, N - 1 + 576, D] and its mask."""
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        features = self.image_features(pixel_values)  # [B, 576, D]
        embeds, mask, position_ids = self.merge(input_ids, attention_mask, features)
        out = self.model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                        position_ids=position_ids, output_hidden_states=True,
                                        use_cache=False)
        states = self.settings.chosen_layer(out.hidden_states, self.model.language_model.norm)
        return states, mask

    def select(self, states: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's selection: image part (interleaved), then the prompt part.

        Args:
            states: [B, N - 1 + 576, D] merged-sequence hidden states.
            input_ids, attention_mask: [B, N] of the tokenizer.
        Returns:
            states [B, ceil(576 / interleave) + text_len - 4, D], mask [B, same] int64.
        """
        t = self.template
        shift = t.image_emb_len - 1  # input position i > image_emb_start is merged position i + 575
        image = states[:, t.image_emb_start:t.image_emb_end:self.settings.image_embed_interleave]
        texts, masks = [], []
        for b in range(states.shape[0]):
            j = self._assistant_end(input_ids[b])
            texts.append(torch.cat([states[b, t.crop_start + shift:j - 4 + shift],
                                    states[b, j + shift:]]))
            masks.append(torch.cat([attention_mask[b, t.crop_start:j - 4], attention_mask[b, j:]]))
        text, text_mask = torch.stack(texts), torch.stack(masks).to(states.device)
        image_mask = text_mask.new_ones(image.shape[:2])
        return torch.cat([image, text], dim=1), torch.cat([image_mask, text_mask], dim=1)

    def _assistant_end(self, ids: torch.Tensor) -> int:
        """j: the input position of the last "\\n\\n" (the one closing the assistant header).

        The template holds four; with only three left the prompt was truncated, and the
        reference uses the sequence length. A prompt's own "\\n\\n" comes before the header's,
        so the last one is still the header's (rows are handled one by one; the reference's
        batched version needs equal counts).
        """
        where = (ids == self.template.double_return_token_id).nonzero().flatten().tolist()
        return ids.shape[0] if len(where) == 3 else where[-1]

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`hidden_states` then :meth:`select`: the DiT's text states and mask."""
        states, _ = self.hidden_states(input_ids, attention_mask, pixel_values)
        return self.select(states, input_ids.to(states.device), attention_mask)

    def encode(self, prompts: list[str], images: Sequence[Image.Image], *, num_frames: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts, each with its image, for a video of ``num_frames`` (> 1) frames.

        The prompts are used as given (:class:`I2VTextEncoders` strips them, as the reference).

        Returns:
            states [B, 144 + 252, D] (token_replace; 288 + 252 for latent_concat) and the mask
            [B, same] int64: image tokens first (all valid), then prompt tokens then padding.
        """
        i2v_template_for_frames(num_frames)  # a 1-frame request raises, as in the reference
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
        input_ids, mask = self.tokenize(list(prompts))
        return self.encode_tokens(input_ids, mask, self.pixel_values(images))


class I2VTextEncoders:
    """The I2V text conditioning: LLaVA (prompt + image) and CLIP-L (prompt only)."""

    def __init__(self, llava: LlavaTextImageEncoder, clip: CLIPTextEncoder) -> None:
        self.llava, self.clip = llava, clip

    def encode(self, prompts: list[str], images: Image.Image | Sequence[Image.Image], *,
               num_frames: int) -> TextConditioning:
        """Encode ``prompts`` (each stripped first, as ``inference.py`` does) with ``images``
        (one per prompt, or one for all).

        Returns TextConditioning(states [B, L, D], mask [B, L], pooled [B, D2]) on the LLaVA's
        device, where L = 144 + 252 (token_replace) or 288 + 252 (latent_concat).
        """
        def llava(stripped: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            each = [images] * len(stripped) if isinstance(images, Image.Image) else list(images)
            return self.llava.encode(stripped, each, num_frames=num_frames)

        return text_conditioning(prompts, llava, self.clip)

    def encode_negative(self, prompts: list[str], images: Image.Image | Sequence[Image.Image],
                        *, num_frames: int) -> TextConditioning:
        """The classifier-free-guidance branch: ``prompts`` with black images of the images'
        sizes, as the reference does."""
        if isinstance(images, Image.Image):
            images = [images] * len(prompts)
        return self.encode(prompts, [black_image(image.size) for image in images],
                           num_frames=num_frames)


def load_i2v_text_encoders(
    text_encoder_i2v: str | Path,
    text_encoder_2: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    dtype_2: torch.dtype | None = None,
    device: torch.device | str | None = None,
    settings: LlavaEncodeSettings = LlavaEncodeSettings(),
    text_len_2: int = 77,
    tokenizer_folder: str | Path | None = None,
    processor_folder: str | Path | None = None,
    tokenizer_2_folder: str | Path | None = None,
) -> I2VTextEncoders:
    """Load ``ckpts/text_encoder_i2v`` and ``ckpts/text_encoder_2`` (the diffusers layout: pass
    ``text_encoder/`` with ``tokenizer_folder=tokenizer/``, ``processor_folder=image_processor/``
    and ``text_encoder_2/`` with ``tokenizer_2_folder=tokenizer_2/``)."""
    llava = load_llava_encoder(text_encoder_i2v, dtype=dtype, device=device, settings=settings,
                               tokenizer_folder=tokenizer_folder, processor_folder=processor_folder)
    clip_tokenizer = None
    if tokenizer_2_folder is not None:
        from hyvideo.text.tokenizer import load_clip_tokenizer

        clip_tokenizer = load_clip_tokenizer(tokenizer_2_folder, text_len_2)
    clip = load_clip_encoder(text_encoder_2, dtype=dtype_2 or dtype, device=device,
                             max_length=text_len_2, tokenizer=clip_tokenizer)
    return I2VTextEncoders(llava, clip)
