"""The Python parts of scripts/gpu_check.sh: what only a GPU can show, one part per call.

    python scripts/gpu_check.py PART [--device cuda] [--tiny] [--json FILE]

Parts (each prints its figures, and with ``--json`` appends one JSON object per line to FILE):

``env``        torch/CUDA versions, the GPU and its capability, the attention kernels installed, the
               kernel ``--attention auto`` picks per dtype, the LSE kernel of sequence parallelism,
               the float8-matmul plan (probed product, scaling, fused bias).
``precision``  a double and a single block (real width, random bf16 weights, 544p tokens) with our
               explicit autocast placement against the same blocks under the device's real
               ``torch.autocast``: the max |difference| (the placement is meant to be the same).
``attention``  every installed attention backend at the 720p token count (one prompt length, and
               mixed lengths): time and max |diff| against SDPA; sequence parallelism's LSE kernel
               in bf16 and fp32 (its LSE cut to the query length) against SDPA.
``fp8``        the DiT's Linear sizes at the 720p token count: bf16, FP8 weight-only and float8
               matmul (per-token / per-tensor): time and relative error against float32; the
               activation quantiser's transient bytes.
``offload``    a DiT with the real width and 2+2 blocks at the 720p token count, one forward per
               offload mode (with and without FP8): measured peak device bytes against the
               prediction of scripts/memory_plan.py's tracker for the same model and input.
``compile``    that DiT (544p tokens): eager against regionally compiled forward time.
``step``       the full DiT (random bf16 weights) at 544p and 720p: one forward's time, TFLOP/s
               and MFU (FLOPs from hyvideo.runtime.flops).

``--tiny`` shrinks every size so that a part runs on the CPU in seconds (the test suite runs them
so). Nothing here downloads anything.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyvideo import compat
from benchmark import DEFAULT_PEAK_TFLOPS  # scripts/benchmark.py, beside this script

PARTS = ("env", "precision", "attention", "fp8", "offload", "compile", "step")
GiB = 1 << 30
PEAK_TFLOPS = {"H100": DEFAULT_PEAK_TFLOPS, "H200": DEFAULT_PEAK_TFLOPS, "H800": DEFAULT_PEAK_TFLOPS,
               "A100": 312.0, "L40S": 362.0}  # dense bf16


# ---- helpers ------------------------------------------------------------------------------------

def emit(out: dict, json_path: Path | None) -> None:
    print(json.dumps(out, default=str))
    if json_path is not None:
        with json_path.open("a") as f:
            f.write(json.dumps(out, default=str) + "\n")


def timed(fn: Callable, device: torch.device, repeats: int = 3) -> float:
    """Median seconds of ``fn()`` after one warm-up call, synchronised around each call."""
    fn()
    times = []
    for _ in range(repeats):
        compat.synchronize(device)
        start = time.perf_counter()
        fn()
        compat.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn: Callable, device: torch.device) -> int | None:
    """Peak device bytes held during ``fn()`` above what was held before: the allocator's count
    on an accelerator; on the CPU (the tests) memory_plan.py's tracker on the real tensors."""
    if device.type == "cpu":
        sys.path.insert(0, str(ROOT / "scripts"))
        from memory_plan import LiveBytes

        with LiveBytes() as tracker:
            fn()
        return tracker.peak["cpu"]
    compat.synchronize(device)
    compat.empty_cache(device)
    base = compat.memory_allocated(device)
    compat.reset_peak_memory_stats(device)
    fn()
    compat.synchronize(device)
    peak = compat.max_memory_allocated(device)
    return None if peak is None or base is None else peak - base


