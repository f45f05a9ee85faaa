"""Write the official HunyuanVideo checkpoints (or the tiny random model) as a diffusers folder.

    python scripts/convert_to_diffusers.py --model-base ckpts --output HunyuanVideo-diffusers
    python scripts/convert_to_diffusers.py --model tiny-random --output tiny-diffusers

The result loads with ``diffusers.HunyuanVideoPipeline.from_pretrained(OUTPUT)`` and with our own
loaders (``--model-base OUTPUT``: the diffusers layout is detected):

    transformer/     HunyuanVideoTransformer3DModel: config.json + diffusion_pytorch_model*.safetensors
                     (keys through the one table in hyvideo.checkpoints.keys; sharded with an index
                     above --max-shard-size)
    vae/             AutoencoderKLHunyuanVideo: config.json + diffusion_pytorch_model.safetensors
                     (the official VAE keys are diffusers' keys)
    text_encoder/    LlamaModel (the language model of llava-llama-3-8b),  tokenizer/
    text_encoder_2/  CLIPTextModel (CLIP-L's text tower),                  tokenizer_2/
    scheduler/       FlowMatchEulerDiscreteScheduler with the model's flow shift
    model_index.json

The DiT and the VAE are converted tensor by tensor from the memory-mapped files, one shard in
memory at a time. Precision: ``--dtype keep`` (default) writes every tensor as stored; the text
encoders are loaded and saved with transformers' ``save_pretrained``. The official FP8 DiT has no
diffusers format: convert the bf16 ``mp_rank_00_model_states.pt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout

from hyvideo.checkpoints.keys import dit_to_diffusers  # noqa: E402
from hyvideo.dit.config import dit_config_to_diffusers  # noqa: E402
from hyvideo.checkpoints.reading import CheckpointError, check_state_dict  # noqa: E402
from hyvideo.dit.config import DiTConfig  # noqa: E402
from hyvideo.vae import VAEConfig  # noqa: E402
from hyvideo.vae.config import vae_config_to_diffusers  # noqa: E402

log = logging.getLogger("convert_to_diffusers")

TINY = "tiny-random"
DIFFUSERS_VERSION = "0.32.0"  # the first diffusers release with HunyuanVideo
WEIGHTS = "diffusion_pytorch_model"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
MODEL_INDEX = {
    "_class_name": "HunyuanVideoPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "LlamaModel"],
    "text_encoder_2": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "transformer": ["diffusers", "HunyuanVideoTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLHunyuanVideo"],
}


class UsageError(ValueError):
    """Bad input: one line naming the flag or file, the value and what is valid."""


# --- transformer ---------------------------------------------------------------------------------

def _block_key(key: str) -> str:
    """Official keys of one block share a group, so a split never straddles two shards."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] in ("double_blocks", "single_blocks") else parts[0]


def diffusers_tensors(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None
                      ) -> Iterator[tuple[str, torch.Tensor]]:
    """Official DiT tensors -> (diffusers key, tensor), one block at a time (bounded memory).

    The key table needs the model width from ``img_in.proj.weight`` for the single blocks'
    q/k/v/MLP split, so that tensor is lent to every group and only its own group keeps it.
    """
    groups: dict[str, list[str]] = {}
    for key in state:
        groups.setdefault(_block_key(key), []).append(key)
    width_key = "img_in.proj.weight"
    for group, keys in groups.items():
        part = {k: state[k] for k in keys}
        lent = width_key not in part
        part.setdefault(width_key, state[width_key])
        for name, tensor in dit_to_diffusers(part).items():
            if lent and name == "x_embedder.proj.weight":
                continue
            yield name, tensor if dtype is None else tensor.to(dtype)


