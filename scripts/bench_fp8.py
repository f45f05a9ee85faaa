"""FP8 matmul (``torch._scaled_mm``, float8 activations) against weight-only FP8 and bf16 Linears.

1. Accuracy on the DiT conformance inputs, against the float32 reference outputs ``out.x``:
   * ``fp8_tiny_cfgdistill`` (the official FP8 format): weight-only vs float8 matmul;
   * ``dit_tiny_cfgdistill`` (dense weights): the dense model in --dtype, then its weights
     quantized as the official tool does (max|W|/448 per tensor), weight-only and float8 matmul.
   Prints max |diff|, the relative L2 deviation, and the deviation from the dense --dtype output.
2. Speed of one Linear at HunyuanVideo's sizes (hidden 3072, MLP 12288, single-block linear1
   3072->21504 and linear2 15360->3072) for M tokens: bf16 F.linear, FP8 weight-only, FP8 matmul
   with per-token and per-tensor activation scales, and the activation quantization alone. The
   modes are alternated within each round (fair under drifting load); medians are printed, with
   device synchronisation around every call on an accelerator.

    python scripts/bench_fp8.py                              # CPU, 4096 tokens (slow: minutes)
    python scripts/bench_fp8.py --tokens 256 --repeats 3     # CPU, quick
    python scripts/bench_fp8.py --device cuda                # on a GPU (float8 needs sm_89+)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyvideo.conformance import Case
from hyvideo.conformance.dit_kinds import dit_config
from hyvideo.dit.fp8 import (FP8Linear, disable_fp8_matmul, enable_fp8_matmul, fp8_layer_names,
                             fp8_matmul_summary, quantize_activations, quantize_weight)
from hyvideo.dit.loader import dit_from_state_dict, load_dit

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (name, in_features K, out_features N) of HunyuanVideo-T/2's token-wise FP8 layers.
LAYERS = [
    ("img_attn_qkv", 3072, 9216),
    ("img_attn_proj", 3072, 3072),
    ("img_mlp.fc1", 3072, 12288),
    ("img_mlp.fc2", 12288, 3072),
    ("linear1", 3072, 21504),
    ("linear2", 15360, 3072),
]


def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        getattr(torch, device.type).synchronize()


# --- accuracy -------------------------------------------------------------------------------------

def _forward(model, case: Case, dtype, device) -> torch.Tensor:
    def put(name: str) -> torch.Tensor:
        t = case[name].to(device)
        return t.to(dtype) if t.is_floating_point() and name not in ("t", "guidance") else t

    with torch.inference_mode():
        out = model(put("x"), put("t"), put("text_states"), put("text_mask"), put("text_states_2"),
                    put("guidance") if "guidance" in case else None)
    return out.float().cpu()


def _quantized_state(state: dict[str, torch.Tensor], names: list[str]):
    """Dense weights -> the official FP8 format: float8 weight, scale = max|W| / 448 per layer."""
    state, scales = dict(state), {}
    for name in names:
        state[f"{name}.weight"], scales[name] = quantize_weight(state[f"{name}.weight"])
    return state, scales


def _fp8_variants(model, case, dtype, device) -> dict[str, torch.Tensor]:
    out = {"fp8 weight-only": _forward(model, case, dtype, device)}
    for scale in ("token", "tensor"):
        enable_fp8_matmul(model, scale, dtype=dtype)
        out[f"fp8 matmul per-{scale}"] = _forward(model, case, dtype, device)
        print(f"    [{fp8_matmul_summary(model)}]")
    disable_fp8_matmul(model)
    return out


def accuracy(conformance: Path, dtype, device) -> None:
    from safetensors.torch import load_file

    print(f"accuracy on {device}, {dtype} (reference: the case's float32 out.x)")
    print(f"  {'case / variant':44} {'max|diff|':>10} {'rel L2':>8} {'vs dense':>10}")
    dense_case = Case.open(conformance / "cases" / "dit_tiny_cfgdistill")
    config = dit_config(dense_case.config, dense_case.settings)
    state = load_file(str(dense_case.path / "weights.safetensors"))
    dense = dit_from_state_dict(state, config, dtype=dtype, device=device)
    results = {f"dense {str(dtype).removeprefix('torch.')}": _forward(dense, dense_case, dtype, device)}
    qstate, scales = _quantized_state(state, fp8_layer_names(dense))
    quantized = dit_from_state_dict(qstate, config, dtype=dtype, device=device, fp8_scales=scales)
    results.update(_fp8_variants(quantized, dense_case, dtype, device))
    _print_rows(dense_case, results, baseline=next(iter(results.values())))

    fp8_case = Case.open(conformance / "cases" / "fp8_tiny_cfgdistill")
    model = load_dit(fp8_case.path / "mp_rank_00_model_states_fp8.pt",
                     dit_config(fp8_case.config, fp8_case.settings), dtype=dtype, device=device)
    _print_rows(fp8_case, _fp8_variants(model, fp8_case, dtype, device), baseline=None)


def _print_rows(case: Case, results: dict[str, torch.Tensor], baseline: torch.Tensor | None) -> None:
    expected = case["out.x"]
    for name, got in results.items():
        diff = (got - expected).abs().max().item()
        rel = ((got - expected).norm() / expected.norm()).item()
        vs = "" if baseline is None else f"{(got - baseline).abs().max().item():10.4f}"
        print(f"  {case.name + ' / ' + name:44} {diff:10.4f} {rel:8.4f} {vs:>10}")
    print(f"  ({case.name}: max|out.x| = {expected.abs().max().item():.3f})")


# --- speed ----------------------------------------------------------------------------------------

def _layers(k: int, n: int, dtype, device) -> tuple[torch.Tensor, dict[str, FP8Linear]]:
    """A random bf16 weight [N, K] and FP8 Linears sharing its quantized copy, one per mode."""
    weight = torch.randn(n, k, device=device) * 0.02
    q, scale = quantize_weight(weight)
    q = nn.Parameter(q, requires_grad=False)
    bias = nn.Parameter(torch.randn(n, device=device, dtype=dtype) * 0.02, requires_grad=False)
    layers = {}
    for mode in ("weight-only", "token", "tensor"):
        with torch.device("meta"):
            layer = FP8Linear.from_linear(nn.Linear(k, n))
        layer.weight, layer.bias, layer.fp8_scale = q, bias, scale.float()
        if mode != "weight-only" and not enable_fp8_matmul(nn.Sequential(layer), mode, dtype=dtype):
            print(f"    fp8 matmul per-{mode} unavailable: {layer.matmul_fallback}")
            continue
        layers[mode] = layer
    return weight.to(dtype), layers


def _time_modes(modes: dict, repeats: int, device) -> dict[str, float]:
    """Median seconds per call of each mode; modes alternate inside each round."""
    times: dict[str, list[float]] = {m: [] for m in modes}
    for round_ in range(repeats + 1):  # round 0 warms up (allocations, oneDNN/cuBLAS plans)
        for name, fn in modes.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {m: statistics.median(t) for m, t in times.items()}


def speed(tokens: int, dtype, device, repeats: int) -> None:
    print(f"\nspeed on {device}: one Linear, M={tokens} tokens, {dtype}, median of {repeats} "
          "(ms; TFLOP/s in brackets; x = time relative to the dense F.linear)")
    print(f"  {'layer (K->N)':26} {'bf16 linear':>17} {'fp8 weight-only':>24} "
          f"{'fp8 mm token':>24} {'fp8 mm tensor':>24} {'quantize x':>11}")
    for name, k, n in LAYERS:
        _time_layer(name, k, n, tokens, dtype, device, repeats)


def _time_layer(name: str, k: int, n: int, tokens: int, dtype, device, repeats: int) -> None:
    weight, layers = _layers(k, n, dtype, device)
    x = torch.randn(tokens, k, device=device, dtype=dtype)
    bias = layers["weight-only"].bias
    modes = {"bf16": lambda: F.linear(x, weight, bias)}
    modes.update({m: (lambda layer=layer: layer(x)) for m, layer in layers.items()})
    modes["quantize"] = lambda: quantize_activations(x)
    with torch.inference_mode():
        t = _time_modes(modes, repeats, device)
    flops = 2 * tokens * k * n
    cells = [f"{t['bf16'] * 1e3:9.1f} ({flops / t['bf16'] / 1e12:.3g})"]
    for m in ("weight-only", "token", "tensor"):
        cells.append("n/a" if m not in t else
                     f"{t[m] * 1e3:9.1f} ({flops / t[m] / 1e12:.3g}) x{t[m] / t['bf16']:4.2f}")
    print(f"  {f'{name} ({k}->{n})':26} {cells[0]:>17} {cells[1]:>24} {cells[2]:>24} "
          f"{cells[3]:>24} {t['quantize'] * 1e3:9.1f}ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="compute dtype (default bf16)")
    p.add_argument("--tokens", type=int, default=4096, help="M, tokens per Linear call (default 4096)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per layer (default 5)")
    p.add_argument("--conformance", type=Path, default=ROOT.parent / "shared" / "conformance",
                   help="conformance data folder (with cases/dit_tiny_cfgdistill, cases/fp8_tiny_cfgdistill)")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args(argv)
    if args.tokens < 1 or args.repeats < 1:
        p.error("--tokens and --repeats must be at least 1")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 references stay float32
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}")
    if not args.skip_accuracy:
        if not (args.conformance / "cases").is_dir():
            p.error(f"no conformance cases under {args.conformance}: pass --conformance or --skip-accuracy")
        accuracy(args.conformance, dtype, device)
        if dtype != torch.float32:
            accuracy(args.conformance, torch.float32, device)
    if not args.skip_speed:
        speed(args.tokens, dtype, device, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
