"""First text encoder: the language model of llava-llama-3-8b (``ckpts/text_encoder``).

What the reference computes (``hyvideo/text_encoder`` with the CLI defaults):

1. ``template.format(prompt)``: video template, or the image template for a 1-frame video.
2. Tokenize with ``padding="max_length"``, ``truncation=True`` and
   ``max_length = text_len + crop_start`` of the **video** template (256 + 95 = 351) for *both*
   templates: ``inference.py`` takes ``crop_start`` from the video template (reproduced quirk).
3. ``LlamaModel(input_ids, attention_mask, output_hidden_states=True)``; take
   ``hidden_states[-(skip + 1)]`` (skip 2: output of decoder layer ``L - 2``, no final norm unless
   ``apply_final_norm``).
4. Drop the first ``crop_start`` positions of states and mask (BOS + system block + user header).

The model is ``transformers.LlamaModel``, built on the meta device from ``config.json`` and filled
strictly from the safetensors (``model.`` prefix stripped, ``lm_head.*`` ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerBase

from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.text.checkpoint import (
    materialized,
    read_config,
    seeded_random,
    stream_weights,
    weight_files,
)
from hyvideo.text.prompts import IMAGE_TEMPLATE, VIDEO_TEMPLATE, PromptTemplate, template_for_frames
from hyvideo.text.tokenizer import check_crop_start, load_llm_tokenizer, tokenize_padded

__all__ = [
    "LLMEncodeSettings",
    "LLMTextEncoder",
    "LLM_HINT",
    "llm_key",
    "llama_config",
    "load_llm_encoder",
    "random_llm_encoder",
]

LLM_HINT = (
    "ckpts/text_encoder is extracted from llava-llama-3-8b-v1_1-transformers "
    "with scripts/extract_text_encoder.py"
)


@dataclass(frozen=True)
class LLMEncodeSettings:
    """How hidden states are taken from the LLM (the reference's CLI defaults).

    Attributes:
        text_len: number of prompt tokens kept (``--text-len``).
        hidden_state_skip_layer: layers skipped from the end (``--hidden-state-skip-layer``).
        apply_final_norm: apply the model's final RMSNorm to a skipped layer's output.
    """

    text_len: int = 256
    hidden_state_skip_layer: int = 2
    apply_final_norm: bool = False

    def check_layers(self, layers: int) -> None:
        """``ValueError`` unless ``hidden_state_skip_layer`` fits a model of ``layers`` layers."""
        if not 0 <= self.hidden_state_skip_layer <= layers:
            raise ValueError(
                f"hidden_state_skip_layer={self.hidden_state_skip_layer} outside 0..{layers}"
            )

    def chosen_layer(self, hidden_states: Sequence[torch.Tensor], norm: nn.Module) -> torch.Tensor:
        """``hidden_states[-(skip + 1)]`` of a model's L + 1 hidden states [B, N, D], through the
        model's final ``norm`` when ``apply_final_norm`` and skip > 0: as in the reference, the
        last entry already carries the final norm, so only an earlier layer's output gets it."""
        skip = self.hidden_state_skip_layer
        states = hidden_states[-(skip + 1)]
        if skip > 0 and self.apply_final_norm:
            states = norm(states)
        return states


def llm_key(key: str) -> str | None:
    """Checkpoint key -> LlamaModel key: strip ``model.``, ignore ``lm_head.*`` (None = skip).

    Covers the LlamaForCausalLM layout (``model.*`` + optional ``lm_head.weight``) and the bare
    LlamaModel layout that transformers >= 4.52 writes (no prefix).
    """
    if key.startswith("lm_head."):
        return None
    return key.removeprefix("model.")


def llama_config(config: dict, source: str = "config") -> LlamaConfig:
    """A LlamaConfig from a config.json dict; a LLaVA or non-Llama config is a CheckpointError."""
    if "text_config" in config:
        raise CheckpointError(
            f"{source} is a LLaVA config (it has text_config), not the extracted language model; "
            f"{LLM_HINT}"
        )
    if config.get("model_type") != "llama":
        raise CheckpointError(
            f"{source} has model_type {config.get('model_type')!r}, expected 'llama' ({LLM_HINT})"
        )
    return LlamaConfig.from_dict(config)


def _build_on_meta(config: LlamaConfig) -> LlamaModel:
    with torch.device("meta"):
        return LlamaModel(config)


def rebuild_rotary(model: LlamaModel, device: torch.device | str | None) -> None:
    # inv_freq is a non-persistent buffer computed at construction, so a meta build leaves it
    # empty: compute it again on the target device. It stays float32 (the reference's
    # `.to(float16)` also rounds it to float16; positions < 351 make that difference tiny).
    model.rotary_emb = type(model.rotary_emb)(config=model.config, device=device)


class LLMTextEncoder:
    """The LLM text encoder: tokenizer + LlamaModel + the reference's template/skip/crop logic.

    Outputs are in the model's dtype, on the model's device.
    """

    def __init__(
        self,
        model: LlamaModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: LLMEncodeSettings = LLMEncodeSettings(),
    ) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        # The reference hard-codes crop_start; a tokenizer that disagrees would crop wrongly.
        self.crop_starts = {
            t.name: check_crop_start(tokenizer, t) for t in (VIDEO_TEMPLATE, IMAGE_TEMPLATE)
        }
        # Reproduced quirk: the video template's crop_start sizes the window for both templates.
        self.max_length = settings.text_len + VIDEO_TEMPLATE.crop_start
        settings.check_layers(model.config.num_hidden_layers)
        if tokenizer.pad_token_id is None or len(tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"tokenizer ({len(tokenizer)} tokens, pad {tokenizer.pad_token_id}) does not fit "
                f"the model's vocab_size {model.config.vocab_size}"
            )

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def tokenize(
        self, prompts: list[str], template: PromptTemplate
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask [B, max_length] int64 of the templated prompts (right padding)."""
        return tokenize_padded(self.tokenizer, [template.format(p) for p in prompts], self.max_length)

    @torch.inference_mode()
    def encode_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, crop_start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states of the chosen layer, cropped.

        Args:
            input_ids: [B, N] int64.
            attention_mask: [B, N] int64, 1 = real token (valid tokens first).
            crop_start: positions to drop at the start.
        Returns:
            states [B, N - crop_start, D] in the model dtype, mask [B, N - crop_start] int64.
        """
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
        )
        # L+1 entries: embeddings, layer 1 .. layer L (last one normed)
        states = self.settings.chosen_layer(out.hidden_states, self.model.norm)  # [B, N, D]
        return states[:, crop_start:], attention_mask[:, crop_start:]

    def encode(self, prompts: list[str], *, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts for a video of ``num_frames`` frames (1 frame = image template).

        Returns:
            states [B, text_len, D] (video) or [B, text_len + 59, D] (image: 351 - 36 = 315
            positions, reproduced quirk), and the mask [B, same] int64.
        """
        template = template_for_frames(num_frames)
        input_ids, mask = self.tokenize(list(prompts), template)
        return self.encode_tokens(input_ids, mask, self.crop_starts[template.name])


def load_llm_encoder(
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
    text_len: int = 256,
    hidden_state_skip_layer: int = 2,
    apply_final_norm: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> LLMTextEncoder:
    """Load ``ckpts/text_encoder`` (config.json, safetensors, tokenizer files).

    Args:
        folder: the text encoder folder.
        dtype: compute precision (float16 like the reference's default; float32 for conformance).
        device: where the weights go (default CPU).
        tokenizer: use this tokenizer instead of the folder's tokenizer files.
    """
    folder = Path(folder)
    config = llama_config(read_config(folder, LLM_HINT), source=str(folder / "config.json"))
    files = weight_files(folder, LLM_HINT)
    if tokenizer is None:
        tokenizer = load_llm_tokenizer(folder)
    model = _build_on_meta(config)
    stream_weights(model, files, llm_key, dtype=dtype, device=device,
                   source=f"LLM weights in {folder}", hint=LLM_HINT)
    rebuild_rotary(model, device)
    settings = LLMEncodeSettings(text_len, hidden_state_skip_layer, apply_final_norm)
    return LLMTextEncoder(materialized(model, str(folder)), tokenizer, settings)


def random_llm_encoder(
    config: LlamaConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    settings: LLMEncodeSettings = LLMEncodeSettings(),
) -> LLMTextEncoder:
    """A randomly initialised encoder (tests, tiny demos); the global RNG is left untouched."""
    model = seeded_random(LlamaModel, config, seed=seed, device=device, dtype=dtype)
    return LLMTextEncoder(materialized(model, "random LLM"), tokenizer, settings)
