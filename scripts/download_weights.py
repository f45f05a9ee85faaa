#!/usr/bin/env python
"""Download the weights into one checkpoint root (--model-base) and check the result.

    python scripts/download_weights.py                      # official layout into ckpts/ (~44 GB)
    python scripts/download_weights.py --dit fp8            # the FP8 DiT instead of the bf16 one
    python scripts/download_weights.py --layout diffusers --root ckpts-diffusers   # ~43 GB
    python scripts/download_weights.py --dry-run            # list the files (and sizes) only

Layouts (each one a list of fetches: repository, folder under the root, allow_patterns):

* ``official``: tencent/HunyuanVideo (DiT and VAE), xtuner/llava-llama-3-8b-v1_1-transformers whose
  language model and tokenizer are then extracted into ``text_encoder/`` (scripts/
  extract_text_encoder.py; the LLaVA folder can be deleted afterwards), and
  openai/clip-vit-large-patch14 (safetensors and tokenizer files only) into ``text_encoder_2/``.
* ``diffusers``: hunyuanvideo-community/HunyuanVideo, every component folder; no extraction.
* ``official-i2v``: the image-to-video release, tencent/HunyuanVideo-I2V (DiT, VAE and the LoRA
  effects folder), the whole LLaVA (xtuner/llava-llama-3-8b-v1_1-transformers, vision tower
  included: no extraction) into ``text_encoder_i2v/``, and CLIP-L into ``text_encoder_2/``.
* ``diffusers-i2v``: hunyuanvideo-community/HunyuanVideo-I2V, every component folder (with
  ``image_processor/``).

A new layout is one more entry in LAYOUTS: its fetches, an optional step after them, and the
folder check that proves the loader finds every component. Needs huggingface_hub (installed with transformers); gated or
private repositories take the token of ``hf auth login`` or HF_TOKEN. Exit code 2 on bad input or
a failed download or check, with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from hyvideo.checkpoints.layouts import (  # noqa: E402
    DIFFUSERS_FOLDERS,
    CheckpointPaths,
    component_paths,
    detect_layout,
    diffusers_paths,
    official_model_folder,
)
from hyvideo.checkpoints.reading import CheckpointError  # noqa: E402

LLAVA_FOLDER = "llava-llama-3-8b-v1_1-transformers"
DIT_FILES = {  # --dit: which official DiT files to fetch
    "bf16": ["mp_rank_00_model_states.pt"],
    "fp8": ["mp_rank_00_model_states_fp8.pt", "mp_rank_00_model_states_fp8_map.pt"],
}
DIT_FILES["both"] = DIT_FILES["bf16"] + DIT_FILES["fp8"]


@dataclass(frozen=True)
class Fetch:
    """One ``snapshot_download``: ``repo`` into ``root / folder``, only ``patterns``."""

    repo: str
    folder: str  # relative to the checkpoint root ("" = the root itself)
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    fetches: Callable[[str], list[Fetch]]  # DiT choice -> what to download
    after: Callable[[Path], None] | None  # a step after the downloads (the text-encoder extraction)
    check: Callable[[Path, str], None]  # raises CheckpointError unless the loader finds everything
    notes: list[str] = field(default_factory=list)


def official_fetches(dit: str) -> list[Fetch]:
    model = official_model_folder("720p")
    return [
        Fetch("tencent/HunyuanVideo", "",
              (*(f"{model}/transformers/{name}" for name in DIT_FILES[dit]), f"{model}/vae/*")),
        Fetch("xtuner/llava-llama-3-8b-v1_1-transformers", LLAVA_FOLDER, ("*.json", "*.safetensors")),
        Fetch("openai/clip-vit-large-patch14", "text_encoder_2",
              ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json")),
    ]


def extract_llm(root: Path) -> None:
    from hyvideo.text.extract import extract_text_encoder

    out = root / CheckpointPaths().text_encoder_folder
    if out.is_dir() and any(out.iterdir()):
        return  # extracted by an earlier run
    extract_text_encoder(root / LLAVA_FOLDER, out)


def _check_files(vae: Path, llm: Path, clip: Path, llm_tokenizer: Path, clip_tokenizer: Path) -> None:
    """The files each loader opens first, found the way the loaders find them (nothing is read)."""
    from hyvideo.text.checkpoint import weight_files
    from hyvideo.vae.loader import find_vae_files

    find_vae_files(vae)
    for folder in (llm, clip):
        weight_files(folder, "see ckpts/README.md")
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"missing {folder / 'config.json'}")
    if not (llm_tokenizer / "tokenizer.json").is_file():
        raise CheckpointError(f"missing {llm_tokenizer / 'tokenizer.json'}")
    if not any((clip_tokenizer / n).is_file() for n in ("vocab.json", "tokenizer.json")):
        raise CheckpointError(f"no CLIP tokenizer (vocab.json or tokenizer.json) in {clip_tokenizer}")


def check_official(root: Path, dit: str, i2v: bool = False) -> None:
    from hyvideo.dit.loader import fp8_map_path

    for use_fp8 in {"bf16": [False], "fp8": [True], "both": [False, True]}[dit]:
        found = component_paths(CheckpointPaths(model_base=root, use_fp8=use_fp8, i2v=i2v))
        if use_fp8:
            fp8_map_path(found.dit)  # the FP8 DiT needs its scale map
    _check_files(found.vae, found.text_encoder, found.text_encoder_2, found.text_encoder,
                 found.text_encoder_2)
    processor = found.text_encoder / "preprocessor_config.json"
    if i2v and not processor.is_file():
        raise CheckpointError(f"missing {processor} (the LLaVA's image processor)")
    if detect_layout(root, i2v=i2v) != "official":
        what = "image-to-video layout" if i2v else "layout"
        raise CheckpointError(f"{root} is not detected as the official {what}")


def diffusers_fetches(dit: str, i2v: bool = False) -> list[Fetch]:
    folders = DIFFUSERS_FOLDERS + (("image_processor",) if i2v else ()) + ("scheduler",)
    repo = "hunyuanvideo-community/HunyuanVideo-I2V" if i2v else "hunyuanvideo-community/HunyuanVideo"
    return [Fetch(repo, "", ("model_index.json", *(f"{f}/*" for f in folders)))]


def check_diffusers(root: Path, dit: str, i2v: bool = False) -> None:
    from hyvideo.checkpoints.layouts import shard_files

    found = diffusers_paths(CheckpointPaths(model_base=root, i2v=i2v))
    shard_files(found.transformer)
    _check_files(found.vae, found.text_encoder, found.text_encoder_2, found.tokenizer,
                 found.tokenizer_2)
    if detect_layout(root, i2v=i2v) != "diffusers":
        raise CheckpointError(f"{root} is not detected as the diffusers layout")


def official_i2v_fetches(dit: str) -> list[Fetch]:
    model = official_model_folder("720p", i2v=True)
    return [
        Fetch("tencent/HunyuanVideo-I2V", "",
              (*(f"{model}/transformers/{name}" for name in DIT_FILES[dit]), f"{model}/vae/*",
               f"{model}/lora/*")),
        Fetch("xtuner/llava-llama-3-8b-v1_1-transformers", CheckpointPaths(i2v=True).text_encoder_folder,
              ("*.json", "*.safetensors")),
        official_fetches(dit)[2],  # CLIP-L
    ]


LAYOUTS: dict[str, Layout] = {
    "official": Layout(official_fetches, extract_llm, check_official,
                       [f"after the check, {LLAVA_FOLDER}/ may be deleted (~16 GB)"]),
    "diffusers": Layout(diffusers_fetches, None, check_diffusers,
                        ["the DiT is always bf16 here (--dit does not apply)"]),
    "official-i2v": Layout(official_i2v_fetches, None, partial(check_official, i2v=True),
                           ["image to video: run sample_image2video.py --model-base ROOT"]),
    "diffusers-i2v": Layout(partial(diffusers_fetches, i2v=True), None,
                            partial(check_diffusers, i2v=True),
                            ["the DiT is always bf16 here (--dit does not apply)"]),
}


def select(paths: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The repository files ``snapshot_download(allow_patterns=patterns)`` fetches."""
    from huggingface_hub.utils import filter_repo_objects

    return sorted(filter_repo_objects(list(paths), allow_patterns=list(patterns)))


