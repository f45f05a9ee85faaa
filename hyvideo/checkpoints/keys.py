"""Official <-> diffusers key layout of the DiT, as one declarative table.

Each rule maps an official module prefix to one or more diffusers prefixes. ``copy`` renames;
``split`` cuts the official tensor along dim 0 into the listed parts (fused qkv -> q, k, v;
single-block ``linear1`` -> q, k, v, mlp); ``swap`` exchanges the two halves (the final layer's
official (shift, scale) is diffusers' (scale, shift)). ``{0}`` stands for a block index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where tensors are converted: the key tables and the DiT config
    import torch  # are read (and the command line checked) before torch is imported

_R = "context_embedder.token_refiner.refiner_blocks.{0}."
_D = "transformer_blocks.{0}."
_S = "single_transformer_blocks.{0}."
_B = r"(\d+)\."

# (official prefix regex, diffusers prefixes, op)
DIT_RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("img_in.proj.", ("x_embedder.proj.",), "copy"),
    ("txt_in.input_embedder.", ("context_embedder.proj_in.",), "copy"),
    ("txt_in.t_embedder.mlp.0.", ("context_embedder.time_text_embed.timestep_embedder.linear_1.",), "copy"),
    ("txt_in.t_embedder.mlp.2.", ("context_embedder.time_text_embed.timestep_embedder.linear_2.",), "copy"),
    ("txt_in.c_embedder.linear_1.", ("context_embedder.time_text_embed.text_embedder.linear_1.",), "copy"),
    ("txt_in.c_embedder.linear_2.", ("context_embedder.time_text_embed.text_embedder.linear_2.",), "copy"),
    ("txt_in.individual_token_refiner.blocks." + _B + "norm1.", (_R + "norm1.",), "copy"),
    ("txt_in.individual_token_refiner.blocks." + _B + "norm2.", (_R + "norm2.",), "copy"),
    ("txt_in.individual_token_refiner.blocks." + _B + "self_attn_qkv.",
     (_R + "attn.to_q.", _R + "attn.to_k.", _R + "attn.to_v."), "split"),
    ("txt_in.individual_token_refiner.blocks." + _B + "self_attn_proj.", (_R + "attn.to_out.0.",), "copy"),
    ("txt_in.individual_token_refiner.blocks." + _B + "mlp.fc1.", (_R + "ff.net.0.proj.",), "copy"),
    ("txt_in.individual_token_refiner.blocks." + _B + "mlp.fc2.", (_R + "ff.net.2.",), "copy"),
    ("txt_in.individual_token_refiner.blocks." + _B + "adaLN_modulation.1.", (_R + "norm_out.linear.",), "copy"),
    ("time_in.mlp.0.", ("time_text_embed.timestep_embedder.linear_1.",), "copy"),
    ("time_in.mlp.2.", ("time_text_embed.timestep_embedder.linear_2.",), "copy"),
    ("vector_in.in_layer.", ("time_text_embed.text_embedder.linear_1.",), "copy"),
    ("vector_in.out_layer.", ("time_text_embed.text_embedder.linear_2.",), "copy"),
    ("guidance_in.mlp.0.", ("time_text_embed.guidance_embedder.linear_1.",), "copy"),
    ("guidance_in.mlp.2.", ("time_text_embed.guidance_embedder.linear_2.",), "copy"),
    ("double_blocks." + _B + "img_mod.linear.", (_D + "norm1.linear.",), "copy"),
    ("double_blocks." + _B + "txt_mod.linear.", (_D + "norm1_context.linear.",), "copy"),
    ("double_blocks." + _B + "img_attn_qkv.", (_D + "attn.to_q.", _D + "attn.to_k.", _D + "attn.to_v."), "split"),
    ("double_blocks." + _B + "txt_attn_qkv.",
     (_D + "attn.add_q_proj.", _D + "attn.add_k_proj.", _D + "attn.add_v_proj."), "split"),
    ("double_blocks." + _B + "img_attn_q_norm.", (_D + "attn.norm_q.",), "copy"),
    ("double_blocks." + _B + "img_attn_k_norm.", (_D + "attn.norm_k.",), "copy"),
    ("double_blocks." + _B + "txt_attn_q_norm.", (_D + "attn.norm_added_q.",), "copy"),
    ("double_blocks." + _B + "txt_attn_k_norm.", (_D + "attn.norm_added_k.",), "copy"),
    ("double_blocks." + _B + "img_attn_proj.", (_D + "attn.to_out.0.",), "copy"),
    ("double_blocks." + _B + "txt_attn_proj.", (_D + "attn.to_add_out.",), "copy"),
    ("double_blocks." + _B + "img_mlp.fc1.", (_D + "ff.net.0.proj.",), "copy"),
    ("double_blocks." + _B + "img_mlp.fc2.", (_D + "ff.net.2.",), "copy"),
    ("double_blocks." + _B + "txt_mlp.fc1.", (_D + "ff_context.net.0.proj.",), "copy"),
    ("double_blocks." + _B + "txt_mlp.fc2.", (_D + "ff_context.net.2.",), "copy"),
    ("single_blocks." + _B + "linear1.",
     (_S + "attn.to_q.", _S + "attn.to_k.", _S + "attn.to_v.", _S + "proj_mlp."), "split"),
    ("single_blocks." + _B + "linear2.", (_S + "proj_out.",), "copy"),
    ("single_blocks." + _B + "q_norm.", (_S + "attn.norm_q.",), "copy"),
    ("single_blocks." + _B + "k_norm.", (_S + "attn.norm_k.",), "copy"),
    ("single_blocks." + _B + "modulation.linear.", (_S + "norm.linear.",), "copy"),
    ("final_layer.linear.", ("proj_out.",), "copy"),
    ("final_layer.adaLN_modulation.1.", ("norm_out.linear.",), "swap"),
]


def _official_pattern(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix).replace(re.escape(_B), _B) + r"(.+)$")


def _diffusers_pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{0}"), r"(\d+)") + r"(.+)$")


def _split_sizes(total: int, parts: int, hidden: int) -> list[int]:
    # qkv: three equal parts; single-block linear1: q, k, v of `hidden` each, then the MLP.
    return [total // 3] * 3 if parts == 3 else [hidden] * 3 + [total - 3 * hidden]


def dit_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official DiT state dict -> ``HunyuanVideoTransformer3DModel`` state dict."""
    import torch

    hidden = state["img_in.proj.weight"].shape[0]
    rules = [(_official_pattern(p), d, op) for p, d, op in DIT_RULES]
    out = {}
    for key, tensor in state.items():
        for pattern, targets, op in rules:
            m = pattern.match(key)
            if not m:
                continue
            idx, suffix = m.groups()[:-1], m.groups()[-1]
            names = [t.format(*idx) + suffix for t in targets]
            if op == "split":
                pieces = tensor.split(_split_sizes(tensor.shape[0], len(names), hidden), dim=0)
            elif op == "swap":
                pieces = [torch.cat(tensor.chunk(2, dim=0)[::-1], dim=0)]
            else:
                pieces = [tensor]
            out.update(zip(names, (p.contiguous() for p in pieces), strict=True))
            break
        else:
            raise KeyError(f"no conversion rule for official key {key}")
    return out


