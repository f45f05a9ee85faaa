"""The official bf16 precision placement, op by op.

The official code runs the DiT under ``torch.autocast("cuda", bfloat16)``: LayerNorm on CUDA
autocast's float32 list (its output stays float32 through ``modulate``), linears on its
lower-precision list (the final layer's float32 weight cast to bf16 too), SDPA in bf16,
``addcmul`` promoted to its widest input. Ours gives the same dtypes with explicit casts, so that
every device (and this CPU) computes what CUDA autocast would. Checked here with a dispatch mode
that records every op's input and output dtypes (``scripts/memory_plan.py``'s ``CudaAutocast``,
whose op lists are the documented CUDA ones):

* with the placement on, no op is one CUDA autocast would change (a fixed point), and
* the trace equals the one of the same block with the placement off run under emulated CUDA
  autocast -- i.e. under autocast, our modules compute exactly what they compute with the
  placement, op by op (the explicit casts themselves aside).
"""

from __future__ import annotations

import pytest
import torch

from tests.dit_utils import random_dit, tiny_config
from tests.memory_tools import memory_plan

BF16 = torch.bfloat16
IGNORED = {"_to_copy", "to", "empty_like", "empty", "detach", "lift_fresh"}  # the casts themselves, buffers
NORMS = ("layer_norm", "native_layer_norm")  # as the dispatch mode sees them, decomposed or not
MATMULS = ("linear", "addmm", "mm")


def bf16_dit():
    """A tiny DiT as the loader gives it in bf16: every weight bf16 but final_layer.linear (float32,
    as the reference builds it), with the official placement on."""
    dit = random_dit(tiny_config()).to(BF16)
    dit.final_layer.linear.float()
    dit.set_autocast(True)
    return dit


def trace(fn, *, emulate: bool) -> list[tuple]:
    """(op, input dtypes, output dtypes) of every op ``fn`` runs, views and casts left out;
    ``emulate``: under CUDA autocast (bf16), emulated."""
    with memory_plan.CudaAutocast(BF16, cast=emulate) as mode, torch.inference_mode():
        fn()
    out = []
    for func, ins, outs, *_ in mode.trace:
        name = func.overloadpacket.__name__
        if name in IGNORED or func.is_view:
            continue
        # A promoted op computes in its widest dtype whether its inputs were cast first (autocast)
        # or promoted inside the kernel (type promotion): compare what it produces.
        promoted = name in memory_plan.AUTOCAST_PROMOTE
        out.append((name, None if promoted else tuple(ins), tuple(outs)))
    return out


def block_inputs(dit, kind: str):
    from hyvideo.dit.attention import AttentionGroups

    g = torch.Generator().manual_seed(0)
    c = dit.config
    text = 6
    vec = torch.randn(1, c.hidden_size, generator=g).to(BF16)
    rope = dit.rope((2, 4, 6))  # latent T, H, W -> 2 x 2 x 3 = 12 image tokens
    n = rope[0].shape[0]
    groups = AttentionGroups((n + text,), n + text, n)
    if kind == "double":
        img = torch.randn(1, n, c.hidden_size, generator=g).to(BF16)
        txt = torch.randn(1, text, c.hidden_size, generator=g).to(BF16)
        return (img, txt, vec, rope, groups, "sdpa")
    x = torch.randn(1, n + text, c.hidden_size, generator=g).to(BF16)
    return (x, vec, n, rope, groups, "sdpa")


def run_block(dit, kind: str, placement: bool):
    block = dit.double_blocks[0] if kind == "double" else dit.single_blocks[0]
    dit.set_autocast(placement)
    args = block_inputs(dit, kind)
    return lambda: block(*args)


@pytest.mark.parametrize("kind", ["double", "single"])
def test_block_dtypes_are_cuda_autocast_s(kind):
    dit = bf16_dit()
    ours = trace(run_block(dit, kind, placement=True), emulate=False)
    autocast = trace(run_block(dit, kind, placement=False), emulate=True)
    assert any(outs == (torch.float32,) for _, _, outs in ours)  # the norms and modulate
    assert ours == autocast
    names = [name for name, *_ in ours]
    assert sum(names.count(n) for n in NORMS) == (4 if kind == "double" else 1)


@pytest.mark.parametrize("kind", ["double", "single"])
def test_the_placement_is_a_fixed_point_of_cuda_autocast(kind):
    """No op of ours is one CUDA autocast would cast: matmuls and SDPA get bf16, LayerNorm and
    the float32-list ops (rsqrt, pow in the RMS norm) get float32."""
    dit = bf16_dit()
    step = run_block(dit, kind, placement=True)
    with memory_plan.CudaAutocast(BF16, cast=False) as mode, torch.inference_mode():
        step()
    checked = 0
    for func, ins, outs, *_ in mode.trace:
        target = memory_plan.autocast_rule(func, (), {}, BF16)
        name = func.overloadpacket.__name__
        if target is None or name in memory_plan.AUTOCAST_PROMOTE:
            continue
        floats = [d for d in ins if d.is_floating_point]
        assert all(d == target for d in floats), (name, ins, target)
        checked += 1
    assert checked >= 5  # the linears, the norm(s), attention


def users(ops, i: int) -> list[int]:
    """The ops that read op ``i``'s first output."""
    return [j for j in range(i + 1, len(ops)) if ops[i][4][0] in ops[j][3]]


