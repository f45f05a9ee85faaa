"""Runners for the DiT-side kinds: ``dit``, ``fp8``, ``rope``, ``scheduler``, ``sampling``, and
the DiT manifests. Each goes through the same loaders and modules the CLI uses."""

from __future__ import annotations

import math
from typing import Any

import torch

from hyvideo.dit.config import DiTConfig
from hyvideo.text.conditioning import TextConditioning
from hyvideo.pipeline.denoise import StepInfo, denoise
from hyvideo.dit.fp8 import FP8_DTYPE, fp8_layer_names
from hyvideo.dit.loader import build_dit, load_dit
from hyvideo.dit.rope import rope_tables
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.conformance.core import Case

VAE_TIME, VAE_SPACE = 4, 8  # the 884 VAE's compression, used to map pixels to latents


def dit_config(case_config: dict[str, Any], settings: dict[str, Any]) -> DiTConfig:
    cfg = dict(case_config)
    cfg.setdefault("rope_theta", settings.get("rope_theta", 256))
    if "token_refiner_depth" in settings:
        cfg["token_refiner_depth"] = settings["token_refiner_depth"]
    return DiTConfig.from_dict(cfg)


DIT_INPUTS = ("x", "t", "text_states", "text_mask", "text_states_2")


def load_case_dit(case: Case, weights_file: str, attention: str, device: str,
                  config: DiTConfig | None = None):
    """The case's DiT from ``weights_file`` in float32, with ``config`` (default: the case's)."""
    if config is None:
        config = dit_config(case.config, case.settings)
    return load_dit(case.path / weights_file, config, dtype=torch.float32, device=device,
                    attention_backend=attention)


def dit_forward(model, case: Case, device: str) -> torch.Tensor:
    """One DiT forward on the case's inputs (and its ``guidance`` when it has one)."""
    inputs = [case[n].to(device) for n in DIT_INPUTS]
    guidance = case["guidance"].to(device) if "guidance" in case else None
    with torch.inference_mode():
        return model(*inputs, guidance)


def case_conditioning(case: Case, prefix: str, device: str) -> TextConditioning:
    """The case's ``{prefix}prompt_embeds``, ``_mask`` and ``_embeds_2`` as a TextConditioning."""
    return TextConditioning(case[f"{prefix}prompt_embeds"].to(device),
                            case[f"{prefix}prompt_mask"].to(device),
                            case[f"{prefix}prompt_embeds_2"].to(device))


def _forward(case: Case, weights_file: str, attention: str, device: str) -> dict[str, torch.Tensor]:
    return {"out.x": dit_forward(load_case_dit(case, weights_file, attention, device), case, device)}


def run_dit(case: Case, attention: str = "sdpa", device: str = "cpu") -> dict[str, torch.Tensor]:
    return _forward(case, "weights.safetensors", attention, device)


def run_fp8(case: Case, attention: str = "sdpa", device: str = "cpu") -> dict[str, torch.Tensor]:
    # The official container and map (``*_fp8.pt`` + ``*_fp8_map.pt``) when present.
    official = sorted(case.path.glob("*_fp8.pt"))
    return _forward(case, official[0].name if official else "weights.safetensors", attention, device)


def latent_grid(video_length: int, height: int, width: int) -> tuple[int, int, int]:
    """Pixels -> 884 latent grid, after the reference's rounding of H and W up to 16."""
    height, width = math.ceil(height / 16) * 16, math.ceil(width / 16) * 16
    return (video_length - 1) // VAE_TIME + 1, height // VAE_SPACE, width // VAE_SPACE


