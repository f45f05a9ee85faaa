"""Dual-stream (``double_blocks``) and single-stream (``single_blocks``) transformer blocks.

Both share the same small pieces (modulate, gate, qkv split + RMS norm + RoPE, one attention
entry point) while keeping the flat official attribute names.

Image-to-video ``token_replace``: the first ``first_tokens`` image tokens (latent frame 0 on this
process) take their shift, scale and gate from a second vector ``first_vec``; every other token,
text included, from ``vec``. The two token ranges are modulated as two slices of one tensor, so
no per-token copy of the modulation is ever made.
"""

from __future__ import annotations

import torch
from torch import nn

from hyvideo.dit.attention import AttentionGroups, attention
from hyvideo.dit.layers import MLP, Mod, Modulation, RMSNorm, activation, gated, layer_norm, lowered, modulate
from hyvideo.dit.rope import apply_rope

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [N_img, head_dim]


def qk_norm(heads: int, head_dim: int, enabled: bool, device, dtype) -> nn.Module:
    return RMSNorm(head_dim, eps=1e-6, device=device, dtype=dtype) if enabled else nn.Identity()


def split_heads(qkv: torch.Tensor, heads: int, q_norm: nn.Module, k_norm: nn.Module,
                rope: Rope | None, n_rope: int | None = None):
    """[B, S, 3*H*D] ("(K H D)" layout) -> normalised q, k and v, each [B, S, H, D].

    RoPE is applied to the first ``n_rope`` tokens (all tokens when None).
    """
    q, k, v = qkv.unflatten(-1, (3, heads, -1)).unbind(2)
    q, k = q_norm(q).to(v.dtype), k_norm(k).to(v.dtype)
    if rope is not None:
        if n_rope is None or n_rope == q.shape[1]:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        else:  # q and k are fresh tensors from the norms: rotate the image rows in place
            q[:, :n_rope] = apply_rope(q[:, :n_rope], *rope)
            k[:, :n_rope] = apply_rope(k[:, :n_rope], *rope)
    return q, k, v


def modulate_tokens(x: torch.Tensor, mod: Mod, first: Mod | None = None, split: int = 0,
                    autocast: torch.dtype | None = None) -> torch.Tensor:
    """``modulate(layer_norm(x))`` with ``mod``; tokens ``:split`` with ``first`` instead.
    Float32 under the autocast placement (see :func:`~hyvideo.dit.layers.layer_norm`)."""
    if first is None:
        return modulate(layer_norm(x, autocast=autocast), mod.shift, mod.scale)
    normed = layer_norm(x, autocast=autocast)  # a fresh tensor: each token range is modulated in place
    for rows, m in ((slice(None, split), first), (slice(split, None), mod)):
        normed[:, rows].mul_(1 + m.scale.unsqueeze(1)).add_(m.shift.unsqueeze(1))
    return normed


def gated_tokens(residual: torch.Tensor, update: torch.Tensor, gate: torch.Tensor,
                 first_gate: torch.Tensor | None = None, split: int = 0) -> torch.Tensor:
    """``residual + gate * update``; tokens ``:split`` gated by ``first_gate`` instead."""
    if first_gate is None:
        return gated(residual, update, gate)
    out = residual.clone()  # the block's input stays intact (the step caches read it)
    for rows, g in ((slice(None, split), first_gate), (slice(split, None), gate)):
        out[:, rows].addcmul_(update[:, rows], g.unsqueeze(1))
    return out


def first_frame_mods(modulation: Modulation, first_vec: torch.Tensor | None,
                     first_tokens: int) -> list[Mod | None]:
    """``modulation(first_vec)`` when some tokens are frame-0 tokens (token_replace), else one
    None per triple."""
    return modulation(first_vec) if first_vec is not None and first_tokens else [None] * modulation.triples


