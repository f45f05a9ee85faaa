"""The CLIP BPE tokenizer files rebuilt offline from the vocabulary open_clip ships.

openai/clip-vit-large-patch14's ``vocab.json``/``merges.txt`` are a deterministic function of
the original CLIP merge list ``bpe_simple_vocab_16e6.txt.gz`` (carried by the ``open_clip_torch``
wheel): 256 byte symbols, the same 256 with ``</w>``, one entry per merge (48,894), then
``<|startoftext|>`` 49406 and ``<|endoftext|>`` 49407. Only the data file is used; open_clip
itself is never imported (install it with ``pip install --no-deps open_clip_torch``).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

from hyvideo.checkpoints.reading import CheckpointError

NUM_MERGES = 49152 - 256 - 2  # the merge count CLIP uses from the file


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
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the CLIP vocabulary file is not installed: "
                              "pip install --no-deps open_clip_torch")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the open_clip_torch install")
    return path


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
