"""Extract ``ckpts/text_encoder`` from a ``llava-llama-3-8b-v1_1-transformers`` folder.

The reference's preprocessing loads the whole LlavaForConditionalGeneration and saves its
language model and tokenizer. This does the same by streaming: each input shard is opened with
``safe_open``, its language-model tensors are renamed to the LlamaForCausalLM layout (``model.*``
and ``lm_head.weight``), cast to float16 and written as one output shard, then freed. Peak memory
is about one shard.

Input key layouts handled:
* transformers < 4.52 (and what 5.x writes on save): ``language_model.model.*``,
  ``language_model.lm_head.*``;
* transformers >= 4.52 in memory layout: ``model.language_model.*``, ``lm_head.*``.
Vision tower and projector tensors are skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.text.checkpoint import INDEX_NAME, weight_files
from hyvideo.text.llava import canonical_llava_key, llava_text_config

__all__ = ["ExtractError", "TOKENIZER_FILES", "language_model_key", "extract_text_encoder"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_HINT = "expected a llava-llama-3-8b-v1_1-transformers folder"


class ExtractError(ValueError):
    """The input folder is not a LLaVA checkpoint, or the output folder is not empty."""


def language_model_key(key: str) -> str | None:
    """LLaVA key -> LlamaForCausalLM key, or None for vision tower / projector tensors."""
    name = canonical_llava_key(key)  # the LLaVA layouts' one table
    if name is None or name.startswith("lm_head."):
        return name
    if name.startswith("language_model."):
        return "model." + name.removeprefix("language_model.")
    return None


def _text_config(src: Path) -> LlamaConfig:
    path = src / "config.json"
    if not path.is_file():
        raise ExtractError(f"no config.json in {src} ({_HINT})")
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        raise ExtractError(f"cannot parse {path}: {exc}") from exc
    try:
        text = llava_text_config(meta, str(path), _HINT)
    except CheckpointError as exc:
        raise ExtractError(str(exc)) from None
    config = LlamaConfig.from_dict({**text, "model_type": "llama"})
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = torch.float16  # written as the folder's dtype, like the reference's save
    return config


def _plan(files: list[Path], config: LlamaConfig) -> list[tuple[Path, dict[str, str]]]:
    """Per input shard, {input key: output key}; checks keys and shapes before writing anything."""
    from safetensors import safe_open

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    plan, found = [], {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            names = {k: n for k in handle.keys() if (n := language_model_key(k)) is not None}
            found.update({n: tuple(handle.get_slice(k).get_shape()) for k, n in names.items()})
        if names:
            plan.append((file, names))
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
        found.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
    if missing or unexpected or shapes:
        raise ExtractError(
            f"the language model tensors do not match the text_config: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shapes {shapes[:3]} ({_HINT})"
        )
    return plan


def _write_shards(plan: list[tuple[Path, dict[str, str]]], dst: Path, dtype: torch.dtype) -> dict:
    from safetensors import safe_open
    from safetensors.torch import save_file

    weight_map, total = {}, 0
    for number, (file, names) in enumerate(plan, start=1):
        shard = f"model-{number:05d}-of-{len(plan):05d}.safetensors"
        tensors = {}
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key, name in names.items():
                tensors[name] = handle.get_tensor(key).to(dtype).contiguous()
        save_file(tensors, str(dst / shard), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, shard))
        del tensors  # free this shard before reading the next
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}


def _write_config(config: LlamaConfig, dst: Path) -> None:
    """config.json, readable by the installed transformers and by 4.x (the reference's 4.46)."""
    config.save_pretrained(str(dst))
    path = dst / "config.json"
    data = json.loads(path.read_text())
    rope = data.get("rope_parameters") or {}
    if rope.get("rope_type", "default") == "default" and "rope_theta" in rope:
        # transformers 5 writes rope_parameters; 4.x reads rope_theta (else it uses 10000).
        data.setdefault("rope_theta", rope["rope_theta"])
        data.setdefault("rope_scaling", None)
    data.setdefault("torch_dtype", "float16")
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def extract_text_encoder(
    src: str | Path, dst: str | Path, *, dtype: torch.dtype = torch.float16
) -> Path:
    """Write the language model + tokenizer of the LLaVA folder ``src`` into ``dst``.

    ``dst`` must not exist or be empty (never overwritten). Returns ``dst``.
    Raises ExtractError (or CheckpointError for unreadable weights) with a one-line message.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ExtractError(f"input folder not found: {src} ({_HINT})")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ExtractError(f"output folder {dst} exists and is not empty; refusing to overwrite it")
    config = _text_config(src)
    try:
        files = weight_files(src, _HINT)
    except CheckpointError as exc:
        raise ExtractError(str(exc)) from None
    if not (src / "tokenizer.json").is_file():
        raise ExtractError(f"no tokenizer.json in {src} ({_HINT})")
    plan = _plan(files, config)
    dst.mkdir(parents=True, exist_ok=True)
    index = _write_shards(plan, dst, dtype)
    (dst / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    _write_config(config, dst)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    return dst
