"""DiT forward: ours against diffusers' HunyuanVideoTransformer3DModel, same weights, one run.

CPU (default): float32 at a medium configuration; prints median time per forward and peak
memory for both, and the ratios ours/diffusers. Each measurement runs in a fresh subprocess so
peak resident memory (ru_maxrss) is attributable to one model.

    python scripts/bench_dit.py                      # CPU medium config, ratios
    python scripts/bench_dit.py --full --device cuda # full-size bf16 on a GPU, MFU

FLOPs of one forward (for TFLOP/s and MFU): hyvideo.runtime.flops.dit_forward_flops, the convention of
the issue's 12.07 PFLOP figure (all text positions counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEDIUM = dict(hidden_size=1024, heads_num=8, mm_double_blocks_depth=2, mm_single_blocks_depth=4,
              text_states_dim=4096, text_states_dim_2=768, rope_dim_list=[16, 56, 56],
              guidance_embed=True)
MEDIUM_INPUT = dict(latent=[16, 9, 32, 32], text_len=256, valid=40)


def _build_pair(cfg: dict, dtype, device, with_diffusers: bool):
    """Our DiT with random weights and (optionally) diffusers' model holding the same weights."""
    import torch

    from hyvideo.dit.config import DiTConfig
    from hyvideo.checkpoints.keys import dit_to_diffusers
    from hyvideo.dit.config import dit_config_to_diffusers
    from hyvideo.dit.loader import build_dit

    config = DiTConfig.from_dict(cfg)
    torch.manual_seed(0)
    ours = build_dit(config, dtype=dtype, device="meta").to_empty(device=device)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.02)
    if not with_diffusers:
        return ours, None
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        theirs = HunyuanVideoTransformer3DModel(**dit_config_to_diffusers(config))
    theirs.load_state_dict({k: v.clone() for k, v in dit_to_diffusers(ours.state_dict()).items()},
                           strict=True, assign=True)
    return ours, theirs.to(dtype).eval()


def _inputs(cfg: dict, inp: dict, device, dtype):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *inp["latent"], generator=g).to(device, dtype)
    t = torch.tensor([900.0], device=device)
    states = torch.randn(1, inp["text_len"], cfg["text_states_dim"], generator=g).to(device, dtype)
    mask = torch.zeros(1, inp["text_len"], dtype=torch.int64, device=device)
    mask[:, : inp["valid"]] = 1
    pooled = torch.randn(1, cfg["text_states_dim_2"], generator=g).to(device, dtype)
    guidance = torch.tensor([6000.0], device=device, dtype=dtype)
    return x, t, states, mask, pooled, guidance


def _runner(which, model, args):
    x, t, states, mask, pooled, guidance = args
    if which == "ours":
        return lambda: model(x, t, states, mask, pooled, guidance)
    return lambda: model(x, t, states, mask, pooled, guidance=guidance, return_dict=False)[0]


def _sync(device: str) -> None:
    from hyvideo import compat

    compat.synchronize(device)  # no-op on the CPU


def _dtypes():
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _compiled_twin(ours):
    """A second DiT sharing ``ours``'s weight tensors, with its blocks compiled (--compile)."""
    from hyvideo.runtime.compile import compile_blocks
    from hyvideo.dit.loader import build_dit

    twin = build_dit(ours.config, dtype=ours.dtype, device="meta")
    twin.load_state_dict(ours.state_dict(), strict=True, assign=True)
    compile_blocks(twin)
    return twin


def time_worker(cfg: dict, inp: dict, device: str, dtype_name: str, repeats: int, with_diffusers: bool,
                with_compile: bool = False) -> dict:
    """The models in one process, forwards alternated, so machine load affects all alike."""
    import torch

    dtype = _dtypes()[dtype_name]
    ours, theirs = _build_pair(cfg, dtype, device, with_diffusers)
    args = _inputs(cfg, inp, device, dtype)
    runs = {"ours": _runner("ours", ours, args)}
    if theirs is not None:
        runs["diffusers"] = _runner("diffusers", theirs, args)
    if with_compile:
        runs["ours+compile"] = _runner("ours", _compiled_twin(ours), args)
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        a = runs["ours"]()
        if theirs is not None:  # same weights, same answer: the comparison is like for like
            b = runs["diffusers"]()
            times["max_abs_diff"] = [float((a.float() - b.float()).abs().max())]
        if with_compile:
            _sync(device)
            start = time.perf_counter()
            c = runs["ours+compile"]()  # the first call compiles
            _sync(device)
            times["compile_first_call"] = [time.perf_counter() - start]
            times["compile_max_abs_diff"] = [float((a.float() - c.float()).abs().max())]
        for _ in range(repeats):
            for name, run in runs.items():
                _sync(device)
                start = time.perf_counter()
                run()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def memory_worker(which: str, cfg: dict, inp: dict, device: str, dtype_name: str) -> dict:
    """One model alone: peak memory of a forward over the weights + inputs baseline."""
    import torch

    from hyvideo import compat

    dtype = _dtypes()[dtype_name]
    ours, theirs = _build_pair(cfg, dtype, device, which == "diffusers")
    model = ours if which == "ours" else theirs
    if which != "ours":
        del ours
    run = _runner(which, model, _inputs(cfg, inp, device, dtype))
    with torch.inference_mode():
        run()  # warm-up
        _sync(device)
        if device != "cpu":
            compat.reset_peak_memory_stats(device)
            base = compat.memory_allocated(device)
        sampler = RssSampler().start()
        run()
        _sync(device)
        sampler.stop()
    if device != "cpu":
        peak = compat.max_memory_allocated(device)
        return {"peak_mib": peak / 2**20, "forward_mib": (peak - base) / 2**20}
    return {"peak_mib": sampler.peak_growth_mib, "forward_mib": sampler.peak_growth_mib}


