"""Runners for the image-to-video DiT kinds (FORMAT sections 12, 13, 17): ``dit_i2v``,
``sampling_i2v``, ``lora_i2v``, and the manifests of the I2V DiTs. Each goes through the same
loader, DiT, denoising loop and LoRA code the pipeline uses."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from hyvideo.conformance.core import Case
from hyvideo.conformance.dit_kinds import (
    case_conditioning,
    check_dit_manifest,
    dit_config,
    dit_forward,
    load_case_dit,
)
from hyvideo.dit.config import DiTConfig
from hyvideo.dit.lora import fuse_lora, load_lora
from hyvideo.pipeline.denoise import call_dit
from hyvideo.pipeline.i2v_denoise import denoise_i2v, i2v_start
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from hyvideo.pipeline.types import StepInfo


def i2v_config(case_config: dict[str, Any], settings: dict[str, Any]) -> DiTConfig:
    """The case's DiT configuration with its ``settings.i2v_condition_type``."""
    return dataclasses.replace(dit_config(case_config, settings),
                               i2v_condition_type=settings.get("i2v_condition_type"))


def _load(case: Case, attention: str, device: str):
    return load_case_dit(case, "weights.safetensors", attention, device,
                         config=i2v_config(case.config, case.settings))


def _check_first_frame(model, case: Case) -> None:
    """The case's ``first_frame_token_num`` is what the DiT derives from x (H' * W')."""
    want = case.settings.get("first_frame_token_num")
    if want is not None:
        _, h, w = model.token_grid(tuple(case["x"].shape[2:]))
        if h * w != want:
            raise ValueError(f"first_frame_token_num {want} != H'*W' = {h * w}")


def run_dit_i2v(case: Case, attention: str = "sdpa", device: str = "cpu") -> dict[str, torch.Tensor]:
    model = _load(case, attention, device)
    _check_first_frame(model, case)
    return {"out.x": dit_forward(model, case, device)}


def run_sampling_i2v(case: Case, attention: str = "sdpa", device: str = "cpu") -> dict[str, torch.Tensor]:
    s = case.settings
    model = _load(case, attention, device)
    schedule = FlowMatchSchedule.create(s["num_inference_steps"], s["flow_shift"], s["flow_reverse"])
    negative = case_conditioning(case, "negative_", device) if "negative_prompt_embeds" in case else None
    out: dict[str, torch.Tensor] = {"timesteps": schedule.timesteps, "sigmas": schedule.sigmas}
    inputs: list[torch.Tensor] = []

    def predict(dit, x, *args, **kwargs) -> torch.Tensor:  # the exact DiT input of each step
        inputs.append(x.clone())
        return call_dit(dit, x, *args, **kwargs)

    def record(info: StepInfo) -> None:
        k = info.step
        out[f"latents_step{k}"] = info.latents.clone()
        out[f"dit_in_step{k}"] = inputs[k]
        out[f"model_out_step{k}"] = info.model_output.clone()
        out[f"dit_t_step{k}"] = info.t.clone()
        if info.guidance is not None:
            out[f"dit_guidance_step{k}"] = info.guidance.clone()

    img = case["img_latents"].to(device)
    with torch.inference_mode():
        latents = i2v_start(case["init_noise"].to(device), img, stability=bool(s.get("i2v_stability")))
        out["final_latents"] = denoise_i2v(
            model, latents, schedule, case_conditioning(case, "", device), img,
            condition_type=s["i2v_condition_type"], negative=negative,
            cfg_scale=float(s.get("cfg_scale", 1.0)), embedded_cfg_scale=s.get("embedded_guidance_scale"),
            callback=record, predict=predict,
        )
    return out


def run_lora_i2v(case: Case, attention: str = "sdpa", device: str = "cpu") -> dict[str, torch.Tensor]:
    """The official I2V LoRA file merged by :mod:`hyvideo.dit.lora` (alpha ignored), then the
    merged weights of every adapted module and the DiT forward."""
    model = _load(case, attention, device)
    lora = load_lora(model, case.path / "lora.safetensors")
    fuse_lora(model, lora, float(case.settings["lora_scale"]), restorable=False)
    out = {f"merged.{name}.weight": model.get_submodule(name).weight.detach().float()
           for name in lora.layers}
    out["out.x"] = dit_forward(model, case, device)
    return out


def check_i2v_dit_manifest(meta: dict[str, Any]) -> list[str]:
    """The full-size I2V DiT (its condition type, e.g. 33 input channels) on the meta device:
    keys, shapes, built dtypes, FP8 layers and parameter count, as for the T2V DiT."""
    settings = meta.get("settings", {})
    kind = settings.get("i2v_condition_type")
    if kind is None:
        return ["an I2V DiT manifest needs settings.i2v_condition_type"]
    config = i2v_config(meta["config"], settings)
    return check_dit_manifest({**meta, "config": dataclasses.asdict(config)})