def dit_from_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``HunyuanVideoTransformer3DModel`` state dict -> official DiT state dict."""
    import torch

    rules = [(_diffusers_pattern(d[0]), p, d, op) for p, d, op in DIT_RULES]
    known = [_diffusers_pattern(t) for _, d, _ in DIT_RULES for t in d]
    unknown = [k for k in state if not any(p.match(k) for p in known)]
    if unknown:
        raise KeyError(f"{len(unknown)} diffusers keys have no conversion rule: {unknown[:5]}")
    out = {}
    for key, tensor in state.items():
        for pattern, official, targets, op in rules:
            m = pattern.match(key)
            if not m:
                continue
            idx, suffix = m.groups()[:-1], m.groups()[-1]
            name = official.replace(_B, "{0}.").format(*idx) + suffix
            if op == "split":
                tensor = torch.cat([state[t.format(*idx) + suffix] for t in targets], dim=0)
            elif op == "swap":
                tensor = torch.cat(tensor.chunk(2, dim=0)[::-1], dim=0)
            out[name] = tensor
            break
    return out


# --- the diffusers transformer's config.json -----------------------------------------------------

# diffusers ``HunyuanVideoTransformer3DModel`` argument -> official ``DiTConfig`` field (renames
# only; ``hidden_size``, ``patch_size`` and ``qk_norm`` are derived below).
DIT_CONFIG_NAMES: dict[str, str] = {
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "num_attention_heads": "heads_num",
    "num_layers": "mm_double_blocks_depth",
    "num_single_layers": "mm_single_blocks_depth",
    "num_refiner_layers": "token_refiner_depth",
    "mlp_ratio": "mlp_width_ratio",
    "guidance_embeds": "guidance_embed",
    "text_embed_dim": "text_states_dim",
    "pooled_projection_dim": "text_states_dim_2",
    "rope_theta": "rope_theta",
    "rope_axes_dim": "rope_dim_list",
}
# The class defaults, for a config.json that leaves a key out (save_pretrained writes them all).
DIFFUSERS_DIT_DEFAULTS: dict[str, object] = {
    "in_channels": 16, "out_channels": 16, "num_attention_heads": 24, "attention_head_dim": 128,
    "num_layers": 20, "num_single_layers": 40, "num_refiner_layers": 2, "mlp_ratio": 4.0,
    "patch_size": 2, "patch_size_t": 1, "qk_norm": "rms_norm", "guidance_embeds": True,
    "text_embed_dim": 4096, "pooled_projection_dim": 768, "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56), "image_condition_type": None,
}


# --- single-file checkpoints ---------------------------------------------------------------------

# Prefixes under which community single files (ComfyUI, training tools) store the official keys.
SINGLE_FILE_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "transformer.")
_OFFICIAL_MARKER = "img_in.proj.weight"
_DIFFUSERS_MARKER = "x_embedder.proj.weight"


def official_dit_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any DiT state dict we know -> official key names.

    Official keys pass unchanged. A common prefix (``model.diffusion_model.``, ``diffusion_model.``,
    ``model.``, ``transformer.``) is stripped; keys outside it (an all-in-one file's VAE or text
    encoder) are dropped. diffusers keys (``x_embedder...``) are converted with the table.
    """
    if _OFFICIAL_MARKER in state or _DIFFUSERS_MARKER in state:
        inner = dict(state)
    else:
        for prefix in SINGLE_FILE_PREFIXES:
            if prefix + _OFFICIAL_MARKER in state or prefix + _DIFFUSERS_MARKER in state:
                inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                break
        else:
            return dict(state)  # unknown: the strict load reports the keys
    return dit_from_diffusers(inner) if _DIFFUSERS_MARKER in inner else inner


