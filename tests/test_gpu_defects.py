"""The CUDA-path defects found by review (issue 13), each shown on the CPU by imitating the CUDA
contract that broke it: a padded log-sum-exp, pinned-memory rounding, an idle collective's
timeout, a refused bias fusion, the transients of activation quantisation."""

from __future__ import annotations

import itertools

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


# ---- 6. the float8 matmul probe: product, per-token scaling and fused bias probed separately ----

def _fp8_layer(k=64, n=32, dtype=torch.bfloat16):
    from torch import nn

    from hyvideo.dit.fp8 import FP8_DTYPE, FP8_MAX, FP8Linear

    g = torch.Generator().manual_seed(0)
    layer = FP8Linear.from_linear(nn.Linear(k, n))
    w = torch.randn(n, k, generator=g) * 0.05
    scale = w.abs().max() / FP8_MAX
    layer.weight = nn.Parameter((w / scale).to(FP8_DTYPE), requires_grad=False)
    layer.fp8_scale = scale
    layer.bias = nn.Parameter(torch.randn(n, generator=g).to(dtype), requires_grad=False)
    return layer


@pytest.fixture
def scaled_mm_refusing(monkeypatch):
    """torch._scaled_mm that refuses what ``refuse`` names ('bias' or 'rowwise'), as some GPU and
    torch pairs do (a fused bias on some builds; row-wise scales off sm_90 before torch 2.7)."""
    from hyvideo.dit import fp8

    if not fp8.fp8_matmul_supported("cpu", "token", torch.bfloat16):
        pytest.skip(f"torch {torch.__version__} cannot run torch._scaled_mm on this CPU")
    real = torch._scaled_mm

    def install(refuse: str):
        def scaled_mm(a, b, scale_a, scale_b, bias=None, **kw):
            if refuse == "bias" and bias is not None:
                raise RuntimeError("Bias is not supported for this configuration")
            if refuse == "rowwise" and scale_a.numel() > 1:
                raise RuntimeError("Invalid scaling configuration: rowwise scaling needs sm_90")
            return real(a, b, scale_a=scale_a, scale_b=scale_b, bias=bias, **kw)

        monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)
        fp8.clear_probes()

    yield install
    fp8.clear_probes()


def test_a_refused_bias_fusion_keeps_the_float8_product(scaled_mm_refusing):
    from torch import nn

    from hyvideo.dit.fp8 import enable_fp8_matmul, fp8_matmul_report

    scaled_mm_refusing("bias")
    layer = _fp8_layer()
    model = nn.Sequential(layer)
    assert enable_fp8_matmul(model, dtype=torch.bfloat16) == ["0"]  # was [] when probed together
    assert layer.matmul and not layer.fuse_bias
    x = torch.randn(24, 64, dtype=torch.bfloat16)
    got = layer(x)  # the bias is added after the product
    report = fp8_matmul_report(model)
    assert report["float8_layers"] == 1 and report["bias"] == ["added after"]
    assert "bias added after the product" in report["notes"][0]
    layer.fuse_bias = True  # what the forward would have hit
    with pytest.raises(RuntimeError, match="Bias is not supported"):
        layer(x)
    weight_only = torch.nn.functional.linear(x.float(), layer.dequantized_weight(torch.float32), layer.bias.float())
    assert float((got.float() - weight_only).norm() / weight_only.norm()) < 0.06


def test_refused_per_token_scales_fall_back_to_per_tensor(scaled_mm_refusing, monkeypatch):
    from torch import nn

    from hyvideo import compat
    from hyvideo.dit.fp8 import enable_fp8_matmul, fp8_matmul_report, fp8_matmul_summary

    scaled_mm_refusing("rowwise")
    monkeypatch.setattr(compat, "torch_version", lambda: (2, 5))
    layer = _fp8_layer()
    model = nn.Sequential(layer)
    assert enable_fp8_matmul(model, "token", dtype=torch.bfloat16) == ["0"]
    assert layer.activation_scale == "tensor"
    layer(torch.randn(8, 64, dtype=torch.bfloat16))  # runs: one scale for the whole input
    report = fp8_matmul_report(model)
    assert report["activation_scales"] == ["tensor"]
    assert "per-tensor activation scales instead of per-token" in report["notes"][0]
    assert "row-wise only on sm_90" in report["notes"][0]
    assert "per-tensor activation scales instead of per-token" in fp8_matmul_summary(model)


