"""Sequence parallelism for the DiT: this rank's share of the image tokens, attention across ranks.

Composition, not patching: the DiT's forward takes a :class:`TokenSplit` (keep this rank's
contiguous chunk of image tokens and RoPE rows after patch embedding; all-gather the final tokens
once per forward), whose ``attention`` (:class:`SequenceParallelAttention`) replaces the backend
of its one attention entry point. Inside attention, image tokens are exchanged with yunchang's
Ulysses all-to-all (``SeqAllToAll4D``) and passed around the ring with yunchang's ``RingComm``;
the partial results are merged by log-sum-exp (yunchang's ``update_out_and_lse``). Text tokens
are replicated on every rank: each rank takes its Ulysses head slice, the valid text keys/values
join the ring's key/value blocks exactly once, and the text queries ride along with the image
queries, so the result is the single-device result (padding never leaks: it keeps its own group).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from hyvideo import compat
from hyvideo.dit.attention import HALF_DTYPES, AttentionGroups, attention
from hyvideo.runtime.parallel.config import ParallelError
from hyvideo.runtime.parallel.groups import ParallelState


class TokenSplit:
    """Keep this rank's contiguous chunk of the image tokens, attend across the ranks of the
    sequence-parallel group, gather the outputs once (what the DiT's ``token_split`` does)."""

    def __init__(self, state: ParallelState):
        self.group = state.sp_group
        self.parts = state.config.sp_degree
        self.index = state.sp_rank
        self.attention = SequenceParallelAttention(state)

    def scatter(self, img: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        """img [B, N, C], rope ([N, D], [N, D]) -> this rank's [B, N/P, C] and rope rows."""
        first = self.first_row(img.shape[1])
        rows = slice(first, first + img.shape[1] // self.parts)
        return img[:, rows], (rope[0][rows], rope[1][rows])

    def first_row(self, num_tokens: int) -> int:
        """Where this rank's chunk starts among ``num_tokens`` image tokens (the DiT's token_replace
        needs it: which of this rank's tokens belong to latent frame 0)."""
        if num_tokens % self.parts:
            raise ParallelError(f"{num_tokens} image tokens cannot be split over {self.parts} ranks")
        return self.index * (num_tokens // self.parts)

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N/P, C] on every rank -> [B, N, C] on every rank (rank order)."""
        return torch.cat(compat.all_gather(tokens, self.group), dim=1)


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Unmasked attention on [B, S, H, D] returning (out [B, S, H, D], lse [B, H, S] float32).

    The LSE is cut to the query length: CUDA's memory-efficient kernel allocates it padded to a
    multiple of 32 along the sequence (the CPU and flash kernels do not pad), and the merge
    combines it with other blocks' LSEs of exactly S rows.
    """
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    out, lse = sdpa_with_lse(qt, kt, vt)
    return out.transpose(1, 2), lse[..., :q.shape[1]].float()


_FLASH_REFUSED: set[tuple] = set()  # (device, dtype, head dim) the flash kernel refused once


def lse_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """Which SDPA kernel returns the LSE here: the CPU's; flash for fp16/bf16 (unpadded LSE, the
    fastest); the memory-efficient one otherwise (float32, which flash cannot compute)."""
    if device.type == "cpu":
        return "cpu"
    return "flash" if dtype in HALF_DTYPES else "efficient"


def sdpa_with_lse(qt: torch.Tensor, kt: torch.Tensor, vt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, H, S, D], lse [B, H, >=S]) from the kernel :func:`lse_kernel` names; a GPU or head
    dim the flash kernel refuses falls back to the memory-efficient kernel (remembered)."""
    kernel = lse_kernel(qt.device, qt.dtype)
    if kernel == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)[:2]
    key = (qt.device, qt.dtype, qt.shape[-1])
    if kernel == "flash" and key not in _FLASH_REFUSED:
        try:
            return torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt)[:2]
        except RuntimeError:  # e.g. a pre-Ampere GPU
            _FLASH_REFUSED.add(key)
    return torch.ops.aten._scaled_dot_product_efficient_attention(qt, kt, vt, None, compute_log_sumexp=True)[:2]


class SequenceParallelAttention:
    """Attention backend for a DiT whose image tokens are split across the SP group."""

    def __init__(self, state: ParallelState):
        self.ulysses = state.ulysses_group
        self.ring = state.ring_group
        self.u_size = state.config.ulysses_degree
        self.r_size = state.config.ring_degree
        self.u_rank = dist.get_rank(self.ulysses) if self.u_size > 1 else 0

    def __call__(self, q, k, v, groups: AttentionGroups) -> torch.Tensor:
        """q, k, v [B, n_local + L, H, D] (local image chunk, then all text) -> [B, n+L, H*D]."""
        b, s, h, d = q.shape
        n_local = groups.num_img
        outs = []
        for i, first in enumerate(groups.for_batch(b)):  # items may differ in valid text length
            sel = slice(i, i + 1)
            outs.append(self._one(q[sel], k[sel], v[sel], n_local, first - n_local))
        return torch.cat(outs).reshape(b, s, h * d)

    def _one(self, q, k, v, n_local: int, n_text: int) -> torch.Tensor:
        from yunchang.comm.all_to_all import SeqAllToAll4D

        h = q.shape[2]
        heads = slice(self.u_rank * h // self.u_size, (self.u_rank + 1) * h // self.u_size)
        img = [t[:, :n_local] for t in (q, k, v)]
        if self.u_size > 1:  # [B, n/P, H, D] -> [B, n/R, H/U, D]
            img = [SeqAllToAll4D.apply(self.ulysses, t.contiguous(), 2, 1, False) for t in img]
        txt = [t[:, n_local:n_local + n_text, heads] for t in (q, k, v)]
        queries = torch.cat([img[0], txt[0]], dim=1)
        out = self._ring(queries, img[1], img[2], txt[1], txt[2]).to(q.dtype)
        img_out, txt_out = out[:, :img[0].shape[1]], out[:, img[0].shape[1]:]
        if self.u_size > 1:
            img_out = SeqAllToAll4D.apply(self.ulysses, img_out.contiguous(), 1, 2, False)
            txt_out = torch.cat(compat.all_gather(txt_out, self.ulysses), dim=2)  # heads in rank order
        pad = q[:, n_local + n_text:]  # padding queries: their own group, as in varlen
        pad_out = [attention(pad, k[:, n_local + n_text:], v[:, n_local + n_text:])
                   .unflatten(-1, (h, -1))] if pad.shape[1] else []
        return torch.cat([img_out, txt_out, *pad_out], dim=1)

    def _ring(self, q, k, v, text_k, text_v) -> torch.Tensor:
        """Queries against every rank's image K/V (passed round the ring) and the text K/V."""
        from yunchang.ring.utils import RingComm, update_out_and_lse

        out, lse = update_out_and_lse(None, None, *attention_with_lse(q, text_k, text_v))
        comm = RingComm(self.ring) if self.r_size > 1 else None
        for step in range(self.r_size):
            if comm is not None and step + 1 < self.r_size:
                next_k, next_v = comm.send_recv(k.contiguous()), comm.send_recv(v.contiguous())
                comm.commit()
            out, lse = update_out_and_lse(out, lse, *attention_with_lse(q, k, v))
            if comm is not None and step + 1 < self.r_size:
                comm.wait()
                k, v = next_k, next_v
        return out
