"""The one attention entry point of the DiT.

The reference calls flash-attn's varlen kernel on the joint sequence ``[image | text]`` with
``cu_seqlens = [0, N+n_0, N+L, (N+L)+N+n_1, 2(N+L), ...]``: for batch item ``b`` with ``n_b``
valid text tokens, the ``N`` image tokens and the valid text tokens attend only to each other,
and the ``L-n_b`` padding tokens form a second group that attends only among itself. Padding
therefore never influences image or valid text tokens. The DiT drops the padding past the
longest prompt before the blocks, so with one prompt length per batch (always with batch 1)
there is a single group and no mask at all. Every backend computes exactly the reference:

* ``sdpa`` (any device): PyTorch's ``scaled_dot_product_attention``. One group: a plain call,
  so the fastest fused kernels (flash / cuDNN / memory-efficient) apply. Mixed lengths: SDPA
  on each group, items with the same length batched together -- still no mask, because an
  ``S x S`` mask would force the slower kernels and cost ``O(S^2)`` memory.
* ``cudnn``: ``sdpa`` with the cuDNN kernel first in SDPA's priority list (the fastest SDPA
  kernel on Hopper; needs ``sdpa_kernel(..., set_priority=True)``, torch >= 2.6).
* ``flash``: flash-attn 2; ``flash_attn_varlen_func`` with the reference's ``cu_seqlens`` for
  mixed lengths (needs ``flash_attn``; fp16/bf16 only).
* ``flash3``: FlashAttention-3 (``flash_attn_interface``, built from flash-attn's ``hopper/``
  folder; Hopper GPUs, fp16/bf16 only), plain or varlen as ``flash``.
* ``flex``: ``flex_attention`` with a block mask built from the two groups (full blocks are
  skipped, only the blocks straddling a group boundary are masked); compiled on first use.
* ``sage``: SageAttention's 8-bit QK kernels (``sageattn`` / ``sageattn_varlen``; needs
  ``sageattention`` and a CUDA GPU; fp16/bf16 only). Approximate by design, so never picked by
  ``auto``.
* ``auto``: resolved per call from the device, the dtype and the groups (:func:`resolve_backend`):
  on the CPU, or in float32 anywhere, ``sdpa`` (flash-attn kernels compute only fp16/bf16). In
  fp16/bf16 on an accelerator: ``flash3`` on Hopper when installed; else ``flash`` for mixed
  lengths when installed; else ``cudnn`` on Hopper (torch >= 2.6); else ``sdpa`` (per group).
  ``flex`` is never picked: it needs compiling and SDPA's fused kernels are usually faster.
* ``torch``: an explicit masked softmax, for tests only (memory ``O(S^2)``).

A backend that is requested but not installed is an error, never a silent fallback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hyvideo import compat

BACKENDS = ("auto", "sdpa", "cudnn", "flash", "flash3", "flex", "sage", "torch")
HALF_DTYPES = (torch.float16, torch.bfloat16)
HALF_ONLY = ("flash", "flash3", "sage")  # kernels that compute only in fp16/bf16


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


def flash3_available() -> bool:
    return importlib.util.find_spec("flash_attn_interface") is not None


def sage_available() -> bool:
    return importlib.util.find_spec("sageattention") is not None


def flex_available() -> bool:
    return compat.flex_block_mask_problem() is None


def cudnn_priority_available() -> bool:
    """Whether SDPA's kernels can be put in an order (cuDNN first): torch >= 2.6."""
    return compat.sdpa_priority_available()


_INSTALL = {
    "flash": (flash_available, "flash_attn is not installed (pip install flash-attn)"),
    "flash3": (flash3_available, ("flash_attn_interface is not installed (FlashAttention-3: build "
                                  "flash-attn's hopper/ folder; Hopper GPUs only)")),
    "sage": (sage_available, "sageattention is not installed (pip install sageattention; CUDA only)"),
    "flex": (flex_available, compat.needs_torch("flex attention block masks",
                                                compat.FLEX_SEQ_LENGTHS_TORCH)),
    "cudnn": (cudnn_priority_available, compat.needs_torch("SDPA kernel priorities (cudnn first)",
                                                  compat.SDPA_PRIORITY_TORCH)),
}


