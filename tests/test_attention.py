"""The attention entry point: exact flash-attn varlen semantics, on every backend here."""

from __future__ import annotations

import pytest
import torch

from hyvideo import compat
from hyvideo.dit.attention import (
    AttentionGroups,
    attention,
    check_backend,
    cudnn_priority_available,
    flash3_available,
    flash_available,
    flex_available,
    group_block_mask,
    group_mask,
    resolve_backend,
    sage_available,
)
from hyvideo.dit.model import HYVideoDiffusionTransformer
from tests.dit_utils import random_dit, random_inputs, tiny_config

NEEDS_FLEX = pytest.mark.skipif(not flex_available(), reason=str(compat.flex_block_mask_problem()))


def _qkv(b=3, s=23, h=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, s, h, d, generator=g) for _ in range(3)]


def _explicit(q, k, v, first_lens):
    """Plain masked softmax, written independently of the module."""
    b, s, h, d = q.shape
    out = torch.zeros_like(q)
    for i in range(b):
        for j in range(s):
            group = range(first_lens[i]) if j < first_lens[i] else range(first_lens[i], s)
            idx = torch.tensor(list(group))
            w = torch.softmax(torch.einsum("hd,khd->hk", q[i, j], k[i, idx]) / d**0.5, dim=-1)
            out[i, j] = torch.einsum("hk,khd->hd", w, v[i, idx])
    return out.reshape(b, s, h * d)


@pytest.mark.parametrize("first_lens", [(23, 23, 23), (15, 20, 23), (12, 12, 17)])
@pytest.mark.parametrize("backend", ["sdpa", "torch", "auto", pytest.param("flex", marks=NEEDS_FLEX)])
def test_grouped_attention_matches_explicit_softmax(first_lens, backend):
    q, k, v = _qkv()
    groups = AttentionGroups(first_lens, 23)
    got = attention(q, k, v, groups, backend=backend)
    torch.testing.assert_close(got, _explicit(q, k, v, first_lens), atol=1e-5, rtol=1e-5)


def test_padding_values_never_reach_leading_group():
    q, k, v = _qkv(b=2)
    groups = AttentionGroups((14, 19), 23)
    base = attention(q, k, v, groups)
    k2, v2 = k.clone(), v.clone()
    k2[0, 14:] += 100
    v2[0, 14:] -= 50
    k2[1, 19:] *= -3
    other = attention(q, k2, v2, groups)
    torch.testing.assert_close(other[0, :14], base[0, :14], atol=0, rtol=0)
    torch.testing.assert_close(other[1, :19], base[1, :19], atol=0, rtol=0)


def test_cu_seqlens_are_the_reference_boundaries():
    groups = AttentionGroups.from_text_mask(120, torch.tensor([[1] * 13 + [0] * 3, [1] * 7 + [0] * 9]), 16)
    assert groups.cu_seqlens().tolist() == [0, 133, 136, 263, 272]


def test_group_mask_shape_and_blocks():
    m = group_mask((2, 4), 4)
    assert m.shape == (2, 1, 4, 4)
    assert m[0, 0].tolist() == [[True, True, False, False], [True, True, False, False],
                                [False, False, True, True], [False, False, True, True]]
    assert bool(m[1].all())


def test_explicit_mask_path_matches_softmax():
    q, k, v = _qkv(b=2, s=6)
    mask = torch.rand(2, 1, 6, 6) > 0.4
    mask[..., 0] = True
    a = attention(q, k, v, mask=mask, backend="sdpa")
    b = attention(q, k, v, mask=mask, backend="torch")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown attention backend"):
        check_backend("xformers")


@pytest.mark.skipif(flash_available(), reason="flash_attn is installed here")
def test_missing_flash_is_an_error_not_a_fallback():
    with pytest.raises(RuntimeError, match="flash_attn is not installed"):
        HYVideoDiffusionTransformer(tiny_config(), attention_backend="flash", device="meta")