def repo_files(repo: str) -> dict[str, int | None]:
    """path -> size in bytes of every file of ``repo`` (one listing call, no download)."""
    from huggingface_hub import HfApi

    return {item.path: getattr(item, "size", None)
            for item in HfApi().list_repo_tree(repo, recursive=True) if hasattr(item, "size")}


def dry_run(root: Path, fetches: list[Fetch], lister=repo_files) -> None:
    total, unlisted = 0, 0
    for fetch in fetches:
        print(f"{fetch.repo} -> {root / fetch.folder}  (allow_patterns {list(fetch.patterns)})")
        try:
            files = lister(fetch.repo)
        except Exception as exc:  # offline, gated, renamed: say so and go on listing the rest
            print(f"  cannot list {fetch.repo}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            unlisted += 1
            continue
        chosen = select(files, fetch.patterns)
        for path in chosen:
            size = files[path]
            total += size or 0
            print(f"  {path}  {'?' if size is None else f'{size / 1e9:.2f} GB'}")
        if not chosen:
            print("  (no file matches: the repository changed?)")
    print(f"total {total / 1e9:.1f} GB" + (f" without the {unlisted} unlisted repositories" if unlisted else ""))


def download(root: Path, fetches: list[Fetch], fetch_fn=None) -> None:
    if fetch_fn is None:
        from huggingface_hub import snapshot_download as fetch_fn
    for fetch in fetches:
        print(f"downloading {fetch.repo} -> {root / fetch.folder}", flush=True)
        fetch_fn(repo_id=fetch.repo, local_dir=str(root / fetch.folder),
                 allow_patterns=list(fetch.patterns))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="official",
                   help="official (tencent/HunyuanVideo + text encoders) or diffusers "
                        "(hunyuanvideo-community/HunyuanVideo); default official")
    p.add_argument("--root", type=Path, default=Path("ckpts"),
                   help="checkpoint root, the --model-base of sample_video.py (default ckpts)")
    p.add_argument("--dit", choices=sorted(DIT_FILES), default="bf16",
                   help="official layout: the bf16 DiT (25.6 GB), the FP8 pair for --use-fp8 "
                        "(13.2 GB) or both (default bf16)")
    p.add_argument("--dry-run", action="store_true", help="list the files and their sizes only")
    p.add_argument("--check-only", action="store_true",
                   help="download nothing: check that the loader finds every component in --root")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, *, fetch_fn=None, lister=repo_files) -> int:
    args = parse_args(argv)
    layout = LAYOUTS[args.layout]
    fetches = layout.fetches(args.dit)
    if args.dry_run:
        dry_run(args.root, fetches, lister)
        return 0
    try:
        if not args.check_only:
            download(args.root, fetches, fetch_fn)
            if layout.after is not None:
                layout.after(args.root)
        layout.check(args.root, args.dit)
    except Exception as exc:  # network, disk, extraction, check: one line, exit 2
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 2
    print(f"{args.root}: every component of the {args.layout} layout is in place")
    for note in layout.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