class MMDoubleStreamBlock(nn.Module):
    """Image and text streams with their own weights, joined only in attention."""

    autocast: torch.dtype | None = None  # the official placement (HYVideoDiffusionTransformer.set_autocast)

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, qkv_bias: bool, qk_norm_on: bool,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        head_dim = hidden // heads
        self.heads = heads
        # Official parameter names, written out: the checkpoints load with strict=True.
        self.img_mod = Modulation(hidden, 2, **kw)
        self.img_attn_qkv = nn.Linear(hidden, 3 * hidden, bias=qkv_bias, **kw)
        self.img_attn_q_norm = qk_norm(heads, head_dim, qk_norm_on, **kw)
        self.img_attn_k_norm = qk_norm(heads, head_dim, qk_norm_on, **kw)
        self.img_attn_proj = nn.Linear(hidden, hidden, **kw)
        self.img_mlp = MLP(hidden, mlp_hidden, "gelu_tanh", **kw)
        self.txt_mod = Modulation(hidden, 2, **kw)
        self.txt_attn_qkv = nn.Linear(hidden, 3 * hidden, bias=qkv_bias, **kw)
        self.txt_attn_q_norm = qk_norm(heads, head_dim, qk_norm_on, **kw)
        self.txt_attn_k_norm = qk_norm(heads, head_dim, qk_norm_on, **kw)
        self.txt_attn_proj = nn.Linear(hidden, hidden, **kw)
        self.txt_mlp = MLP(hidden, mlp_hidden, "gelu_tanh", **kw)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, rope: Rope | None,
                groups: AttentionGroups, backend: str, first_vec: torch.Tensor | None = None,
                first_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """img [B, N, C], txt [B, L, C], vec [B, C] -> updated (img, txt). token_replace:
        ``first_vec`` [B, C] modulates image tokens ``:first_tokens`` (see the module docstring)."""
        ac = self.autocast  # LayerNorm and modulate in float32, the linears in bf16 (when set)
        img_mods, txt_mods = self.img_mod(vec), self.txt_mod(vec)
        first_mods = self.first_mods(first_vec, first_tokens)
        img_qkv = split_heads(
            self.img_attn_qkv(lowered(modulate_tokens(img, img_mods[0], first_mods[0], first_tokens, ac), ac)),
            self.heads, self.img_attn_q_norm, self.img_attn_k_norm, rope)  # RoPE: image only
        txt_qkv = split_heads(self.txt_attn_qkv(lowered(modulate_tokens(txt, txt_mods[0], autocast=ac), ac)),
                              self.heads, self.txt_attn_q_norm, self.txt_attn_k_norm, None)
        q, k, v = (torch.cat(pair, dim=1) for pair in zip(img_qkv, txt_qkv))  # [B, N+L, H, D]
        del img_qkv, txt_qkv  # free the per-stream projections before attention (peak memory)
        attn = attention(q, k, v, groups, backend=backend)  # [B, N+L, C]
        del q, k, v
        n = img.shape[1]
        img = finish_stream(img, self.img_attn_proj(attn[:, :n]), self.img_mlp, img_mods, first_mods,
                            first_tokens, ac)
        txt = finish_stream(txt, self.txt_attn_proj(attn[:, n:]), self.txt_mlp, txt_mods, autocast=ac)
        return img, txt

    def first_mods(self, first_vec: torch.Tensor | None, first_tokens: int) -> list[Mod | None]:
        """``img_mod(first_vec)`` when some image tokens are frame-0 tokens, else two Nones."""
        return first_frame_mods(self.img_mod, first_vec, first_tokens)

    def modulated_img(self, img: torch.Tensor, vec: torch.Tensor, first_vec: torch.Tensor | None = None,
                      first_tokens: int = 0) -> torch.Tensor:
        """The image stream's modulated attention input [B, N, C] (TeaCache's change indicator)."""
        return modulate_tokens(img, self.img_mod(vec)[0], self.first_mods(first_vec, first_tokens)[0],
                               first_tokens, self.autocast)


def finish_stream(x: torch.Tensor, attn_out: torch.Tensor, mlp: nn.Module, mods,
                  first_mods=(None, None), split: int = 0, autocast: torch.dtype | None = None) -> torch.Tensor:
    """The gated attention residual, then the gated MLP residual of one stream."""
    first_attn, first_mlp = first_mods
    x = gated_tokens(x, attn_out, mods[0].gate, first_attn and first_attn.gate, split)
    update = mlp(lowered(modulate_tokens(x, mods[1], first_mlp, split, autocast), autocast))
    return gated_tokens(x, update, mods[1].gate, first_mlp and first_mlp.gate, split)


class MMSingleStreamBlock(nn.Module):
    """One stream over cat(img, txt): linear1 -> [qkv | mlp], linear2(cat(attn, act(mlp)))."""

    autocast: torch.dtype | None = None  # the official placement (HYVideoDiffusionTransformer.set_autocast)

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, qk_norm_on: bool,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads, self.hidden, self.mlp_hidden = heads, hidden, mlp_hidden
        self.linear1 = nn.Linear(hidden, 3 * hidden + mlp_hidden, **kw)
        self.linear2 = nn.Linear(hidden + mlp_hidden, hidden, **kw)
        self.q_norm = qk_norm(heads, hidden // heads, qk_norm_on, **kw)
        self.k_norm = qk_norm(heads, hidden // heads, qk_norm_on, **kw)
        self.modulation = Modulation(hidden, 1, **kw)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, n_img: int, rope: Rope | None,
                groups: AttentionGroups, backend: str, first_vec: torch.Tensor | None = None,
                first_tokens: int = 0) -> torch.Tensor:
        """x [B, N+L, C] (image tokens first) -> [B, N+L, C]. token_replace: ``first_vec``
        modulates positions ``:first_tokens`` of the fused sequence, ``vec`` all the others."""
        (mod,) = self.modulation(vec)
        (first,) = first_frame_mods(self.modulation, first_vec, first_tokens)
        h = self.linear1(lowered(modulate_tokens(x, mod, first, first_tokens, self.autocast), self.autocast))
        qkv, mlp = h.split([3 * self.hidden, self.mlp_hidden], dim=-1)
        q, k, v = split_heads(qkv, self.heads, self.q_norm, self.k_norm, rope, n_img)
        # q and k are fresh tensors; copying v too lets the wide linear1 output be freed before
        # attention runs (peak memory), and gives attention a contiguous v.
        v = v.contiguous()
        mlp = activation(mlp, "gelu_tanh")
        del h, qkv
        attn = attention(q, k, v, groups, backend=backend)  # [B, S, C]
        del q, k, v
        out = self.linear2(torch.cat([attn, mlp], dim=-1))
        return gated_tokens(x, out, mod.gate, first and first.gate, first_tokens)
