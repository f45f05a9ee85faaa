"""True float8 matrix products in FP8Linear (``--fp8-matmul``): exact semantics against an explicit
float64 reference, accuracy against the weight-only path and the conformance case, fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyvideo.dit import fp8
from hyvideo.dit.fp8 import (FP8_DTYPE, FP8_MAX, FP8Linear, disable_fp8_matmul, enable_fp8_matmul,
                             fp8_matmul_summary, fp8_matmul_supported, quantize_activations)

needs_scaled_mm = pytest.mark.skipif(
    not fp8_matmul_supported("cpu", "token", torch.float32)
    or not fp8_matmul_supported("cpu", "tensor", torch.float32),
    reason=f"torch {torch.__version__} cannot run torch._scaled_mm on this CPU",
)


def fp8_linear(k: int, n: int, bias: bool = True, seed: int = 0) -> FP8Linear:
    """A Linear quantized as the official tool does: float8 weight, scale = max|W| / 448."""
    g = torch.Generator().manual_seed(seed)
    dense = nn.Linear(k, n, bias=bias)
    layer = FP8Linear.from_linear(dense)
    w = torch.randn(n, k, generator=g) * 0.05
    scale = w.abs().max() / FP8_MAX
    layer.weight = nn.Parameter((w / scale).to(FP8_DTYPE), requires_grad=False)
    layer.fp8_scale = scale
    if bias:
        layer.bias = nn.Parameter(torch.randn(n, generator=g), requires_grad=False)
    return layer


def reference(layer: FP8Linear, x: torch.Tensor, per_token: bool) -> torch.Tensor:
    """What the float8 product computes, written out from the formulas: the dynamic scale and
    the rounding to e4m3 in float32 (the scale's dtype in torch._scaled_mm), the product and the
    bias in float64."""
    x32 = x.float().reshape(-1, x.shape[-1])
    amax = x32.abs().amax(dim=-1, keepdim=True) if per_token else x32.abs().amax()
    s = torch.where(amax > 0, amax / 448, torch.ones_like(amax))
    xq = (x32 / s).clamp(-448, 448).to(FP8_DTYPE).double() * s.double()
    y = xq @ (layer.weight.double() * layer.fp8_scale.double()).T
    if layer.bias is not None:
        y = y + layer.bias.double()
    return y.reshape(*x.shape[:-1], -1)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


# --- the Linear ---------------------------------------------------------------------------------

@needs_scaled_mm
@pytest.mark.parametrize("scale", ["token", "tensor"])
def test_matmul_is_the_float8_product_and_close_to_weight_only(scale):
    layer = fp8_linear(96, 48)
    x = torch.randn(40, 96)
    weight_only = layer(x)
    assert enable_fp8_matmul(nn.Sequential(layer), scale) == ["0"]
    got = layer(x)
    assert got.dtype == torch.float32 and got.shape == (40, 48)
    # Exactly the float8 product (up to float32 accumulation), ...
    torch.testing.assert_close(got.double(), reference(layer, x, scale == "token"), atol=1e-5, rtol=1e-5)
    # ... which is not the weight-only result: e4m3 keeps 3 mantissa bits, so each activation
    # is off by up to 1/16 relative (~3.6% rms); a dot product averages that to a few percent.
    err = rel_err(got, weight_only)
    assert 0.005 < err < 0.06, err


@needs_scaled_mm
def test_bf16_matmul_fuses_the_bias_and_stays_close():
    layer = fp8_linear(64, 32)
    layer.bias = nn.Parameter(layer.bias.to(torch.bfloat16), requires_grad=False)
    x = torch.randn(24, 64, dtype=torch.bfloat16)
    enable_fp8_matmul(nn.Sequential(layer), dtype=torch.bfloat16)
    got = layer(x)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, reference(layer, x, True)) < 1e-2  # bf16 output rounding (2^-9) and bias
    assert rel_err(got, F.linear(x.float(), layer.dequantized_weight(torch.float32), layer.bias.float())) < 0.06


@needs_scaled_mm
def test_per_token_scales_keep_small_rows_accurate():
    """Rows spanning 6 decades: one per-tensor scale flushes the small rows to zero."""
    layer = fp8_linear(64, 32, bias=False)
    x = torch.randn(12, 64) * torch.logspace(-6, 0, 12)[:, None]
    exact = F.linear(x.double(), layer.dequantized_weight(torch.float64))
    errors = {}
    for scale in ("token", "tensor"):
        enable_fp8_matmul(nn.Sequential(layer), scale)
        errors[scale] = max(rel_err(r, e) for r, e in zip(layer(x), exact, strict=True))  # worst row
    assert errors["token"] < 0.1, errors
    assert errors["tensor"] > 0.5, errors  # the smallest rows are lost entirely


@needs_scaled_mm
def test_3d_input_is_flattened_to_tokens():
    layer = fp8_linear(32, 16)
    x = torch.randn(3, 7, 32)
    enable_fp8_matmul(nn.Sequential(layer))
    got = layer(x)
    assert got.shape == (3, 7, 16)
    torch.testing.assert_close(got, layer(x.reshape(21, 32)).reshape(3, 7, 16), atol=0, rtol=0)
    torch.testing.assert_close(got.double(), reference(layer, x, True), atol=1e-5, rtol=1e-5)
    assert layer(x[:, :0]).shape == (3, 0, 16)  # no tokens: no scale to take, an empty result


@needs_scaled_mm
@pytest.mark.parametrize("scale", ["token", "tensor"])
def test_zero_input_gives_the_bias_not_nan(scale):
    layer = fp8_linear(32, 16)
    enable_fp8_matmul(nn.Sequential(layer), scale)
    torch.testing.assert_close(layer(torch.zeros(4, 32)), layer.bias.expand(4, 16), atol=0, rtol=0)
    x = torch.randn(4, 32)
    x[1] = 0  # a zero token among others
    got = layer(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[1], layer.bias, atol=0, rtol=0)


@needs_scaled_mm
def test_the_scale_is_read_at_call_time():
    """A later set_fp8_scales / LoRA requantization changes the scale: the product follows it."""
    layer = fp8_linear(32, 16, bias=False)
    enable_fp8_matmul(nn.Sequential(layer))
    x = torch.randn(5, 32)
    before = layer(x)
    layer.fp8_scale = layer.fp8_scale * 2
    torch.testing.assert_close(layer(x), 2 * before)


# --- choosing the mode ----------------------------------------------------------------------------

@needs_scaled_mm
def test_ineligible_shapes_fall_back_once_and_are_reported():
    model = nn.Sequential(fp8_linear(32, 16), fp8_linear(20, 16), fp8_linear(32, 40))
    x = torch.randn(6, 20)
    weight_only = model[1](x)
    assert enable_fp8_matmul(model) == ["0"]
    assert [m.matmul for m in model] == [True, False, False]
    assert "multiples of 16" in model[1].matmul_fallback and "N=40" in model[2].matmul_fallback
    torch.testing.assert_close(model[1](x), weight_only, atol=0, rtol=0)  # the weight-only path
    summary = fp8_matmul_summary(model)
    assert summary.startswith("fp8 matmul in 1 of 3 FP8 layers (per-token activation scales)")
    assert "weight-only in 1 (K=20, N=16" in summary and "e.g. 2" in summary
    disable_fp8_matmul(model)
    assert not any(m.matmul for m in model) and fp8_matmul_summary(model).startswith("fp8 matmul in 0 of 3")


def test_without_scaled_mm_every_layer_keeps_weight_only(monkeypatch):
    monkeypatch.delattr(torch, "_scaled_mm")
    fp8.clear_probes()
    try:
        model = nn.Sequential(fp8_linear(32, 16))
        assert not fp8_matmul_supported("cpu")
        assert enable_fp8_matmul(model) == []
        assert "has no torch._scaled_mm" in model[0].matmul_fallback
        x = torch.randn(3, 32)
        torch.testing.assert_close(model(x), F.linear(x, model[0].dequantized_weight(torch.float32),
                                                      model[0].bias), atol=0, rtol=0)
    finally:
        fp8.clear_probes()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_a_device_torch_cannot_reach_is_unsupported_not_a_crash():
    layer = fp8_linear(32, 16)
    assert not fp8_matmul_supported("cuda")
    assert enable_fp8_matmul(nn.Sequential(layer), device="cuda") == []
    assert layer.matmul_fallback.startswith("torch._scaled_mm does not run on cuda with per-t")


def test_bad_requests_are_clear_errors():
    with pytest.raises(ValueError, match="activation_scale must be one of token, tensor"):
        enable_fp8_matmul(nn.Sequential(fp8_linear(32, 16)), "channel")
    with pytest.raises(ValueError, match="needs FP8 weights: load the official FP8 checkpoint"):
        enable_fp8_matmul(nn.Sequential(nn.Linear(32, 16)))
    with torch.device("meta"):
        meta = nn.Sequential(FP8Linear.from_linear(nn.Linear(32, 16)))
    with pytest.raises(ValueError, match="after the weights are loaded"):
        enable_fp8_matmul(meta)


@needs_scaled_mm
def test_unsupported_compute_dtype_is_a_clear_error():
    layer = fp8_linear(32, 16)
    enable_fp8_matmul(nn.Sequential(layer))
    with pytest.raises(RuntimeError, match="computes in bf16, fp16 or fp32, not torch.float64"):
        layer(torch.randn(2, 32, dtype=torch.float64))


def test_quantize_activations_range_and_scales():
    x = torch.randn(5, 64) * 10
    x[2] = 0
    q, s = quantize_activations(x)
    assert q.dtype == FP8_DTYPE and s.shape == (5, 1) and s[2] == 1
    assert torch.equal(q.float().abs().amax(dim=-1)[[0, 1, 3, 4]], torch.full((4,), FP8_MAX))
    assert ((q.float() * s - x).abs() <= x.abs() / 16 + 1e-6).all()  # half a step of 3 mantissa bits
    q, s = quantize_activations(x.bfloat16(), per_token=False)
    assert s.shape == (1, 1) and s.dtype == torch.float32 and q.float().abs().max() == FP8_MAX


# --- the DiT on the conformance FP8 case ----------------------------------------------------------

def _fp8_case(conformance):
    from hyvideo.conformance import Case
    from hyvideo.conformance.dit_kinds import dit_config
    from hyvideo.dit.loader import load_dit

    case = Case.open(conformance / "cases" / "fp8_tiny_cfgdistill")
    config = dit_config(case.config, case.settings)
    return case, lambda dtype: load_dit(case.path / "mp_rank_00_model_states_fp8.pt", config, dtype=dtype)


def _run(model, case, dtype, x=None):
    with torch.inference_mode():
        return model((case["x"] if x is None else x).to(dtype), case["t"], case["text_states"].to(dtype),
                     case["text_mask"], case["text_states_2"].to(dtype), case["guidance"]).float()


@needs_scaled_mm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_dit_with_fp8_matmul_on_the_conformance_case(conformance, dtype):
    """Measured (CPU, torch 2.13): max|dev| 0.19 (fp32) / 0.23 (bf16) with per-token scales, 0.20 /
    0.20 per tensor, on outputs up to 4.9; relative (L2) deviation 3.1-3.7%. Float8 activations
    carry ~3.6% rms rounding into every product, so the bound is ~3x that: max 0.6, L2 10%. The
    same model on a different latent deviates by ~6, so a wiring bug cannot hide under the bound."""
    case, load = _fp8_case(conformance)
    expected = case["out.x"]
    model = load(dtype)
    other = _run(model, case, dtype, torch.randn(case["x"].shape, generator=torch.Generator().manual_seed(3)))
    unrelated = float((other - expected).abs().max())
    for scale in ("token", "tensor"):
        assert len(enable_fp8_matmul(model, scale)) == len(case.settings["fp8_layers"])
        got = _run(model, case, dtype)
        dev = float((got - expected).abs().max())
        assert 0.01 < dev < 0.6, (scale, dev)
        assert rel_err(got, expected) < 0.10
        assert dev < unrelated / 10, (dev, unrelated)


@needs_scaled_mm
def test_every_dit_layer_runs_the_float8_product(conformance):
    """On the DiT's own activations, each FP8 layer's output is the float8 formula (to float32
    accumulation noise) and not the weight-only product (the float8 rounding shows)."""
    case, load = _fp8_case(conformance)
    model = load(torch.float32)
    enable_fp8_matmul(model)
    calls = []
    layers = [m for m in model.modules() if isinstance(m, FP8Linear)]
    handles = [m.register_forward_hook(lambda m, args, out: calls.append((m, args[0], out))) for m in layers]
    _run(model, case, torch.float32)
    for handle in handles:
        handle.remove()
    assert {id(m) for m, _, _ in calls} == {id(m) for m in layers}
    for layer, x, out in calls:
        want = reference(layer, x, per_token=True)
        assert rel_err(out, want) < 1e-5
        assert rel_err(out, F.linear(x.double(), layer.dequantized_weight(torch.float64),
                                     layer.bias.double())) > 1e-3