def test_the_fp8_matmul_report_is_in_the_output_metadata():
    from hyvideo.dit.fp8 import FP8_DTYPE, FP8Linear, convert_to_fp8, enable_fp8_matmul, fp8_matmul_supported
    from hyvideo.pipeline.t2v import HunyuanVideoPipeline
    from hyvideo.pipeline.tiny import tiny_components
    from hyvideo.pipeline.variants import load_variant

    parts = tiny_components(torch.device("cpu"), with_text=False)
    variant = load_variant("tiny-random")
    pipe = HunyuanVideoPipeline(parts.dit, parts.vae, None, device=torch.device("cpu"), name=variant.name,
                                defaults=variant.sampling, geometry=variant.geometry)
    assert "fp8_matmul" not in pipe.run_metadata()  # a bf16/fp32 model: nothing to report
    convert_to_fp8(parts.dit)
    layers = [m for m in parts.dit.modules() if isinstance(m, FP8Linear)]
    with torch.no_grad():
        for m in layers:
            m.weight.copy_(torch.randn(m.weight.shape).to(FP8_DTYPE))
    assert "fp8_matmul" not in pipe.run_metadata()  # weight-only FP8, as the official --use-fp8
    enable_fp8_matmul(parts.dit, device="cpu", dtype=torch.float32)
    meta = pipe.run_metadata()["fp8_matmul"]
    assert meta["layers"] == len(layers)
    if fp8_matmul_supported("cpu", "token", torch.float32):
        assert meta["float8_layers"] == len(layers) and meta["weight_only"] == {}
    else:
        assert meta["float8_layers"] == 0 and sum(meta["weight_only"].values()) == len(layers)


# ---- 7. float8 activation quantisation: row chunks, the same numbers, bounded transients -------

