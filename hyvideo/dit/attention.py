"""The one attention entry point of the DiT.

The reference calls flash-attn's varlen kernel on the joint sequence ``[image | text]`` with
``cu_seqlens = [0, N+n_0, N+L, (N+L)+N+n_1, 2(N+L), ...]``: for batch item ``b`` with ``n_b``
valid text tokens, the ``N`` image tokens and the valid text tokens attend only to each other,
and the ``L-n_b`` padding tokens form a second group that attends only among itself. Padding
therefore never influences image or valid text tokens. Every backend here computes exactly that:

* ``sdpa`` (default, any device): PyTorch's ``scaled_dot_product_attention`` run on each group
  without any mask. Items with the same valid length are batched together, so the fast fused
  kernels (flash / cuDNN / memory-efficient) apply and no ``S x S`` mask is ever built.
* ``flash``: ``flash_attn_varlen_func`` with the reference's ``cu_seqlens`` (needs ``flash_attn``).
* ``torch``: an explicit masked softmax, for tests only (memory ``O(S^2)``).

A backend that is requested but not installed is an error, never a silent fallback.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flash", "torch")


@dataclass(frozen=True)
class AttentionGroups:
    """Per batch item, the length of the leading group (image + valid text tokens).

    The remaining tokens of the ``seq_len``-long joint sequence form the padding group.
    """

    first_lens: tuple[int, ...]
    seq_len: int
    num_img: int = 0  # image tokens at the start of the sequence (on this rank)

    @classmethod
    def from_text_mask(cls, num_img_tokens: int, text_mask: torch.Tensor | None,
                       text_len: int) -> AttentionGroups:
        """``text_mask`` [B, L] with 1 = valid, padding at the end (only its row sums count,
        as in the reference)."""
        seq_len = num_img_tokens + text_len
        if text_mask is None:
            return cls((seq_len,), seq_len, num_img_tokens)
        valid = text_mask.sum(dim=1).tolist()  # one host sync per forward
        return cls(tuple(num_img_tokens + int(n) for n in valid), seq_len, num_img_tokens)

    def cu_seqlens(self, device: torch.device | None = None) -> torch.Tensor:
        """The reference's flash-attn boundaries: [0, f_0, S, S+f_1, 2S, ...] (int32)."""
        bounds = [0]
        for b, first in enumerate(self.first_lens):
            bounds += [b * self.seq_len + first, (b + 1) * self.seq_len]
        return torch.tensor(bounds, dtype=torch.int32, device=device)

    def for_batch(self, batch: int) -> tuple[int, ...]:
        if len(self.first_lens) == batch:
            return self.first_lens
        if len(self.first_lens) == 1:
            return self.first_lens * batch
        raise ValueError(f"attention groups for {len(self.first_lens)} items, batch is {batch}")


def flash_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def check_backend(backend: str) -> str:
    """Validate a backend name once, at model construction; raise if it cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend == "flash" and not flash_available():
        raise RuntimeError(
            "attention backend 'flash' was requested but flash_attn is not installed "
            "(pip install flash-attn), or use --attention sdpa"
        )
    return backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              groups: AttentionGroups | None = None, *, mask: torch.Tensor | None = None,
              backend: str | Callable = "sdpa") -> torch.Tensor:
    """Joint attention, either grouped (the DiT blocks) or with an explicit mask (the refiner).

    Args:
        q, k, v: [B, S, H, D]; for the DiT blocks the image tokens come first, then the text.
        groups: which tokens attend to which (see module docstring).
        mask: boolean [B, 1, S, S], True = may attend. The token refiner's small L x L
            attention uses it; it always runs through SDPA (``torch`` backend: explicit softmax),
            as the reference runs it in plain torch whatever the DiT's backend.
        backend: ``sdpa``, ``flash`` or ``torch``; or a callable ``backend(q, k, v, groups)``
            for grouped attention across processes (sequence parallelism, hyvideo.parallel).
    Returns:
        [B, S, H*D]
    """
    b, s, h, d = q.shape
    if callable(backend):
        if mask is not None or groups is None:  # the refiner's local attention stays local
            return attention(q, k, v, groups, mask=mask)
        return backend(q, k, v, groups)
    if mask is not None:
        if backend == "torch":
            out = _softmax_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
            ).transpose(1, 2)
    elif groups is None:
        out = _sdpa(q, k, v) if backend != "torch" else _reference(q, k, v, (s,))
    elif backend == "sdpa":
        out = _grouped_sdpa(q, k, v, groups.for_batch(b))
    elif backend == "flash":
        out = _flash_varlen(q, k, v, groups.for_batch(b))
    elif backend == "torch":
        out = _reference(q, k, v, groups.for_batch(b))
    else:
        raise ValueError(f"unknown attention backend {backend!r}")
    return out.reshape(b, s, h * d)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # [B, S, H, D] -> [B, H, S, D] for SDPA and back.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _grouped_sdpa(q, k, v, first_lens: tuple[int, ...]) -> torch.Tensor:
    s = q.shape[1]
    if all(f == s for f in first_lens):
        return _sdpa(q, k, v)
    out = torch.empty_like(q)
    # Batch items that share a split point run together: one call for the leading groups and
    # one for the padding groups, each without a mask.
    for first in sorted(set(first_lens)):
        idx = [i for i, f in enumerate(first_lens) if f == first]
        sel = slice(idx[0], idx[0] + 1) if len(idx) == 1 else torch.tensor(idx, device=q.device)
        qs, ks, vs = q[sel], k[sel], v[sel]
        lead = _sdpa(qs[:, :first], ks[:, :first], vs[:, :first])
        if first < s:
            pad = _sdpa(qs[:, first:], ks[:, first:], vs[:, first:])
            lead = torch.cat([lead, pad], dim=1)
        out[sel] = lead
    return out


def _flash_varlen(q, k, v, first_lens: tuple[int, ...]) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    b, s, h, d = q.shape
    groups = AttentionGroups(first_lens, s)
    cu = groups.cu_seqlens(q.device)
    max_len = int((cu[1:] - cu[:-1]).max())
    out = flash_attn_varlen_func(
        q.reshape(b * s, h, d), k.reshape(b * s, h, d), v.reshape(b * s, h, d),
        cu, cu, max_len, max_len,
    )
    return out.reshape(b, s, h, d)


def group_mask(first_lens: tuple[int, ...], seq_len: int, device=None) -> torch.Tensor:
    """Boolean [B, 1, S, S]: True where query i may attend to key j (same group)."""
    pos = torch.arange(seq_len, device=device)
    first = torch.tensor(first_lens, device=device).view(-1, 1)
    lead = pos.view(1, -1) < first  # [B, S]
    return (lead[:, :, None] == lead[:, None, :]).unsqueeze(1)


def _reference(q, k, v, first_lens: tuple[int, ...]) -> torch.Tensor:
    """Explicit softmax(QK^T/sqrt(D)) V with the group mask; for tests."""
    return _softmax_attention(q, k, v, group_mask(first_lens, q.shape[1], q.device))


def _softmax_attention(q, k, v, mask: torch.Tensor) -> torch.Tensor:
    d = q.shape[-1]
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / math.sqrt(d)
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v.float())
    return out.to(q.dtype)
