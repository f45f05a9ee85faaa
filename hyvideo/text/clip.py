"""Second text encoder: the CLIP-L text tower.

``ckpts/text_encoder_2`` is the openai/clip-vit-large-patch14 folder.

The folder is a full CLIPModel; only ``text_model.*`` is used (``transformers.CLIPTextModel``).
The vision tower, both projections, ``logit_scale`` and old ``position_ids`` buffers are ignored.
The output is the pooled embedding: the row of ``final_layer_norm(last hidden state)`` at the
*first* ``<|endoftext|>`` token, with no ``text_projection`` (the pipeline's ``text_states_2``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerBase

from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.text.checkpoint import (
    materialized,
    read_config,
    seeded_random,
    stream_weights,
    weight_files,
)
from hyvideo.text.tokenizer import load_clip_tokenizer, tokenize_padded

__all__ = [
    "CLIPTextEncoder",
    "CLIP_HINT",
    "clip_key",
    "clip_text_config",
    "load_clip_encoder",
    "random_clip_encoder",
]

CLIP_HINT = "ckpts/text_encoder_2 is the openai/clip-vit-large-patch14 folder"


def clip_key(key: str) -> str | None:
    """Checkpoint key -> CLIPTextModel key (None = ignored).

    Keeps ``text_model.*`` but the ``position_ids`` buffer older transformers saved; drops the
    vision tower, the projections and ``logit_scale``. Anything else is kept so that a wrong
    file is reported as unexpected keys.
    """
    if key.startswith(("vision_model.", "visual_projection.", "text_projection.")):
        return None
    if key in ("logit_scale", "text_model.embeddings.position_ids"):
        return None
    return key


def clip_text_config(config: dict, source: str = "config") -> CLIPTextConfig:
    """The text tower's config from a CLIPModel (``text_config``) or CLIPTextModel config.json."""
    text = config.get("text_config", config) if config.get("model_type") == "clip" else config
    if text.get("model_type", "clip_text_model") != "clip_text_model":
        raise CheckpointError(
            f"{source} is not a CLIP config (model_type {config.get('model_type')!r}; {CLIP_HINT})"
        )
    return CLIPTextConfig.from_dict(text)


def text_tower(model: CLIPTextModel) -> torch.nn.Module:
    """The module holding ``embeddings``/``encoder``/``final_layer_norm``: ``model.text_model``
    in transformers <= 5.13, the model itself in later releases (their keys lost the prefix)."""
    return getattr(model, "text_model", model)


def key_mapper(model: CLIPTextModel):
    """Checkpoint key -> this transformers' CLIPTextModel key (None = ignored): official files
    carry ``text_model.*``; newer transformers name the same tensors without the prefix."""
    prefixed = any(k.startswith("text_model.") for k in model.state_dict())

    def mapped(key: str) -> str | None:
        key = clip_key(key)
        if key is None or prefixed:
            return key
        return key.removeprefix("text_model.")

    return mapped


def rebuild_position_ids(embeddings: torch.nn.Module, device: torch.device | str | None) -> None:
    # Non-persistent buffer of CLIP's text or vision embeddings, created empty by the meta
    # build: positions 0..max_position-1.
    count = embeddings.position_embedding.num_embeddings
    embeddings.position_ids = torch.arange(count, device=device).expand(1, -1)


class CLIPTextEncoder:
    """CLIP text tower + tokenizer; ``encode`` gives the pooled embedding and the token mask."""

    def __init__(
        self, model: CLIPTextModel, tokenizer: PreTrainedTokenizerBase, max_length: int = 77
    ):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        positions = model.config.max_position_embeddings
        if max_length > positions:
            raise ValueError(f"max_length {max_length} exceeds the model's {positions} positions")
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the CLIP tokenizer needs eos and pad tokens (<|endoftext|>)")

    @property
    def device(self) -> torch.device:
        return text_tower(self.model).embeddings.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return text_tower(self.model).embeddings.token_embedding.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask [B, max_length] int64 (BOS, <=75 text tokens, EOS, pad 49407)."""
        return tokenize_padded(self.tokenizer, list(prompts), self.max_length)

    @torch.inference_mode()
    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled embedding [B, D] of ids [B, N] with mask [B, N]."""
        input_ids = input_ids.to(self.device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask.to(self.device))
        states = out.last_hidden_state  # [B, N, D], after final_layer_norm
        # The first <|endoftext|>: padding uses the same id, so it must be the first. The
        # reference (legacy eos_token_id 2 in the config) takes argmax(input_ids): same position.
        is_eos = input_ids == self.tokenizer.eos_token_id  # [B, N]
        if not bool(is_eos.any(dim=1).all()):
            raise ValueError("a tokenized prompt has no <|endoftext|> token")
        first = is_eos.int().argmax(dim=1)  # [B]
        return states[torch.arange(states.shape[0], device=states.device), first]  # [B, D]

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled [B, D] (model dtype) and the tokenizer mask [B, max_length] int64."""
        input_ids, mask = self.tokenize(prompts)
        return self.encode_tokens(input_ids, mask), mask.to(self.device)


def load_clip_encoder(
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
    max_length: int = 77,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> CLIPTextEncoder:
    """Load the CLIP text tower and tokenizer from ``ckpts/text_encoder_2``.

    A float16 folder is upcast when ``dtype`` is float32. ``tokenizer`` replaces the folder's
    tokenizer files (the diffusers layout keeps them in ``tokenizer_2/``).
    """
    folder = Path(folder)
    config = clip_text_config(read_config(folder, CLIP_HINT), source=str(folder / "config.json"))
    files = weight_files(folder, CLIP_HINT)
    if tokenizer is None:
        tokenizer = load_clip_tokenizer(folder, max_length)
    with torch.device("meta"):
        model = CLIPTextModel(config)
    stream_weights(model, files, key_mapper(model), dtype=dtype, device=device,
                   source=f"CLIP weights in {folder}", hint=CLIP_HINT)
    rebuild_position_ids(text_tower(model).embeddings, device)
    return CLIPTextEncoder(materialized(model, str(folder)), tokenizer, max_length)


def random_clip_encoder(
    config: CLIPTextConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    max_length: int = 77,
) -> CLIPTextEncoder:
    """A randomly initialised CLIP text tower (tests, tiny demos); global RNG untouched."""
    model = seeded_random(CLIPTextModel, config, seed=seed, device=device, dtype=dtype)
    return CLIPTextEncoder(materialized(model, "random CLIP"), tokenizer, max_length)
