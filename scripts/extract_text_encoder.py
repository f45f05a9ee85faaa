#!/usr/bin/env python
"""Make ckpts/text_encoder from a downloaded llava-llama-3-8b-v1_1-transformers folder.

    python scripts/extract_text_encoder.py --input-dir ckpts/llava-llama-3-8b-v1_1-transformers \
        --output-dir ckpts/text_encoder

Keeps only the language model (LlamaForCausalLM layout, float16, sharded like the input) and the
tokenizer files. Streams shard by shard on the CPU. Exit code 2 on a bad input or output folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from hyvideo.checkpoints.reading import CheckpointError  # noqa: E402
from hyvideo.text.extract import ExtractError, extract_text_encoder  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input-dir",
        type=Path,
        required=True,
        help="llava-llama-3-8b-v1_1-transformers folder (config.json, shards, tokenizer)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="where to write the text encoder (must not exist or be empty)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = extract_text_encoder(args.input_dir, args.output_dir)
    except (ExtractError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
