"""Tiny DiT configurations and inputs that keep the real structure."""

from __future__ import annotations

import dataclasses

import torch

from hyvideo.dit.config import DiTConfig
from hyvideo.dit.loader import build_dit


def tiny_config(**overrides) -> DiTConfig:
    base = DiTConfig(hidden_size=64, heads_num=4, mm_double_blocks_depth=2, mm_single_blocks_depth=2,
                     text_states_dim=48, text_states_dim_2=32, rope_dim_list=(4, 6, 6),
                     guidance_embed=True)
    return dataclasses.replace(base, **overrides)


def random_dit(config: DiTConfig | None = None, seed: int = 0, **kw):
    """A float32 DiT on CPU with random, non-degenerate weights (norm weights too)."""
    torch.manual_seed(seed)
    model = build_dit(config or tiny_config(), dtype=torch.float32, device="cpu", **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.2 if p.ndim > 1 else 0.1))
    return model


def random_inputs(config: DiTConfig, batch=2, thw=(3, 4, 6), text_len=10, valid=(7, 3), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, *thw, generator=g)
    t = torch.rand(batch, generator=g) * 1000
    states = torch.randn(batch, text_len, config.text_states_dim, generator=g)
    mask = torch.zeros(batch, text_len, dtype=torch.int64)
    for b, n in enumerate(valid[:batch]):
        mask[b, :n] = 1
    pooled = torch.randn(batch, config.text_states_dim_2, generator=g)
    guidance = torch.full((batch,), 6000.0) if config.guidance_embed else None
    return x, t, states, mask, pooled, guidance
