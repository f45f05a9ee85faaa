"""The image-to-video flags (the official ``sample_image2video.py`` names) and what they select.

``--i2v-mode`` turns image-to-video on (``sample_image2video.py`` has it on by default). The
official scripts name the model ``--model HYVideo-T/2`` with ``--i2v-mode``; here a text-to-video
name given with ``--i2v-mode`` selects its image-to-video sibling (by ``--i2v-condition-type``),
and ``tiny-random`` selects ``tiny-random-i2v``. The official LoRA flags ``--use-lora --lora-path F
--lora-scale S`` add one LoRA like ``--lora F:S`` (the official I2V files are recognised by their
key prefix and merged by the official rule).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hyvideo.apps import cli
from hyvideo.dit.config import I2V_CONDITION_TYPES

CONDITION_TYPES = tuple(kind for kind in I2V_CONDITION_TYPES if kind)  # token_replace, latent_concat
# --i2v-resolution: the names of hyvideo.pipeline.image_input.I2V_RESOLUTIONS (which imports torch)
RESOLUTION_NAMES = ("144p", "360p", "540p", "720p")
I2V_SIBLINGS = {  # (text-to-video name, condition type) -> image-to-video variant
    ("HYVideo-T/2", "token_replace"): "HYVideo-I2V",
    ("HYVideo-T/2-cfgdistill", "token_replace"): "HYVideo-I2V",
    ("HYVideo-T/2", "latent_concat"): "HYVideo-I2V-latent_concat",
    ("HYVideo-T/2-cfgdistill", "latent_concat"): "HYVideo-I2V-latent_concat",
    ("tiny-random", "token_replace"): "tiny-random-i2v",
}
I2V_DEFAULT_MODEL = "HYVideo-I2V"


def add_i2v_args(p: argparse.ArgumentParser, *, default_on: bool = False) -> None:
    """The official image-to-video flags."""
    g = p.add_argument_group("image to video (the official sample_image2video.py flags)")
    g.add_argument("--i2v-mode", action=argparse.BooleanOptionalAction, default=default_on,
                   help=f"animate an image (default {'on' if default_on else 'off'})")
    g.add_argument("--i2v-image-path", type=Path, metavar="IMAGE",
                   help="the image to animate (PNG, JPEG, WebP...); its aspect ratio picks the video size")
    g.add_argument("--i2v-resolution", choices=RESOLUTION_NAMES,
                   help="bucket set the image's size is chosen from (default: the model's, 720p for the "
                   "released one; 144p is a preview size of ours)")
    g.add_argument("--i2v-condition-type", choices=CONDITION_TYPES,
                   help="token_replace (the current release, default) or latent_concat (the first one)")
    g.add_argument("--i2v-stability", action="store_true",
                   help="mix the image latent into the starting noise (the official README pairs it "
                   "with --flow-shift 7; without it the default flow shift 17 applies)")
    g.add_argument("--i2v-dit-weight", type=Path,
                   help="the image-to-video DiT (default <model-base>/hunyuan-video-i2v-720p/transformers/"
                   "mp_rank_00_model_states.pt)")
    g.add_argument("--use-lora", action="store_true", help="official: apply --lora-path at --lora-scale")
    g.add_argument("--lora-path", type=Path, help="official: the LoRA file for --use-lora")
    g.add_argument("--lora-scale", type=cli.finite, default=1.0, help="official: the LoRA's scale (default 1.0)")


def i2v_variant(model: str, *, i2v_mode: bool, kind: str | None):
    """The model ``--model`` names, or with ``i2v_mode`` its image-to-video sibling for the
    condition type ``kind`` (token_replace when None), and its variant. An image-to-video variant
    must have ``kind``'s condition type; a text-to-video one is the caller's to refuse (each front
    door words it). -> (model name, variant)"""
    from hyvideo.pipeline.variants import load_variant

    if i2v_mode:
        model = I2V_SIBLINGS.get((model, kind or "token_replace"), model)
    variant = load_variant(model)
    if variant.is_i2v and kind is not None and kind != variant.i2v_condition_type:
        raise ValueError(f"--i2v-condition-type {kind}: model {model} is {variant.i2v_condition_type}")
    return model, variant


def i2v_models() -> str:
    """The image-to-video variant names, for an error message."""
    return ", ".join(sorted(set(I2V_SIBLINGS.values())))


def select_model(args: argparse.Namespace) -> None:
    """With ``--i2v-mode``: the image-to-video variant for ``--model`` (in place); without it,
    image-to-video flags are refused rather than ignored."""
    from hyvideo.pipeline.variants import load_variant

    if not args.i2v_mode:
        given = [f for f in ("i2v_image_path", "i2v_resolution", "i2v_condition_type", "i2v_dit_weight")
                 if getattr(args, f) is not None] + (["i2v_stability"] if args.i2v_stability else [])
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --i2v-mode (image to video)")
        if load_variant(args.model).is_i2v:
            raise ValueError(f"--model {args.model} animates an image: add --i2v-mode and --i2v-image-path "
                             "(or run sample_image2video.py)")
        return
    args.model, variant = i2v_variant(args.model, i2v_mode=True, kind=args.i2v_condition_type)
    if not variant.is_i2v:
        raise ValueError(f"--model {args.model} is a text-to-video model; with --i2v-mode use one of "
                         f"{i2v_models()} (or HYVideo-T/2, as the official README)")
    if args.i2v_image_path is None and not args.prompt_file:
        raise ValueError("--i2v-mode needs --i2v-image-path IMAGE (or an image column in --prompt-file)")
    if args.i2v_dit_weight is not None:
        if args.dit_weight is not None:
            raise ValueError("give either --dit-weight or --i2v-dit-weight, not both")
        args.dit_weight = args.i2v_dit_weight


def official_lora(args: argparse.Namespace) -> list[str]:
    """``--use-lora --lora-path F --lora-scale S`` as a ``--lora F:S`` entry."""
    if not args.use_lora:
        if args.lora_path is not None:
            raise ValueError("--lora-path needs --use-lora (or use --lora PATH[:SCALE])")
        return []
    if args.lora_path is None:
        raise ValueError("--use-lora needs --lora-path FILE")
    return [f"{args.lora_path}:{args.lora_scale}"]


class ImageCache:
    """Each row's image (its own, else ``--i2v-image-path``) read, checked and bucketed once."""

    def __init__(self, args: argparse.Namespace, variant):
        self.default, self.stability = args.i2v_image_path, args.i2v_stability
        self.resolution = args.i2v_resolution or variant.i2v.resolution
        self.images: dict[Path, object] = {}

    def image(self, path: Path | None):
        from hyvideo.pipeline.image_input import load_i2v_image
        from hyvideo.pipeline.types import UsageError

        if path is None:
            raise UsageError("this row has no image and --i2v-image-path is not given", "i2v_image_path")
        key = Path(path).resolve()
        if key not in self.images:
            self.images[key] = load_i2v_image(path, self.resolution)
        return self.images[key]

    def request(self, request, row):
        """The image-to-video request of a checked text request: the image's bucket is the size."""
        from hyvideo.pipeline.types import I2VRequest

        image = self.image(row.image or self.default)
        fields = {**request.settings(), "height": image.height, "width": image.width}
        return I2VRequest(**fields, image=image, i2v_stability=self.stability)