@pytest.mark.parametrize("kind", ["double", "single"])
def test_layer_norm_output_stays_float32_through_modulate_into_a_bf16_linear(kind):
    dit = bf16_dit()
    step = run_block(dit, kind, placement=True)
    with memory_plan.CudaAutocast(BF16, cast=False, keep=True) as mode, torch.inference_mode():
        step()
    ops = mode.trace
    name = [op[0].overloadpacket.__name__ for op in ops]
    norms = [i for i in range(len(ops)) if name[i] in NORMS]
    assert len(norms) == (4 if kind == "double" else 1)
    for i in norms:
        assert ops[i][2][0] == torch.float32  # the normalised tokens: float32
        (modulate,) = users(ops, i)  # the modulation reads them and writes float32
        assert name[modulate] == "addcmul" and ops[modulate][2] == [torch.float32]
        (cast,) = users(ops, modulate)  # ... which a linear reads only through one cast to bf16
        assert name[cast] in ("_to_copy", "to") and ops[cast][2] == [BF16]
        (linear,) = users(ops, cast)
        assert name[linear] in MATMULS and ops[linear][1][0] == BF16 and ops[linear][2] == [BF16]


def test_final_layer_linear_runs_in_bf16():
    """The reference keeps final_layer.linear's weight in float32; autocast runs it in bf16."""
    dit = bf16_dit()
    x = torch.randn(1, 12, dit.config.hidden_size).to(BF16)
    vec = torch.randn(1, dit.config.hidden_size).to(BF16)
    with memory_plan.CudaAutocast(BF16, cast=False) as mode, torch.inference_mode():
        out = dit.final_layer(x, vec)
    mms = [(ins, outs) for func, ins, outs, *_ in mode.trace if func.overloadpacket.__name__ in MATMULS]
    assert mms[-1] == ([BF16, BF16, BF16], [BF16]) and out.dtype == BF16
    assert dit.final_layer.linear.weight.dtype == torch.float32  # the weight itself is kept
    dit.set_autocast(False)  # --disable-autocast: the float32 weight computes in float32
    with torch.inference_mode():
        assert dit.final_layer(x, vec).dtype == torch.float32


def test_disable_autocast_keeps_every_activation_in_the_model_dtype():
    """``--disable-autocast``: no float32 activations in a block (as the reference without
    autocast): LayerNorm and modulate in bf16."""
    dit = bf16_dit()
    step = run_block(dit, "single", placement=False)
    with memory_plan.CudaAutocast(BF16, cast=False) as mode, torch.inference_mode():
        step()
    norms = [outs for func, ins, outs, *_ in mode.trace if func.overloadpacket.__name__ in NORMS]
    assert norms and all(outs[0] == BF16 for outs in norms)


def test_the_whole_bf16_forward_runs_and_fp32_is_untouched():
    from tests.dit_utils import random_inputs

    dit = bf16_dit()
    x, t, states, mask, pooled, guidance = random_inputs(dit.config, batch=1, valid=(7,))
    with torch.inference_mode():
        on = dit(x, t, states.to(torch.float16), mask, pooled.to(torch.float16), guidance)
        dit.set_autocast(False)
        off = dit(x, t, states.to(torch.float16), mask, pooled.to(torch.float16), guidance)
    assert on.dtype == BF16 and off.dtype == torch.float32
    assert (on.float() - off).abs().max() < 0.1 * off.abs().max()  # the same model, two placements
    fp32 = random_dit(tiny_config())
    with torch.inference_mode():
        a = fp32(x, t, states, mask, pooled, guidance)
        fp32.set_autocast(True)  # autocast to the model's own precision: nothing for float32
        assert fp32.autocast is None
        assert torch.equal(fp32(x, t, states, mask, pooled, guidance), a)


def test_disable_autocast_flag_reaches_the_dit_and_the_vae(monkeypatch):
    """``--disable-autocast`` (official flag): LoadOptions.autocast False -> the DiT's placement
    off and the VAE decoded without autocast; by default the VAE decodes under autocast in its
    own precision (float16 in the release)."""
    from hyvideo import compat
    from hyvideo.apps import cli
    from hyvideo.pipeline.options import LoadOptions
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline

    parser = cli.OneLineParser()
    cli.add_model_args(parser, ["tiny-random"])
    cli.add_runtime_args(parser)
    assert cli.load_options(parser.parse_args(["--model", "tiny-random"])).autocast is True
    assert cli.load_options(parser.parse_args(["--model", "tiny-random", "--disable-autocast"])).autocast is False
    regions = []
    real = compat.autocast

    def record(device, dtype, enabled=True):
        regions.append((dtype, enabled))
        return real(device, dtype, enabled)

    monkeypatch.setattr(compat, "autocast", record)
    for autocast in (True, False):
        pipe = load_pipeline(LoadOptions(model="tiny-random", autocast=autocast),
                             RuntimeOptions(device=torch.device("cpu")))
        pipe.vae.half()  # the release's VAE precision
        pipe.decode(torch.zeros(1, 16, 2, 4, 4), show_progress=False)
        assert regions[-1] == (torch.float16, autocast)
        pipe.dit.to(BF16)
        pipe.dit.set_autocast(autocast)
        assert pipe.dit.autocast == (BF16 if autocast else None)


def test_autocast_region_is_a_no_op_for_float32_and_meta():
    from hyvideo import compat

    assert not torch.is_autocast_enabled("cpu")
    with compat.autocast("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with compat.autocast("meta", BF16):  # no autocast there: nothing to enter
        pass
    with compat.autocast("cpu", BF16):
        assert torch.is_autocast_enabled("cpu")