def sizes(tiny: bool) -> dict:
    """Token counts and widths: the released ones, or tiny ones for the CPU."""
    if tiny:
        return {"tokens_720p": 96, "tokens_544p": 64, "text": 8, "heads": 2, "head_dim": 16,
                "hidden": 32, "mlp": 128, "latent_720p": (2, 4, 6), "latent_544p": (2, 4, 4)}
    return {"tokens_720p": 118_800, "tokens_544p": 68_000, "text": 256, "heads": 24, "head_dim": 128,
            "hidden": 3072, "mlp": 12288, "latent_720p": (33, 90, 160), "latent_544p": (33, 68, 120)}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


# ---- env ----------------------------------------------------------------------------------------

def part_env(device: torch.device, tiny: bool) -> dict:
    from hyvideo.dit import attention as att
    from hyvideo.dit.fp8 import matmul_plan
    from hyvideo.runtime.parallel.attention import lse_kernel

    name = getattr(compat._module(device.type), "get_device_name", lambda d: device.type)(device) \
        if device.type != "cpu" else "cpu"
    capability = None
    with contextlib.suppress(Exception):
        capability = compat._module(device.type).get_device_capability(device)
    auto = {f"{dt}/{'one group' if u else 'mixed'}": att.resolve_backend("auto", device, getattr(torch, dt), uniform=u)
            for dt in ("bfloat16", "float32") for u in (True, False)}
    plan = matmul_plan(device, "token", torch.bfloat16)
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "hip": torch.version.hip,
            "device": str(device), "name": name, "capability": capability,
            "hopper": att.is_hopper(device),
            "installed": {"flash_attn": att.flash_available(), "flash_attn_interface": att.flash3_available(),
                          "sageattention": att.sage_available(), "flex": att.flex_available(),
                          "sdpa_priority": att.cudnn_priority_available()},
            "auto": auto, "lse_kernel": {dt: lse_kernel(device, getattr(torch, dt)) for dt in ("bfloat16", "float32")},
            "fp8_matmul_plan": {"activation_scale": plan.activation_scale, "fuse_bias": plan.fuse_bias,
                                "problem": plan.problem, "notes": list(plan.notes)}}


# ---- precision ----------------------------------------------------------------------------------

def part_precision(device: torch.device, tiny: bool) -> dict:
    """Our explicit placement (set_autocast(True)) against real autocast around the plain model."""
    from hyvideo.dit.attention import AttentionGroups

    s = sizes(tiny)
    config = small_dit_config(tiny)
    dit = random_dit(config, device, torch.bfloat16, fp8=False)
    g = torch.Generator(device).manual_seed(2)
    rope = dit.rope(s["latent_544p"], device=device)
    n, text, c = rope[0].shape[0], s["text"], config.hidden_size
    groups = AttentionGroups((n + text,), n + text, n)
    vec = torch.randn(1, c, device=device, generator=g).to(torch.bfloat16)
    img, txt = (torch.randn(1, m, c, device=device, generator=g).to(torch.bfloat16) for m in (n, text))
    runs = {"double": lambda: dit.double_blocks[0](img, txt, vec, rope, groups, "sdpa")[0],
            "single": lambda: dit.single_blocks[0](torch.cat([img, txt], 1), vec, n, rope, groups, "sdpa"),
            "final": lambda: dit.final_layer(img, vec)}
    out = {}
    with torch.inference_mode():
        for name, run in runs.items():
            dit.set_autocast(True)
            ours = run()
            dit.set_autocast(False)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                theirs = run()
            out[name] = {"dtypes": [str(ours.dtype), str(theirs.dtype)],
                         "max_abs_diff": float((ours.float() - theirs.float()).abs().max()),
                         "max_abs": float(theirs.float().abs().max())}
    dit.set_autocast(True)
    return {"tokens": n + text, "blocks": out}


# ---- attention ----------------------------------------------------------------------------------

