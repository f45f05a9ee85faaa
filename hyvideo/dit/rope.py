"""3-D rotary position embedding, computed from the latent grid.

For each axis ``a`` (t, h, w) with rotary dim ``d_a`` and integer position ``p``:
``f_j = theta^(-2j/d_a)``, ``angle = p * f_j``; each angle fills two adjacent columns
(interleaved pairs) and the axis blocks are concatenated t | h | w. Token ``n`` of the
t-major grid is ``(t*H' + h)*W' + w``. Everything is float32, as in the reference.
"""

from __future__ import annotations

import torch


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    # Same op order as the reference so the float32 tables match bit for bit in practice.
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))
    return torch.outer(positions, freqs)  # [P, dim/2]


def rope_tables(grid_thw: tuple[int, int, int], rope_dim_list: tuple[int, ...],
                theta: float = 256.0, device: torch.device | str | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each [T'*H'*W', head_dim] float32, for a token grid (T', H', W')."""
    axes = [torch.arange(n, dtype=torch.float32) for n in grid_thw]
    grid = torch.meshgrid(*axes, indexing="ij")  # 3 x [T', H', W']
    angles = [
        _axis_angles(g.reshape(-1), d, theta).repeat_interleave(2, dim=1)
        for g, d in zip(grid, rope_dim_list, strict=True)
    ]
    angle = torch.cat(angles, dim=1)  # [N, head_dim]
    return angle.cos().to(device), angle.sin().to(device)


ROPE_CHUNK_TOKENS = 4096  # tokens rotated at a time: bounds the float32 temporaries


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs: out[2i] = x[2i]cos - x[2i+1]sin, out[2i+1] = x[2i+1]cos + x[2i]sin.

    x: [B, N, H, D]; cos, sin: [N, D]. Computed in float32, returned in x's dtype (a new tensor).
    Eager, ``ROPE_CHUNK_TOKENS`` tokens at a time: the float32 copies of a whole 720p q or k
    would be 1.4 GiB each, three at once (see scripts/memory_plan.py); a compiled graph fuses
    them away, so it rotates in one piece.
    """
    if torch.compiler.is_compiling():
        return _rotate(x, cos, sin)
    return apply_rope_(torch.empty_like(x), cos, sin, source=x)


def apply_rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *,
                source: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`apply_rope` written into ``x`` (from ``source``, default ``x`` itself); returns ``x``."""
    source = x if source is None else source
    if torch.compiler.is_compiling():
        # One piece, and no Python loop over the token count: range() would make the symbolic
        # count concrete, and the compiled blocks would recompile for every resolution.
        return x.copy_(_rotate(source, cos, sin))
    for start in range(0, source.shape[1], ROPE_CHUNK_TOKENS):
        rows = slice(start, start + ROPE_CHUNK_TOKENS)
        x[:, rows] = _rotate(source[:, rows], cos[rows], sin[rows])
    return x


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Two float32 temporaries (the rotated copy and the result) besides the float32 input.
    xf = x.float()
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.empty_like(xf)
    rotated[..., 0::2] = xf[..., 1::2]
    rotated[..., 0::2].neg_()
    rotated[..., 1::2] = xf[..., 0::2]
    out = xf * cos
    out.addcmul_(rotated, sin)
    return out.to(x.dtype)