def write_safetensors(tensors: Iterator[tuple[str, torch.Tensor]], folder: Path,
                      max_shard_bytes: int) -> list[Path]:
    """``WEIGHTS.safetensors``, or shards ``WEIGHTS-0000i-of-0000n.safetensors`` plus the index
    diffusers reads when the total exceeds ``max_shard_bytes``."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    written: list[Path] = []
    size = total = 0

    def flush() -> None:
        path = folder / f"{WEIGHTS}-part{len(written) + 1}.safetensors"
        save_file({k: v.contiguous() for k, v in shards[-1].items()}, str(path),
                  metadata={"format": "pt"})
        written.append(path)

    weight_map: dict[str, int] = {}
    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            flush()
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        weight_map[name] = len(shards)
        size += nbytes
        total += nbytes
    flush()
    if len(written) == 1:
        final = [written[0].rename(folder / f"{WEIGHTS}.safetensors")]
    else:
        n = len(written)
        final = [p.rename(folder / f"{WEIGHTS}-{i:05d}-of-{n:05d}.safetensors")
                 for i, p in enumerate(written, 1)]
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: final[i - 1].name for k, i in sorted(weight_map.items())}}
        (folder / f"{WEIGHTS}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return final


def write_transformer(state: Mapping[str, torch.Tensor], config: DiTConfig, folder: Path, *,
                      dtype: torch.dtype | None = None, max_shard_bytes: int = 5 << 30,
                      source: str = "the DiT") -> None:
    """An official-key DiT state dict -> ``transformer/`` (config.json + safetensors)."""
    fp8 = [k for k, t in state.items() if t.dtype == torch.float8_e4m3fn]
    if fp8:
        raise UsageError(f"the DiT holds float8 weights ({fp8[0]} ...): diffusers has no format for the "
                         "official FP8 checkpoint; convert the bf16 mp_rank_00_model_states.pt instead")
    from hyvideo.dit.loader import build_dit

    # Every key and shape of the model variant, before anything is written.
    check_state_dict(build_dit(config, device="meta"), state, source=source)
    folder.mkdir(parents=True)
    kwargs = dit_config_to_diffusers(config)
    kwargs["rope_axes_dim"] = list(kwargs["rope_axes_dim"])
    _write_config(folder / "config.json", "HunyuanVideoTransformer3DModel", kwargs)
    write_safetensors(diffusers_tensors(state, dtype), folder, max_shard_bytes)


def _write_config(path: Path, class_name: str, values: Mapping[str, object]) -> None:
    config = {"_class_name": class_name, "_diffusers_version": DIFFUSERS_VERSION, **values}
    path.write_text(json.dumps(config, indent=2) + "\n")


# --- VAE, text encoders, scheduler ---------------------------------------------------------------

def write_vae(state: Mapping[str, torch.Tensor], config: VAEConfig, folder: Path, *,
              dtype: torch.dtype | None = None, source: str = "the VAE") -> None:
    """The VAE state dict (official keys = diffusers keys) -> ``vae/``."""
    from hyvideo.vae import build_vae

    check_state_dict(build_vae(config, device="meta"), state, source=source)
    folder.mkdir(parents=True)
    _write_config(folder / "config.json", "AutoencoderKLHunyuanVideo", vae_config_to_diffusers(config))
    tensors = ((k, v if dtype is None or not v.is_floating_point() else v.to(dtype)) for k, v in state.items())
    write_safetensors(tensors, folder, max_shard_bytes=1 << 62)


TEXT_FOLDERS = {"llm": ("text_encoder", "tokenizer"), "clip": ("text_encoder_2", "tokenizer_2")}


def write_text_encoder(encoder, which: str, out: Path) -> None:
    """One of our text encoders (``which``: llm or clip) -> its model and tokenizer folders."""
    model_dir, tok_dir = TEXT_FOLDERS[which]
    encoder.model.save_pretrained(out / model_dir, safe_serialization=True)
    encoder.tokenizer.save_pretrained(out / tok_dir)
    if which == "clip":
        # transformers 5 saves tokenizer.json only; CLIP's vocab.json + merges.txt are what the
        # published diffusers folder holds (and what hyvideo's CLIP tokenizer loader reads).
        encoder.tokenizer.backend_tokenizer.model.save(str(out / tok_dir))


def write_text_encoders(text, out: Path) -> None:
    """``text_encoder/`` + ``tokenizer/`` (LlamaModel) and ``text_encoder_2/`` + ``tokenizer_2/``
    (CLIPTextModel) from our :class:`hyvideo.text.TextEncoders`."""
    write_text_encoder(text.llm, "llm", out)
    write_text_encoder(text.clip, "clip", out)


def write_scheduler(out: Path, flow_shift: float) -> None:
    """The flow-matching Euler schedule of hyvideo.pipeline.scheduler (reverse, shifted)."""
    (out / "scheduler").mkdir(parents=True)
    _write_config(out / "scheduler" / "scheduler_config.json", "FlowMatchEulerDiscreteScheduler",
                  {"num_train_timesteps": 1000, "shift": float(flow_shift), "use_dynamic_shifting": False})


def write_model_index(out: Path) -> None:
    (out / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")


# --- sources ---------------------------------------------------------------------------------------

def stored_dtype(folder: Path) -> torch.dtype:
    """The dtype of the first floating tensor in a Hugging Face folder's safetensors."""
    from safetensors import safe_open

    from hyvideo.checkpoints.reading import safetensors_files

    for file in safetensors_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                kind = handle.get_slice(key).get_dtype()
                if kind in SAFETENSORS_DTYPES:
                    return SAFETENSORS_DTYPES[kind]
    raise CheckpointError(f"{folder}: no floating-point tensors")


