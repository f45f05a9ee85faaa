"""``txt_in``: the token refiner that turns LLM hidden states into DiT text tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hyvideo.dit.attention import attention
from hyvideo.dit.layers import MLP, TextProjection, TimestepEmbedder, gated, lowered


class IndividualTokenRefinerBlock(nn.Module):
    """x += gate_msa * proj(attn(LN(x))); x += gate_mlp * mlp(LN(x)). Affine norms, SiLU MLP,
    no qk-norm, modulation by (gate_msa, gate_mlp) only."""

    autocast: torch.dtype | None = None  # the official placement (HYVideoDiffusionTransformer.set_autocast)

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6, **kw)
        self.self_attn_qkv = nn.Linear(hidden, 3 * hidden, bias=qkv_bias, **kw)
        self.self_attn_proj = nn.Linear(hidden, hidden, **kw)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6, **kw)
        self.mlp = MLP(hidden, int(hidden * mlp_ratio), act="silu", **kw)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, **kw))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None,
                backend: str) -> torch.Tensor:
        ac = self.autocast  # norms in float32, linears in bf16 (when set)
        gate_msa, gate_mlp = self.adaLN_modulation(c).chunk(2, dim=-1)
        qkv = self.self_attn_qkv(lowered(affine_norm(self.norm1, x, ac), ac))
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).unbind(2)
        x = gated(x, self.self_attn_proj(attention(q, k, v, mask=mask, backend=backend)), gate_msa)
        return gated(x, self.mlp(lowered(affine_norm(self.norm2, x, ac), ac)), gate_mlp)


def affine_norm(norm: nn.LayerNorm, x: torch.Tensor, autocast: torch.dtype | None) -> torch.Tensor:
    """``norm(x)``; under the autocast placement in float32 (autocast casts x and the affine
    parameters up, and returns float32)."""
    if autocast is None:
        return norm(x)
    return F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)


class IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden: int, heads: int, depth: int, mlp_ratio: float, qkv_bias: bool,
                 device=None, dtype=None):
        super().__init__()
        self.blocks = nn.ModuleList(
            IndividualTokenRefinerBlock(hidden, heads, mlp_ratio, qkv_bias, device, dtype)
            for _ in range(depth)
        )

    def forward(self, x, c, mask: torch.Tensor | None, backend: str) -> torch.Tensor:
        attn_mask = None
        if mask is not None:
            valid = mask.bool()  # [B, L]
            attn_mask = (valid[:, None, :, None] & valid[:, None, None, :]).clone()  # [B,1,L,L]
            # Reference quirk: key 0 is always visible, so padding queries see only token 0
            # (their rows would otherwise be empty and give NaN).
            attn_mask[..., 0] = True
        for block in self.blocks:
            x = block(x, c, attn_mask, backend)
        return x


class SingleTokenRefiner(nn.Module):
    """c = t_embedder(t) + c_embedder(masked mean of the text states); x = input_embedder(text);
    then ``depth`` refiner blocks conditioned on c.

    Under the autocast placement it takes the text states in their own dtype (float16 from the
    text encoder), as the reference does: the masked mean is taken in float32 from them, and the
    linears get them cast to bf16.
    """

    autocast: torch.dtype | None = None  # the official placement (HYVideoDiffusionTransformer.set_autocast)

    def __init__(self, in_dim: int, hidden: int, heads: int, depth: int, mlp_ratio: float,
                 qkv_bias: bool, device=None, dtype=None, table: str = "t2v"):
        super().__init__()
        self.input_embedder = nn.Linear(in_dim, hidden, device=device, dtype=dtype)
        self.t_embedder = TimestepEmbedder(hidden, device=device, dtype=dtype, table=table)
        self.c_embedder = TextProjection(in_dim, hidden, device=device, dtype=dtype)
        self.individual_token_refiner = IndividualTokenRefiner(
            hidden, heads, depth, mlp_ratio, qkv_bias, device, dtype
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None,
                backend: str = "sdpa") -> torch.Tensor:
        """x [B, L, Dt] LLM states, t [B] timesteps, mask [B, L] -> [B, L, hidden]."""
        ac = self.autocast
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            m = mask.float().unsqueeze(-1)  # [B, L, 1]
            pooled = (x.float() * m).sum(dim=1) / m.sum(dim=1)  # float32
            pooled = pooled if ac is not None else pooled.to(x.dtype)
        c = self.t_embedder(t) + self.c_embedder(lowered(pooled, ac))  # [B, hidden]
        return self.individual_token_refiner(self.input_embedder(lowered(x, ac)), c, mask, backend)
