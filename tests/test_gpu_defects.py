"""The CUDA-path defects found by review (issue 13), each shown on the CPU by imitating the CUDA
contract that broke it: a padded log-sum-exp, pinned-memory rounding, an idle collective's
timeout, a refused bias fusion, the transients of activation quantisation."""

from __future__ import annotations

import pytest
import torch

from hyvideo.dit.attention import AttentionGroups, attention

# ---- 1. sequence-parallel attention: CUDA's efficient kernel pads the LSE to a multiple of 32 --


def _cuda_like_lse(real):
    """``sdpa_with_lse`` as CUDA's memory-efficient kernel returns it: the LSE padded with
    garbage to ceil(S/32)*32 rows."""
    def padded(qt, kt, vt):
        out, lse = real(qt, kt, vt)
        s = lse.shape[-1]
        junk = torch.full((*lse.shape[:-1], -(-s // 32) * 32 - s), 1e4, dtype=lse.dtype)
        return out, torch.cat([lse, junk], dim=-1)
    return padded


def _single_rank_sp_attention():
    from hyvideo.runtime.parallel.attention import SequenceParallelAttention
    from hyvideo.runtime.parallel.config import ParallelConfig
    from hyvideo.runtime.parallel.groups import ParallelState

    return SequenceParallelAttention(ParallelState(ParallelConfig(), 0, 1, None, None, None, None))


def test_sequence_parallel_merge_takes_a_padded_lse(monkeypatch):
    pytest.importorskip("yunchang")
    import hyvideo.runtime.parallel.attention as sp

    monkeypatch.setattr(sp, "sdpa_with_lse", _cuda_like_lse(sp.sdpa_with_lse))
    g = torch.Generator().manual_seed(0)
    n_img, text = 20, 9  # 20 image + 7 valid text = 27 queries: not a multiple of 32
    q, k, v = (torch.randn(2, n_img + text, 4, 8, generator=g) for _ in range(3))
    groups = AttentionGroups((n_img + 7, n_img + 3), n_img + text, n_img)
    got = _single_rank_sp_attention()(q, k, v, groups)
    torch.testing.assert_close(got, attention(q, k, v, groups, backend="torch"), atol=1e-5, rtol=1e-5)


def test_lse_kernel_is_flash_for_half_precision():
    from hyvideo.runtime.parallel.attention import lse_kernel

    gpu = torch.device("cuda", 0)  # only its type is read
    assert lse_kernel(gpu, torch.bfloat16) == "flash"
    assert lse_kernel(gpu, torch.float16) == "flash"
    assert lse_kernel(gpu, torch.float32) == "efficient"  # flash cannot compute float32
    assert lse_kernel(torch.device("cpu"), torch.bfloat16) == "cpu"