def check_backend(backend: str) -> str:
    """Validate a backend name once, at model construction; raise if it cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in _INSTALL and not _INSTALL[backend][0]():
        raise RuntimeError(f"attention backend {backend!r} was requested but "
                           f"{_INSTALL[backend][1]}; or use --attention auto")
    return backend


@functools.cache
def is_hopper(device: torch.device) -> bool:
    """Whether ``device`` is an NVIDIA Hopper GPU (sm_90: H100, H200, GH200).

    The capability comes from the device's own backend module (:func:`hyvideo.compat.device_capability`);
    a HIP build has none, so it is never Hopper.
    """
    capability = compat.device_capability(device)
    return capability is not None and capability[0] == 9


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, *, uniform: bool) -> str:
    """The concrete kernel for this device, dtype and grouping (``auto``: see module doc).

    An explicit fp16/bf16-only kernel asked to compute another dtype is an error here, in one
    line, rather than deep inside its extension.
    """
    half = dtype in HALF_DTYPES
    if backend != "auto":
        if backend in HALF_ONLY and not half:
            raise ValueError(f"attention backend {backend!r} computes only in float16/bfloat16, "
                             f"not {dtype}: use --attention sdpa (or auto) with this precision")
        return backend
    if device.type in ("cpu", "meta") or not half:
        return "sdpa"
    hopper = is_hopper(device)
    if hopper and flash3_available():
        return "flash3"
    if not uniform and flash_available():
        return "flash"
    if hopper and cudnn_priority_available():
        return "cudnn"
    return "sdpa"


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
        backend: one of ``BACKENDS`` (module docstring); or a callable ``backend(q, k, v, groups)``
            for grouped attention across processes (sequence parallelism, hyvideo.runtime.parallel).
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
    else:
        first_lens = groups.for_batch(b) if groups is not None else (s,)
        uniform = all(f == s for f in first_lens)
        kernel = resolve_backend(backend, q.device, q.dtype, uniform=uniform)
        out = _grouped(kernel, q, k, v, first_lens, uniform)
    return out.reshape(b, s, h * d)


def _grouped(kernel: str, q, k, v, first_lens: tuple[int, ...], uniform: bool) -> torch.Tensor:
    """Grouped attention with one concrete kernel (see :func:`resolve_backend`)."""
    if kernel == "torch":
        return _reference(q, k, v, first_lens)
    if kernel in ("sdpa", "cudnn") or uniform and kernel == "flex":  # one group: no mask needed
        with _sdpa_order(kernel):
            return _grouped_sdpa(q, k, v, first_lens)
    if kernel == "flash":
        return _flash(q, k, v, first_lens, uniform)
    if kernel == "flash3":
        return _flash3(q, k, v, first_lens, uniform)
    if kernel == "flex":
        return _flex(q, k, v, first_lens)
    if kernel == "sage":
        return _sage(q, k, v, first_lens, uniform)
    raise ValueError(f"unknown attention backend {kernel!r}")


def _sdpa_order(kernel: str) -> contextlib.AbstractContextManager:
    """For ``cudnn``: SDPA tries cuDNN first, then its usual order (it still falls back when
    cuDNN cannot take a shape). For plain ``sdpa``: SDPA's own choice."""
    if kernel != "cudnn":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
             SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


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


def _flash(q, k, v, first_lens: tuple[int, ...], uniform: bool) -> torch.Tensor:
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if uniform:
        return flash_attn_func(q, k, v)
    b, s, h, d = q.shape
    cu, max_len = _varlen_bounds(first_lens, s, q.device)
    out = flash_attn_varlen_func(q.reshape(b * s, h, d), k.reshape(b * s, h, d),
                                 v.reshape(b * s, h, d), cu, cu, max_len, max_len)
    return out.reshape(b, s, h, d)