# --- module names, for adapters (LoRA) -----------------------------------------------------------

@dataclass(frozen=True)
class ModuleTarget:
    """Where a diffusers Linear lives in the official model.

    ``rows`` is the slice of the official module's output rows it produces (None: all of them);
    ``swap_halves`` marks the final layer's (scale, shift) -> (shift, scale) reordering.
    """

    module: str
    rows: slice | None = None
    swap_halves: bool = False


def diffusers_module_targets(out_features: Mapping[str, int], hidden: int) -> dict[str, ModuleTarget]:
    """diffusers Linear module name -> its place in the official model, from :data:`DIT_RULES`.

    ``out_features`` maps each official Linear module name to its output width; ``hidden`` is the
    model width (the single-block ``linear1`` is q, k, v of ``hidden`` rows each, then the MLP).
    """
    import torch

    rules = [(_official_pattern(p), d, op) for p, d, op in DIT_RULES]
    targets: dict[str, ModuleTarget] = {}
    for name, width in out_features.items():
        for pattern, names, op in rules:
            m = pattern.match(name + ".weight")
            if not m or m.groups()[-1] != "weight":
                continue
            idx = m.groups()[:-1]
            mapped = [t.format(*idx).rstrip(".") for t in names]
            if op == "split":
                stops = torch.tensor(_split_sizes(width, len(mapped), hidden)).cumsum(0).tolist()
                for target, start, stop in zip(mapped, [0, *stops[:-1]], stops, strict=True):
                    targets[target] = ModuleTarget(name, slice(start, stop))
            else:
                targets[mapped[0]] = ModuleTarget(name, swap_halves=op == "swap")
            break
    return targets