def convert_tiny(out: Path, dtype: torch.dtype | None, max_shard_bytes: int, seed: int = 0) -> None:
    """The in-memory tiny random model (the same weights for a given ``seed``) -> ``out``."""
    from hyvideo.pipeline.tiny import tiny_components
    from hyvideo.pipeline.variants import load_variant

    parts = tiny_components(torch.device("cpu"), seed=seed)
    write_transformer(parts.dit.state_dict(), parts.dit.config, out / "transformer", dtype=dtype,
                      max_shard_bytes=max_shard_bytes)
    write_vae(parts.vae.state_dict(), parts.vae.config, out / "vae", dtype=dtype)
    if dtype is not None:
        for encoder in (parts.text_encoders.llm, parts.text_encoders.clip):
            encoder.model.to(dtype)
    write_text_encoders(parts.text_encoders, out)
    write_scheduler(out, load_variant(TINY).sampling.flow_shift)


def convert_official(args: argparse.Namespace, out: Path, dtype: torch.dtype | None) -> None:
    """The official ``ckpts/`` tree (paths derived from ``--model-base``; overrides win) -> ``out``."""
    from hyvideo.checkpoints.keys import official_dit_state
    from hyvideo.checkpoints.reading import read_state_dict
    from hyvideo.checkpoints.layouts import CheckpointPaths, component_paths
    from hyvideo.pipeline.variants import load_variant
    from hyvideo.text import load_clip_encoder, load_llm_encoder
    from hyvideo.vae.loader import find_vae_files, unwrap_vae_state_dict

    variant = load_variant(args.model)
    paths = component_paths(CheckpointPaths(
        model_base=args.model_base, model_resolution=args.model_resolution, dit_weight=args.dit_weight,
        vae_path=args.vae_path, text_encoder_path=args.text_encoder_path,
        text_encoder_2_path=args.text_encoder_2_path))
    log.info("transformer from %s", paths.dit)
    state = official_dit_state(read_state_dict(paths.dit, keys=(args.load_key,)))
    write_transformer(state, variant.dit, out / "transformer", dtype=dtype,
                      max_shard_bytes=int(args.max_shard_size * (1 << 30)),
                      source=f"{paths.dit} (as {variant.name})")
    del state
    log.info("VAE from %s", paths.vae)
    config_file, weights = find_vae_files(paths.vae)
    vae_state = unwrap_vae_state_dict(read_state_dict(weights, keys=("state_dict",)))
    write_vae(vae_state, VAEConfig.from_json(config_file), out / "vae", dtype=dtype, source=str(weights))
    del vae_state
    for which, folder, loader in (("llm", paths.text_encoder, load_llm_encoder),
                                  ("clip", paths.text_encoder_2, load_clip_encoder)):
        log.info("%s from %s", TEXT_FOLDERS[which][0], folder)
        encoder = loader(folder, dtype=dtype or stored_dtype(Path(folder)), device="cpu")
        write_text_encoder(encoder, which, out)
        del encoder  # one 8B model in memory at a time
    write_scheduler(out, variant.sampling.flow_shift)


# --- command line ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, required=True, help="the diffusers folder to write")
    p.add_argument("--model", default="HYVideo-T/2-cfgdistill",
                   help="model variant (HYVideo-T/2-cfgdistill, HYVideo-T/2) or tiny-random")
    p.add_argument("--model-base", type=Path, default=Path("ckpts"), help="the official checkpoint root")
    p.add_argument("--model-resolution", default="720p", help="hunyuan-video-t2v-<resolution>/")
    p.add_argument("--dit-weight", type=Path, help="the DiT file (default: derived from --model-base)")
    p.add_argument("--vae-path", type=Path, help="the VAE folder")
    p.add_argument("--text-encoder-path", type=Path, help="the LLM text encoder folder")
    p.add_argument("--text-encoder-2-path", type=Path, help="the CLIP text encoder folder")
    p.add_argument("--load-key", default="module", help="container key of the DiT file (module|ema)")
    p.add_argument("--dtype", choices=["keep", *DTYPES], default="keep",
                   help="precision of every written tensor (keep: as stored)")
    p.add_argument("--max-shard-size", type=float, default=5.0, help="GiB per transformer shard")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    args = p.parse_args(argv)
    if not args.max_shard_size > 0:
        p.error(f"--max-shard-size {args.max_shard_size}: must be > 0 (GiB)")
    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        p.error(f"--output {args.output}: the folder exists and is not empty; pass --overwrite to replace it")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    dtype = None if args.dtype == "keep" else DTYPES[args.dtype]
    out: Path = args.output
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        if args.model == TINY:
            convert_tiny(out, dtype, int(args.max_shard_size * (1 << 30)))
        else:
            convert_official(args, out, dtype)
    except (CheckpointError, UsageError, KeyError, ValueError) as exc:
        shutil.rmtree(out, ignore_errors=True)  # a half-written folder would look loadable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_model_index(out)
    log.info("wrote %s (diffusers layout: HunyuanVideoPipeline.from_pretrained)", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