class RssSampler:
    """Samples this process's resident memory every millisecond in a thread (torch kernels
    release the GIL) and keeps the peak growth over the value at start."""

    def __init__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.base = self._rss()
        self.peak = self.base

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_growth_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def subprocess_call(name: str, *args) -> dict:
    payload = json.dumps([name, *args])
    # A fixed mmap threshold makes glibc hand every large buffer back to the OS when freed, so the
    # resident size follows the live tensors and its peak growth is the forward's working memory.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, __file__, "--worker", payload], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true",
                        help="full-size model (3072 hidden, 20+40 blocks) in bf16 at 544x960x129f")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-diffusers", action="store_true", help="measure ours only")
    parser.add_argument("--compile", action="store_true",
                        help="also time ours with regional torch.compile (first call = compile time)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="hardware peak for MFU (H100/H200 bf16 dense)")
    args = parser.parse_args()
    if args.worker:
        name, *rest = json.loads(args.worker)
        worker = {"time": time_worker, "memory": memory_worker}[name]
        print(json.dumps(worker(*rest)))
        return 0

    if args.full:
        cfg = json.loads((ROOT / "configs" / "HYVideo-T2-cfgdistill.json").read_text())["dit"]
        inp = dict(latent=[16, 33, 68, 120], text_len=256, valid=60)  # 544x960, 129 frames
        dtype = "bf16"
    else:
        cfg, inp, dtype = MEDIUM, MEDIUM_INPUT, "fp32"
    from hyvideo.dit.config import DiTConfig
    from hyvideo.runtime.flops import dit_forward_flops, image_tokens

    config = DiTConfig.from_dict(cfg)
    latent_thw = tuple(inp["latent"][1:])
    n_img = image_tokens(config, latent_thw)
    flops = dit_forward_flops(config, latent_thw, inp["text_len"]).total
    print(f"config: hidden {cfg['hidden_size']}, heads {cfg['heads_num']}, "
          f"{cfg['mm_double_blocks_depth']} double + {cfg['mm_single_blocks_depth']} single blocks; "
          f"latent {inp['latent']}, text {inp['text_len']} tokens ({inp['valid']} valid); "
          f"{n_img} image tokens; {dtype} on {args.device}; {flops / 1e12:.2f} TFLOP per forward")
    with_diffusers = not args.no_diffusers
    times = subprocess_call("time", cfg, inp, args.device, dtype, args.repeats, with_diffusers, args.compile)
    mem = {"ours": subprocess_call("memory", "ours", cfg, inp, args.device, dtype)}
    if with_diffusers:
        mem["diffusers"] = subprocess_call("memory", "diffusers", cfg, inp, args.device, dtype)
    for name in mem:
        print(f"{name + ':':11}{times[name]:.3f} s/forward (median of {args.repeats}, alternated), "
              f"peak {mem[name]['peak_mib']:.0f} MiB (the forward's own {mem[name]['forward_mib']:.0f} MiB)")
    if args.device != "cpu":
        tflops = flops / times["ours"] / 1e12
        print(f"ours:      {tflops:.0f} TFLOP/s achieved, MFU {tflops / args.peak_tflops:.1%} "
              f"of {args.peak_tflops:.0f} TFLOP/s")
    if args.compile:
        steady = times["ours+compile"]
        print(f"ours+compile: {steady:.3f} s/forward; first call {times['compile_first_call']:.1f} s "
              f"(compile ~{times['compile_first_call'] - steady:.1f} s); speed-up over eager "
              f"{times['ours'] / steady:.2f}x; max |compiled - eager| = {times['compile_max_abs_diff']:.2e}")
        if with_diffusers:
            print(f"ratio ours+compile/diffusers: time {steady / times['diffusers']:.2f}x")
    if with_diffusers:
        print(f"outputs agree: max |ours - diffusers| = {times['max_abs_diff']:.2e}")
        print(f"ratio ours/diffusers: time {times['ours'] / times['diffusers']:.2f}x, peak memory "
              f"{mem['ours']['forward_mib'] / max(mem['diffusers']['forward_mib'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