def _unfused(x: torch.Tensor, per_token: bool):
    """The formula written in one pass (the quantiser before the fix)."""
    from hyvideo.dit.fp8 import FP8_DTYPE, FP8_MAX

    amax = x.abs().amax(dim=-1 if per_token else (-2, -1), keepdim=True).float()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return torch.div(x, scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_token", [True, False])
def test_chunked_quantisation_equals_the_formula(dtype, per_token):
    from hyvideo.dit.fp8 import quantize_activations

    x = torch.randn(301, 96, generator=torch.Generator().manual_seed(1)).to(dtype) * 7
    x[5] = 0
    want_q, want_s = _unfused(x, per_token)
    got_q, got_s = quantize_activations(x, per_token, chunk_bytes=4 * 96 * 16)  # 16 rows per chunk
    assert torch.equal(got_q.view(torch.uint8), want_q.view(torch.uint8))
    assert torch.equal(got_s, want_s)


def _transient_bytes(fn, x) -> int:
    from tests.memory_tools import LiveBytes

    with LiveBytes() as live:
        live.track(x)  # the input is held already: only what the call adds counts
        before = live.live["cpu"]
        out = fn(x)
    del out
    return live.peak["cpu"] - before


def test_chunked_quantisation_bounds_the_transients():
    from hyvideo.dit.fp8 import quantize_activations

    m, k, chunk = 512, 1024, 64 * 1024 * 4  # 64 rows of float32 quotient per chunk
    x = torch.randn(m, k, dtype=torch.bfloat16)
    result = m * k + 4 * m  # the float8 output and the float32 scales
    bound = result + chunk + 16 * 4 * m  # + one chunk's quotient + a few [M, 1] vectors
    assert _transient_bytes(lambda t: quantize_activations(t, chunk_bytes=chunk), x) <= bound
    assert _transient_bytes(lambda t: _unfused(t, True), x) > bound + 2 * m * k  # |x| and x/scale


# ---- 4. pinned host memory: one arena in power-of-two chunks, not one rounded block each --------

def _full_size_block_bytes(dtype=torch.bfloat16) -> list[int]:
    """Packed bytes of each of the released DiT's 60 blocks (built on the meta device)."""
    from hyvideo.dit.loader import build_dit
    from hyvideo.pipeline.variants import load_variant
    from hyvideo.runtime.offload.arena import aligned
    from hyvideo.runtime.offload.block_swap import transformer_blocks

    dit = build_dit(load_variant("HYVideo-T/2-cfgdistill").dit, dtype=dtype, device="meta")
    return [sum(aligned(t.numel() * t.element_size()) for t in (*b.parameters(), *b.buffers()))
            for b in transformer_blocks(dit)]


def test_pinned_plan_of_the_real_blocks_wastes_little():
    """bf16 DiT blocks: ~24 GiB of weights. Pinned one by one they take ~39 GiB (a 648 MiB double
    block rounds to 1 GiB); in power-of-two chunks under 1.06x the weights."""
    from hyvideo.runtime.offload.arena import plan_chunks, pow2_ceil

    sizes = _full_size_block_bytes()
    weights = sum(sizes)
    per_block = sum(pow2_ceil(s) for s in sizes)
    chunks, places = plan_chunks(sizes, pinned=True)
    assert all(c == pow2_ceil(c) for c in chunks)  # the allocator's rounding is already paid
    assert per_block > 1.5 * weights and sum(chunks) < 1.06 * weights, (per_block, sum(chunks), weights)
    for i, (chunk, offset) in enumerate(places):  # every block inside its chunk, none overlapping
        assert offset + sizes[i] <= chunks[chunk]
    spans = sorted((c, off, off + sizes[i]) for i, (c, off) in enumerate(places))
    assert all(a[0] != b[0] or a[2] <= b[1] for a, b in itertools.pairwise(spans))
    unpinned, _ = plan_chunks(sizes, pinned=False)
    assert unpinned == [weights]


@pytest.fixture
def allocations(monkeypatch):
    """Host allocations the offload engines make, as (bytes, pinned); pinning is not available
    on a CPU-only torch, so the buffers are ordinary ones."""
    from hyvideo.runtime.offload import arena

    made = []

    def allocate(nbytes, pinned):
        made.append((nbytes, pinned))
        return torch.empty(nbytes, dtype=torch.uint8)

    monkeypatch.setattr(arena, "_allocate", allocate)
    return made


def _tiny_dit_and_reference():
    from tests.dit_utils import random_dit, random_inputs, tiny_config

    dit = random_dit(tiny_config(mm_double_blocks_depth=3, mm_single_blocks_depth=4)).eval()
    inputs = random_inputs(dit.config)
    with torch.inference_mode():
        reference = dit(*inputs)
    return dit, inputs, reference


@pytest.mark.parametrize("pinned", [False, True])
def test_block_swap_packs_every_block_into_one_arena(allocations, monkeypatch, pinned):
    from hyvideo import compat
    from hyvideo.runtime.offload.arena import pow2_ceil
    from hyvideo.runtime.offload.block_swap import BlockSwap, SyncCopies, transformer_blocks

    dit, inputs, reference = _tiny_dit_and_reference()
    blocks = transformer_blocks(dit)
    before = [[t.clone() for t in b.state_dict().values()] for b in blocks]
    monkeypatch.setattr(compat, "is_accelerator", lambda device: pinned)  # pin as on a GPU
    swap = BlockSwap(blocks, torch.device("cpu"), 2, copies=SyncCopies())
    sizes = [layout.nbytes for layout in swap.layouts]
    if pinned:  # power-of-two chunks: what the pinned allocator takes is what was asked for
        assert all(p and n == pow2_ceil(n) for n, p in allocations) and len(allocations) <= 3
        assert sum(n for n, _ in allocations) < 2 * sum(sizes)
    else:
        assert allocations == [(sum(sizes), False)]  # one allocation, exactly the packed blocks
    chunks = {c.data_ptr(): c for c in swap.arena.chunks}
    for block, saved in zip(blocks, before):
        now = list(block.state_dict().values())
        assert all(torch.equal(a, b) for a, b in zip(now, saved))  # bit-identical views
        for t in now:  # ... inside the arena
            assert any(p <= t.data_ptr() < p + c.numel() for p, c in chunks.items())
    swap.trace = []
    with swap.active(), torch.inference_mode():
        assert torch.equal(dit(*inputs), reference)
    assert max(len(e[2]) for e in swap.trace if e[0] == "run") == 2  # residency unchanged: K


def test_sequential_pins_one_arena_not_each_tensor(allocations, monkeypatch):
    from hyvideo import compat
    from hyvideo.runtime.offload.arena import aligned, pow2_ceil
    from hyvideo.runtime.offload.modes import SequentialOffload

    dit, inputs, reference = _tiny_dit_and_reference()
    sizes = [t.numel() * t.element_size() for t in (*dit.parameters(), *dit.buffers())]
    monkeypatch.setattr(compat, "is_accelerator", lambda device: True)
    offload = SequentialOffload({"dit": dit}, torch.device("cpu"))
    assert len(allocations) <= 4 and all(p and n == pow2_ceil(n) for n, p in allocations)  # 160 tensors
    assert sum(n for n, _ in allocations) < 1.16 * sum(aligned(s) for s in sizes)  # 1.18x one by one
    chunks = [(c.data_ptr(), c.numel()) for c in offload.arena.chunks]
    assert all(any(p <= t.data_ptr() < p + n for p, n in chunks) for t in dit.parameters())
    with offload.use("dit"), torch.inference_mode():
        assert torch.equal(dit(*inputs), reference)


# ---- 5. the web demo under torchrun: followers idle longer than the collective timeout ----------

def test_followers_survive_an_idle_page_longer_than_the_collective_timeout(tmp_path):
    """The default group's timeout is 6 s here (NCCL's is 10 min); the page idles 8 s twice. (6 s, not
    less: on a loaded 2-core runner the ranks can reach a step's collective seconds apart.)"""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "tests/follow_worker.py", "6", "8", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"runs.{rank}").read_text().splitlines() == ["after a long idle", "and again"]


