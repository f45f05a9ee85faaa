"""Official <-> diffusers key layout of the DiT, as one declarative table.

Each rule maps an official module prefix to one or more diffusers prefixes. ``copy`` renames;
``split`` cuts the official tensor along dim 0 into the listed parts (fused qkv -> q, k, v;
single-block ``linear1`` -> q, k, v, mlp); ``swap`` exchanges the two halves (the final layer's
official (shift, scale) is diffusers' (scale, shift)). ``{0}`` stands for a block index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

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