def part_attention(device: torch.device, tiny: bool) -> dict:
    from hyvideo.dit import attention as att

    s = sizes(tiny)
    n = s["tokens_720p"] + s["text"]
    g = torch.Generator(device).manual_seed(0)
    dtype = torch.bfloat16 if device.type != "cpu" else torch.float32
    q, k, v = (torch.randn(1, n, s["heads"], s["head_dim"], device=device, dtype=dtype, generator=g)
               for _ in range(3))
    installed = {"sdpa": True, "cudnn": att.cudnn_priority_available(), "flash": att.flash_available(),
                 "flash3": att.flash3_available(), "flex": att.flex_available(), "sage": att.sage_available()}
    if device.type == "cpu":  # flex compiles with the C++ toolchain: slow here, tested elsewhere
        installed["flex"] = False
    result = {"tokens": n, "dtype": str(dtype), "backends": {}}
    for groups_name, first in (("one group", n), ("mixed", n - s["text"] // 2)):
        groups = att.AttentionGroups((first,), n, s["tokens_720p"])
        ref = att.attention(q, k, v, groups, backend="sdpa")
        for backend, ok in installed.items():
            key = f"{backend}/{groups_name}"
            if not ok or (backend in att.HALF_ONLY and dtype not in att.HALF_DTYPES):
                result["backends"][key] = "not installed" if not ok else f"needs fp16/bf16, not {dtype}"
                continue
            try:
                out = att.attention(q, k, v, groups, backend=backend)
                secs = timed(lambda b=backend, g=groups: att.attention(q, k, v, g, backend=b), device)
                result["backends"][key] = {"ms": round(secs * 1e3, 2),
                                           "max_abs_diff_vs_sdpa": float((out.float() - ref.float()).abs().max())}
            except Exception as exc:  # noqa: BLE001 - one kernel's failure is a finding, not the end
                result["backends"][key] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
    result["sequence_parallel_lse"] = _lse_check(q, k, v)
    return result


def _lse_check(q, k, v) -> dict:
    """attention_with_lse (the ring/Ulysses merge's kernel) in bf16 and fp32 on this device: its
    output against SDPA, its LSE one row per query (CUDA's efficient kernel pads it)."""
    from hyvideo.runtime.parallel.attention import attention_with_lse

    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        qd, kd, vd = (t[:, :4096].to(dtype) for t in (q, k, v))
        try:
            o, lse = attention_with_lse(qd, kd, vd)
            ref = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (qd, kd, vd))).transpose(1, 2)
            out[str(dtype)] = {"lse_rows": lse.shape[-1], "queries": qd.shape[1],
                               "max_abs_diff_vs_sdpa": float((o.float() - ref.float()).abs().max())}
        except Exception as exc:  # noqa: BLE001 - reported
            out[str(dtype)] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return out


# ---- fp8 ----------------------------------------------------------------------------------------

def _fp8_layer(k: int, n: int, device, dtype):
    from torch import nn

    from hyvideo.dit.fp8 import FP8Linear, quantize_weight

    g = torch.Generator(device).manual_seed(k + n)
    layer = FP8Linear.from_linear(nn.Linear(k, n, device=device, dtype=dtype))
    w = torch.randn(n, k, device=device, generator=g) / k ** 0.5
    q, layer.fp8_scale = quantize_weight(w)
    layer.weight = nn.Parameter(q, requires_grad=False)
    layer.bias = nn.Parameter(torch.randn(n, device=device, generator=g).to(dtype) * 0.1, requires_grad=False)
    return layer