def run_rope(case: Case) -> dict[str, torch.Tensor]:
    cfg = case.config
    patch = cfg.get("patch_size", [1, 2, 2])
    out = {}
    for size in case.settings["sizes"]:
        t, h, w = latent_grid(size["video_length"], size["height"], size["width"])
        grid = (t // patch[0], h // patch[1], w // patch[2])
        cos, sin = rope_tables(grid, tuple(cfg["rope_dim_list"]), case.settings["rope_theta"])
        out[f"{size['key']}.freqs_cos"], out[f"{size['key']}.freqs_sin"] = cos, sin
    return out


def run_scheduler(case: Case) -> dict[str, torch.Tensor]:
    cfg = case.config
    schedule = FlowMatchSchedule.create(case.settings["num_inference_steps"], cfg["shift"],
                                        cfg["reverse"])
    out = {"timesteps": schedule.timesteps, "sigmas": schedule.sigmas}
    for k in case.settings["step_indices"]:
        index = schedule.index_of(schedule.timesteps[k])  # looked up by value, as the reference
        out[f"step{k}.prev_sample"] = schedule.step(
            index, case[f"step{k}.sample"], case[f"step{k}.model_output"]
        )
    return out


def run_sampling(case: Case, attention: str = "sdpa", device: str = "cpu") -> dict[str, torch.Tensor]:
    s = case.settings
    model = load_case_dit(case, "weights.safetensors", attention, device)
    schedule = FlowMatchSchedule.create(s["num_inference_steps"], s["flow_shift"], s["flow_reverse"])
    cond = case_conditioning(case, "", device)
    negative = case_conditioning(case, "negative_", device) if "negative_prompt_embeds" in case else None
    out: dict[str, torch.Tensor] = {"timesteps": schedule.timesteps, "sigmas": schedule.sigmas}

    def record(info: StepInfo) -> None:
        out[f"latents_step{info.step}"] = info.latents.clone()
        out[f"model_out_step{info.step}"] = info.model_output.clone()
        out[f"dit_t_step{info.step}"] = info.t.clone()
        if info.guidance is not None:
            out[f"dit_guidance_step{info.step}"] = info.guidance.clone()

    with torch.inference_mode():
        out["final_latents"] = denoise(
            model, case["init_latents"].to(device), schedule, cond, negative=negative,
            cfg_scale=float(s.get("cfg_scale", 1.0)),
            embedded_cfg_scale=s.get("embedded_guidance_scale"), callback=record,
        )
    return out


def check_dit_manifest(meta: dict[str, Any]) -> list[str]:
    """Full-size DiT on the meta device: keys, shapes, built dtypes, FP8 layers, parameter count."""
    config = dit_config(meta["config"], meta.get("settings", {}))
    precision = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        meta.get("settings", {}).get("precision", "bf16")]
    model = build_dit(config, dtype=precision, device="meta")
    ours = model.state_dict()
    problems = []
    want = {k["key"]: k for k in meta["keys"]}
    missing, extra = sorted(set(want) - set(ours)), sorted(set(ours) - set(want))
    if missing:
        problems.append(f"{len(missing)} keys we lack: {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} keys the manifest lacks: {extra[:5]}")
    for key, entry in want.items():
        if key not in ours:
            continue
        if list(ours[key].shape) != list(entry["shape"]):
            problems.append(f"{key}: shape {list(ours[key].shape)} != {entry['shape']}")
        built = entry.get("built_dtype")
        if built and str(ours[key].dtype).removeprefix("torch.") != built:
            problems.append(f"{key}: built dtype {ours[key].dtype} != {built}")
    total = sum(t.numel() for t in ours.values())
    if total != meta["total_parameters"]:
        problems.append(f"parameter count {total:,} != {meta['total_parameters']:,}")
    if len(ours) != meta.get("num_keys", len(ours)):
        problems.append(f"{len(ours)} keys != num_keys {meta['num_keys']}")
    fp8_want = {k["key"] for k in meta["keys"] if k.get("fp8_in_fp8_checkpoint")}
    fp8_ours = {f"{n}.weight" for n in fp8_layer_names(model)}
    if fp8_want and fp8_want != fp8_ours:
        problems.append(f"FP8 layers differ: {sorted(fp8_want ^ fp8_ours)[:5]}")
    fp8_model = build_dit(config, dtype=precision, device="meta", fp8=True)
    n_fp8 = sum(t.dtype == FP8_DTYPE for t in fp8_model.state_dict().values())
    if "num_fp8_layers" in meta and n_fp8 != meta["num_fp8_layers"]:
        problems.append(f"{n_fp8} float8 tensors != num_fp8_layers {meta['num_fp8_layers']}")
    return problems