def test_dit_output_ignores_padded_text_rows():
    cfg = tiny_config()
    model = random_dit(cfg)
    x, t, states, mask, pooled, guidance = random_inputs(cfg)
    with torch.no_grad():
        base = model(x, t, states, mask, pooled, guidance)
        states2 = states.clone()
        states2[mask == 0] = torch.randn_like(states2[mask == 0]) * 100
        other = model(x, t, states2, mask, pooled, guidance)
    torch.testing.assert_close(other, base, atol=0, rtol=0)


@pytest.mark.smoke
def test_dit_sdpa_equals_explicit_backend_on_padded_batch():
    cfg = tiny_config()
    sdpa = random_dit(cfg)
    ref = random_dit(cfg, attention_backend="torch")
    inputs = random_inputs(cfg, batch=3, valid=(10, 4, 1))
    with torch.no_grad():
        torch.testing.assert_close(sdpa(*inputs), ref(*inputs), atol=2e-5, rtol=2e-5)


@NEEDS_FLEX
@pytest.mark.parametrize("first_lens,seq_len", [((300, 260), 300), ((250, 129, 1), 300), ((128, 256), 256)])
def test_flex_block_mask_is_the_group_mask(first_lens, seq_len):
    """Full blocks, skipped blocks and element-wise masked blocks together give exactly the
    reference's two-group mask (block boundaries on, before and after the split)."""
    dense = group_block_mask(first_lens, seq_len, torch.device("cpu")).to_dense()  # block level
    want = group_mask(first_lens, seq_len)  # [B, 1, S, S]
    block = 128
    for b, first in enumerate(first_lens):
        for i in range(dense.shape[2]):
            for j in range(dense.shape[3]):
                tile = want[b, 0, i * block:(i + 1) * block, j * block:(j + 1) * block]
                assert bool(dense[b, 0, i, j]) == bool(tile.any()), (b, i, j)
    q, k, v = _qkv(b=len(first_lens), s=seq_len, h=2, d=16, seed=3)
    got = attention(q, k, v, AttentionGroups(first_lens, seq_len), backend="flex")
    ref = attention(q, k, v, AttentionGroups(first_lens, seq_len), backend="torch")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


# (flash3 installed, flash installed, Hopper, SDPA priorities) -> auto's kernel for
# (mixed lengths bf16, one group bf16, mixed lengths fp16, mixed lengths fp32, one group fp32)
AUTO_TABLE = [
    ((False, False, False, True), ("sdpa", "sdpa", "sdpa", "sdpa", "sdpa")),  # A100, no extras
    ((False, True, False, True), ("flash", "sdpa", "flash", "sdpa", "sdpa")),  # A100 + flash-attn
    ((False, False, True, True), ("cudnn", "cudnn", "cudnn", "sdpa", "sdpa")),  # H100, torch >= 2.6
    ((False, False, True, False), ("sdpa", "sdpa", "sdpa", "sdpa", "sdpa")),  # H100, torch 2.5
    ((False, True, True, True), ("flash", "cudnn", "flash", "sdpa", "sdpa")),  # H100 + flash-attn 2
    ((True, True, True, True), ("flash3", "flash3", "flash3", "sdpa", "sdpa")),  # H100 + FA3
    ((True, True, False, True), ("flash", "sdpa", "flash", "sdpa", "sdpa")),  # FA3 files, not Hopper
]


@pytest.mark.parametrize("have,want", AUTO_TABLE)
def test_auto_picks_by_device_and_dtype(monkeypatch, have, want):
    """flash-attn only in fp16/bf16 (it raises for float32); never flex; Hopper: FA3, else cuDNN."""
    import hyvideo.dit.attention as mod

    fa3, fa2, hopper, priority = have
    monkeypatch.setattr(mod, "flash3_available", lambda: fa3)
    monkeypatch.setattr(mod, "flash_available", lambda: fa2)
    monkeypatch.setattr(mod, "is_hopper", lambda device: hopper and device.type != "cpu")
    monkeypatch.setattr(mod, "cudnn_priority_available", lambda: priority)
    gpu = torch.device("cuda", 0)  # only its type is read: no GPU needed
    got = (resolve_backend("auto", gpu, torch.bfloat16, uniform=False),
           resolve_backend("auto", gpu, torch.bfloat16, uniform=True),
           resolve_backend("auto", gpu, torch.float16, uniform=False),
           resolve_backend("auto", gpu, torch.float32, uniform=False),
           resolve_backend("auto", gpu, torch.float32, uniform=True))
    assert got == want
    cpu = torch.device("cpu")
    assert {resolve_backend("auto", cpu, dt, uniform=u) for dt in (torch.bfloat16, torch.float32)
            for u in (True, False)} == {"sdpa"}