def part_fp8(device: torch.device, tiny: bool) -> dict:
    from torch import nn

    from hyvideo.dit.fp8 import enable_fp8_matmul, fp8_matmul_report, quantize_activations

    s = sizes(tiny)
    m, h, mlp = s["tokens_720p"] + s["text"], s["hidden"], s["mlp"]
    dtype = torch.bfloat16
    shapes = {"qkv": (h, 3 * h), "mlp.fc1": (h, mlp), "mlp.fc2": (mlp, h),
              "single.linear1": (h, 3 * h + mlp), "single.linear2": (h + mlp, h)}
    result = {"tokens": m, "layers": {}}
    for name, (k, n) in shapes.items():
        layer = _fp8_layer(k, n, device, dtype)
        x = torch.randn(m, k, device=device, dtype=dtype)
        exact = F.linear(x[:256].float(), layer.dequantized_weight(torch.float32), layer.bias.float())
        dense_w = layer.dequantized_weight(dtype)
        run = functools.partial(layer, x)
        row = {"bf16_ms": timed(functools.partial(F.linear, x, dense_w, layer.bias), device) * 1e3,
               "weight_only_ms": timed(run, device) * 1e3,
               "weight_only_err": rel_err(layer(x[:256]), exact)}
        for scale in ("token", "tensor"):
            used = enable_fp8_matmul(nn.Sequential(layer), scale, device=device, dtype=dtype)
            if used:
                row[f"fp8_{scale}_ms"] = timed(run, device) * 1e3
                row[f"fp8_{scale}_err"] = rel_err(layer(x[:256]), exact)
            row[f"fp8_{scale}_report"] = fp8_matmul_report(nn.Sequential(layer))
            layer.matmul = False
        result["layers"][name] = {k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in row.items()}
    x = torch.randn(m, h + mlp, device=device, dtype=dtype)
    result["quantiser_transient_gib"] = _gib(peak_bytes(lambda: quantize_activations(x), device))
    result["quantiser_output_gib"] = round(m * (h + mlp) / GiB, 3)
    return result


def _gib(n: int | None) -> float | None:
    return None if n is None else round(n / GiB, 3)


# ---- a few real-width blocks: offload peaks, compile --------------------------------------------

def small_dit_config(tiny: bool):
    from hyvideo.dit.config import DiTConfig
    from hyvideo.pipeline.variants import variant_spec

    data = dict(variant_spec("HYVideo-T/2-cfgdistill")["dit"], mm_double_blocks_depth=2, mm_single_blocks_depth=2)
    if tiny:
        data.update(hidden_size=32, heads_num=2, text_states_dim=16, text_states_dim_2=8,
                    rope_dim_list=[4, 6, 6], mlp_width_ratio=4.0)
    return DiTConfig.from_dict(data)


def random_dit(config, device, dtype, fp8: bool):
    """A DiT with random weights (N(0, 1/fan_in)), optionally in the official FP8 layout."""
    from hyvideo.dit.fp8 import FP8_DTYPE, FP8Linear, convert_to_fp8, quantize_weight
    from hyvideo.dit.loader import build_dit

    dit = build_dit(config, dtype=dtype, device="meta")
    if fp8:
        convert_to_fp8(dit)
    dit = dit.to_empty(device=device).eval().requires_grad_(False)
    g = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for module in dit.modules():
            if isinstance(module, FP8Linear):
                w = torch.randn(module.weight.shape, device=device, generator=g) / module.in_features ** 0.5
                q, module.fp8_scale = quantize_weight(w)
                module.weight.copy_(q)
        for p in dit.parameters():
            if p.dtype != FP8_DTYPE:
                fan_in = p[0].numel() if p.ndim > 1 else 1
                p.copy_(torch.randn(p.shape, device=device, generator=g) / fan_in ** 0.5)
    return dit


def dit_inputs(config, latent_thw, text_len, device, dtype):
    g = torch.Generator(device).manual_seed(1)
    x = torch.randn(1, config.in_channels, *latent_thw, device=device, generator=g)
    t = torch.tensor([500.0], device=device)
    states = torch.randn(1, text_len, config.text_states_dim, device=device, generator=g).to(dtype)
    mask = torch.ones(1, text_len, dtype=torch.int64, device=device)
    pooled = torch.randn(1, config.text_states_dim_2, device=device, generator=g).to(dtype)
    guidance = torch.tensor([6016.0], device=device) if config.guidance_embed else None
    return x, t, states, mask, pooled, guidance