# ---- on a GPU (scripts/gpu_check.sh runs these; they skip here) ---------------------------------

ACCELERATOR = __import__("hyvideo.compat", fromlist=["accelerator_type"]).accelerator_type()
needs_gpu = pytest.mark.skipif(ACCELERATOR is None, reason="needs an accelerator")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_sequence_parallel_lse_kernels(dtype):
    """The real kernels: fp32 takes the efficient kernel (LSE padded to 32 rows), bf16 flash."""
    pytest.importorskip("yunchang")
    from hyvideo.runtime.parallel.attention import attention_with_lse, sdpa_with_lse

    device = torch.device(ACCELERATOR)
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, 100, 4, 64, device=device, generator=g).to(dtype) for _ in range(3))
    raw = sdpa_with_lse(*(t.transpose(1, 2) for t in (q, k, v)))[1]
    _, lse = attention_with_lse(q, k, v)
    assert lse.shape == (1, 4, 100) and raw.shape[-1] >= 100
    groups = AttentionGroups((70, 70), 100, 60)  # 60 image + 10 valid text + 30 padding
    qq, kk, vv = (t.expand(2, -1, -1, -1).contiguous() for t in (q, k, v))
    got = _single_rank_sp_attention()(qq, kk, vv, groups)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), attention(qq, kk, vv, groups, backend="sdpa").float(), atol=tol, rtol=tol)


@needs_gpu
def test_gpu_block_swap_pins_power_of_two_chunks():
    from hyvideo.runtime.offload import OffloadConfig, offload_components
    from hyvideo.runtime.offload.arena import pow2_ceil

    dit, inputs, reference = _tiny_dit_and_reference()
    device = torch.device(ACCELERATOR)
    offload = offload_components({"dit": dit}, device, OffloadConfig("blocks", 2))
    swap = offload.swaps["dit"]
    assert swap.pin and all(c.is_pinned() and c.numel() == pow2_ceil(c.numel()) for c in swap.arena.chunks)
    with offload.use("dit"), torch.inference_mode():
        got = dit(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs))
    torch.testing.assert_close(got.cpu(), reference, atol=1e-4, rtol=1e-4)