def test_explicit_backend_stays_and_half_only_kernels_refuse_float32():
    cpu = torch.device("cpu")
    assert resolve_backend("flex", cpu, torch.float32, uniform=True) == "flex"
    for backend in ("flash", "flash3", "sage"):
        assert resolve_backend(backend, cpu, torch.bfloat16, uniform=False) == backend
        with pytest.raises(ValueError, match=f"{backend}' computes only in float16/bfloat16"):
            resolve_backend(backend, cpu, torch.float32, uniform=False)


def test_is_hopper_reads_the_capability(monkeypatch):
    import hyvideo.dit.attention as mod

    class FakeBackend:
        capability = (9, 0)

        @classmethod
        def get_device_capability(cls, device):
            return cls.capability

    monkeypatch.setattr(torch, "fakegpu", FakeBackend, raising=False)
    monkeypatch.setattr(torch.version, "hip", None)
    mod.is_hopper.cache_clear()
    dev = torch.device("cpu")
    assert not mod.is_hopper(dev)

    class Dev:  # torch.device cannot name an unknown type: the function reads .type only
        type = "fakegpu"

    assert mod.is_hopper(Dev())
    mod.is_hopper.cache_clear()
    FakeBackend.capability = (8, 0)
    assert not mod.is_hopper(Dev())
    mod.is_hopper.cache_clear()
    FakeBackend.capability = (9, 4)
    monkeypatch.setattr(torch.version, "hip", "6.2")  # MI300 reports gfx 9.4: not Hopper
    assert not mod.is_hopper(Dev())
    mod.is_hopper.cache_clear()


@pytest.mark.parametrize("first_lens", [(23, 23, 23), (15, 20, 23)])
def test_cudnn_order_computes_the_same(first_lens):
    """``cudnn`` is SDPA with a kernel order: on the CPU it must give SDPA's result."""
    q, k, v = _qkv()
    groups = AttentionGroups(first_lens, 23)
    torch.testing.assert_close(attention(q, k, v, groups, backend="cudnn"),
                               _explicit(q, k, v, first_lens), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(sage_available(), reason="sageattention is installed here")
def test_missing_sage_is_an_error_not_a_fallback():
    with pytest.raises(RuntimeError, match="sageattention is not installed"):
        HYVideoDiffusionTransformer(tiny_config(), attention_backend="sage", device="meta")


GPU = compat.accelerator_type() is not None


@pytest.mark.skipif(not GPU, reason="needs an accelerator")
@pytest.mark.parametrize("backend", ["flash", "flash3", "cudnn", "flex", "sage", "auto"])
@pytest.mark.parametrize("first_lens", [(64, 64), (40, 64)])
def test_gpu_backends_match_sdpa(backend, first_lens):
    available = {"flash": flash_available, "flash3": flash3_available, "sage": sage_available,
                 "flex": flex_available, "cudnn": cudnn_priority_available}
    if backend in available and not available[backend]():
        pytest.skip(f"{backend} is not installed")
    device = compat.current_device()
    q, k, v = (t.to(device, torch.float16) for t in _qkv(b=2, s=64, h=2, d=64))
    groups = AttentionGroups(first_lens, 64)
    tol = 3e-2 if backend == "sage" else 2e-3  # sage quantizes q and k to int8
    torch.testing.assert_close(attention(q, k, v, groups, backend=backend),
                               attention(q, k, v, groups, backend="sdpa"), atol=tol, rtol=tol)