def part_offload(device: torch.device, tiny: bool) -> dict:
    """Measured peak of one forward per mode against the tracker's prediction (same model)."""
    from hyvideo.runtime.offload.config import OffloadConfig
    from hyvideo.runtime.offload.wrap import offload_components

    s = sizes(tiny)
    config = small_dit_config(tiny)
    result = {"blocks": "2 double + 2 single", "latent": s["latent_720p"], "modes": {}}
    cases = [(m, f) for f in (False, True) for m in ("none", "model", "blocks")]
    if tiny:  # each path once (the CPU test)
        cases = [("none", False), ("model", False), ("blocks", True)]
    for mode, fp8 in cases:
        key = f"{mode}{' fp8' if fp8 else ''}"
        try:
            result["modes"][key] = _offload_case(config, mode, fp8, device, s, OffloadConfig, offload_components)
        except Exception as exc:  # noqa: BLE001 - reported
            result["modes"][key] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return result


def _offload_case(config, mode, fp8, device, s, OffloadConfig, offload_components) -> dict:
    dtype = torch.bfloat16
    host = torch.device("cpu")
    dit = random_dit(config, host if mode != "none" else device, dtype, fp8)
    inputs = dit_inputs(config, s["latent_720p"], s["text"], device, dtype)
    offload = offload_components({"dit": dit}, device, OffloadConfig(mode, 2))

    def forward():
        with offload.use("dit"), torch.inference_mode():
            dit(*inputs)

    measured = peak_bytes(forward, device)
    weights = sum(t.numel() * t.element_size() for t in (*dit.parameters(), *dit.buffers()))
    host_arena = getattr(getattr(offload, "swaps", {}).get("dit"), "arena", None)
    offload.close()
    predicted = predict_forward_peak(config, mode, fp8, s)
    return {"measured_gib": _gib(measured), "predicted_gib": _gib(predicted),
            "measured_bytes": measured, "predicted_bytes": predicted, "dit_weights_gib": _gib(weights),
            "pinned_arena_gib": _gib(host_arena.nbytes) if host_arena is not None else None}