def _flash3(q, k, v, first_lens: tuple[int, ...], uniform: bool) -> torch.Tensor:
    import flash_attn_interface as fa3

    if uniform:
        out = fa3.flash_attn_func(q, k, v)
    else:
        b, s, h, d = q.shape
        cu, max_len = _varlen_bounds(first_lens, s, q.device)
        out = fa3.flash_attn_varlen_func(q.reshape(b * s, h, d), k.reshape(b * s, h, d),
                                         v.reshape(b * s, h, d), cu, cu, max_len, max_len)
    out = out[0] if isinstance(out, tuple) else out  # some FA3 releases also return the LSE
    return out.reshape(q.shape)


def _sage(q, k, v, first_lens: tuple[int, ...], uniform: bool) -> torch.Tensor:
    from sageattention import sageattn, sageattn_varlen

    if uniform:
        return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)
    b, s, h, d = q.shape
    cu, max_len = _varlen_bounds(first_lens, s, q.device)
    out = sageattn_varlen(q.reshape(b * s, h, d), k.reshape(b * s, h, d),
                          v.reshape(b * s, h, d), cu, cu, max_len, max_len)
    return out.reshape(b, s, h, d)


@functools.lru_cache(maxsize=8)
def _varlen_bounds(first_lens: tuple[int, ...], s: int, device) -> tuple[torch.Tensor, int]:
    """The reference's cu_seqlens over the flattened batch, and the longest group.

    Every block of a forward asks for the same bounds: cached (as :func:`group_block_mask`), so
    the host-to-device copy happens once, not once per block. The kernels only read ``cu``."""
    lens = [n for f in first_lens for n in (f, s - f)]
    return AttentionGroups(first_lens, s).cu_seqlens(device), max(lens)


def _flex(q, k, v, first_lens: tuple[int, ...]) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = group_block_mask(first_lens, q.shape[1], q.device)
    fn = flex_attention if torch.compiler.is_compiling() else _compiled_flex()
    out = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask)
    return out.transpose(1, 2)


@functools.cache
def _compiled_flex():
    # flex_attention is meant to run compiled (eager is a slow reference that materialises the
    # scores); compiled once per process, on first use.
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


FLEX_BLOCK = 128


@functools.lru_cache(maxsize=8)
def group_block_mask(first_lens: tuple[int, ...], seq_len: int, device: torch.device):
    """flex_attention's BlockMask for the two-group structure, built from block counts.

    The same mask serves every block of a forward (hence the cache). Per (query block, key
    block) pair: both wholly in the same group -> a full block (no mask_mod call); wholly in
    different groups -> skipped; a block straddling the boundary -> masked element-wise.
    """
    first = torch.tensor(first_lens, device=device)  # [B]
    nb = -(-seq_len // FLEX_BLOCK)
    start = torch.arange(nb, device=device) * FLEX_BLOCK
    end = torch.clamp(start + FLEX_BLOCK, max=seq_len)
    lead = (end[None] <= first[:, None])  # [B, nb] block wholly in the leading group
    pad = (start[None] >= first[:, None])  # [B, nb] block wholly in the padding group
    full = (lead[:, :, None] & lead[:, None]) | (pad[:, :, None] & pad[:, None])  # [B, nq, nk]
    none = (lead[:, :, None] & pad[:, None]) | (pad[:, :, None] & lead[:, None])
    partial = ~(full | none)

    def as_blocks(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = m.sum(-1, dtype=torch.int32)[:, None]  # [B, 1, nq]
        order = torch.argsort(m.to(torch.int8), dim=-1, descending=True, stable=True)
        return counts, order.to(torch.int32)[:, None]  # indices of the blocks first

    def same_group(b, h, q_idx, kv_idx):
        return (q_idx < first[b]) == (kv_idx < first[b])

    kv_num, kv_idx = as_blocks(partial)
    full_num, full_idx = as_blocks(full)
    return compat.block_mask_from_kv_blocks(kv_num, kv_idx, full_num, full_idx, block_size=FLEX_BLOCK,
                                            mask_mod=same_group, seq_lengths=(seq_len, seq_len))


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