def predict_forward_peak(config, mode: str, fp8: bool, s: dict) -> int:
    """memory_plan.py's tracker on the same forward, with fake tensors: peak device bytes above
    what the device held before the forward (the offload mode's weights included)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import warnings

    import memory_plan as plan

    from hyvideo.runtime.offload.config import OffloadConfig
    from hyvideo.runtime.offload.wrap import offload_components

    warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
    with plan.fake_world():
        dit = random_fake_dit(config, fp8, plan)
        if mode == "none":
            dit.to(plan.DEVICE)
        offload = offload_components({"dit": dit}, plan.DEVICE, OffloadConfig(mode, 2, pin_memory=False))
        inputs = dit_inputs_fake(config, s, plan.DEVICE)
        with plan.Oracle() as tracker:
            tracker.track(*[t for t in (*dit.parameters(), *dit.buffers())], *[i for i in inputs if i is not None])
            base = tracker.live[plan.DEVICE.type]
            tracker.start_stage()
            with offload.use("dit"), torch.inference_mode():
                dit(*inputs)
            return tracker.peak[plan.DEVICE.type] - base


def random_fake_dit(config, fp8: bool, plan):
    from hyvideo.dit.fp8 import convert_to_fp8
    from hyvideo.dit.loader import build_dit

    dit = build_dit(config, dtype=torch.bfloat16, device="meta")
    if fp8:
        convert_to_fp8(dit)
    return plan._on_host(dit)


def dit_inputs_fake(config, s, device):
    dtype = torch.bfloat16
    x = torch.empty(1, config.in_channels, *s["latent_720p"], device=device)
    t = torch.empty(1, device=device)
    states = torch.empty(1, s["text"], config.text_states_dim, device=device, dtype=dtype)
    mask = torch.ones(1, s["text"], dtype=torch.int64, device=device)
    pooled = torch.empty(1, config.text_states_dim_2, device=device, dtype=dtype)
    guidance = torch.empty(1, device=device) if config.guidance_embed else None
    return x, t, states, mask, pooled, guidance


def part_compile(device: torch.device, tiny: bool, backend: str | None = None) -> dict:
    from hyvideo.runtime.compile import compile_blocks, reset_compiled

    s = sizes(tiny)
    config = small_dit_config(tiny)
    dtype = torch.bfloat16 if device.type != "cpu" else torch.float32
    dit = random_dit(config, device, dtype, fp8=False)
    inputs = dit_inputs(config, s["latent_544p"], s["text"], device, dtype)

    def forward():
        with torch.inference_mode():
            return dit(*inputs)

    eager_out = forward()
    eager = timed(forward, device)
    reset_compiled()
    if backend is None:
        compile_blocks(dit)
    else:  # the CPU test compiles without inductor (no C++ toolchain needed)
        for block in (*dit.double_blocks, *dit.single_blocks):
            block.compile(backend=backend, dynamic=True)
    start = time.perf_counter()
    compiled_out = forward()
    compat.synchronize(device)
    first = time.perf_counter() - start
    compiled = timed(forward, device)
    return {"blocks": "2 double + 2 single", "latent": s["latent_544p"], "eager_ms": round(eager * 1e3, 2),
            "compiled_ms": round(compiled * 1e3, 2), "speedup": round(eager / compiled, 3),
            "first_call_s": round(first, 1), "max_abs_diff": float((compiled_out - eager_out).abs().max())}


# ---- the full DiT: step time and MFU ------------------------------------------------------------

def part_step(device: torch.device, tiny: bool, peak_tflops: float | None = None) -> dict:
    from hyvideo.dit.config import DiTConfig
    from hyvideo.pipeline.variants import variant_spec
    from hyvideo.runtime.flops import dit_forward_flops

    s = sizes(tiny)
    config = small_dit_config(True) if tiny else DiTConfig.from_dict(variant_spec("HYVideo-T/2-cfgdistill")["dit"])
    dtype = torch.bfloat16 if device.type != "cpu" else torch.float32
    dit = random_dit(config, device, dtype, fp8=False)
    name = part_env(device, tiny)["name"] if device.type != "cpu" else "cpu"
    peak = peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in str(name)), None)
    result = {"device": name, "peak_tflops": peak, "sizes": {}}
    for label in ("544p", "720p"):
        latent = s[f"latent_{label}"]
        inputs = dit_inputs(config, latent, s["text"], device, dtype)

        def forward(inputs=inputs):
            with torch.inference_mode():
                dit(*inputs)

        secs = timed(forward, device, repeats=1)
        flops = dit_forward_flops(config, latent, s["text"]).total
        tflops = flops / secs / 1e12
        result["sizes"][label] = {"latent": latent, "seconds": round(secs, 3), "tflops": round(tflops, 1),
                                  "mfu": round(tflops / peak, 3) if peak else None,
                                  "peak_gib": _gib(peak_bytes(forward, device))}
    return result


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=(*PARTS, "all"))
    p.add_argument("--device", default=None, help="default: the accelerator (cuda), else cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (for the CPU test)")
    p.add_argument("--json", type=Path, help="append one JSON object per part to this file")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    p.add_argument("--peak-tflops", type=float, default=None, help="hardware peak for MFU")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device) if args.device else compat.current_device()
    if device.type != "cpu":  # TF32 off: the figures compare against float32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    parts = PARTS if args.part == "all" else (args.part,)
    failed = 0
    for part in parts:
        start = time.perf_counter()
        kwargs = {"backend": args.compile_backend} if part == "compile" else {}
        if part == "step":
            kwargs = {"peak_tflops": args.peak_tflops}
        try:
            out = globals()[f"part_{part}"](device, args.tiny, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported, the other parts still run
            failed += 1
            out = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        emit({"part": part, "seconds": round(time.perf_counter() - start, 1), **out}, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
