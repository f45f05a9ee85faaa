"""DiT forward: ours against diffusers' HunyuanVideoTransformer3DModel, same weights, one run.

CPU (default): float32 at a medium configuration; prints median time per forward and peak
memory for both, and the ratios ours/diffusers. Each measurement runs in a fresh subprocess so
peak resident memory (ru_maxrss) is attributable to one model.

    python scripts/bench_dit.py                      # CPU medium config, ratios
    python scripts/bench_dit.py --full --device cuda # full-size bf16 on a GPU, MFU

FLOPs of one forward (the formula used for MFU), with N image tokens, L text tokens,
S = N + L, hidden C, MLP width M = 4C, text width Dt and the 2*in*out per token of a Linear:
  double block: 2*(N+L)*C*(3C + C + 2M) [qkv, proj, mlp] + 2*(N+L)*C*6C [modulation, tiny]
                + attention 4*S^2*C (QK^T and PV)
  single block: 2*S*C*(3C + M) [linear1] + 2*S*(C + M)*C [linear2] + attention 4*S^2*C
  (embedders, refiner and final layer add < 0.1% at 720p and are included approximately)
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


def forward_flops(n_img: int, n_txt: int, hidden: int, double: int, single: int, mlp_ratio=4.0) -> float:
    s, c = n_img + n_txt, hidden
    m = int(c * mlp_ratio)
    attn = 4 * s * s * c
    double_block = 2 * s * c * (3 * c + c + 2 * m) + attn
    single_block = 2 * s * c * (3 * c + m) + 2 * s * (c + m) * c + attn
    return double * double_block + single * single_block


def _build(which: str, cfg: dict, dtype, device):
    import torch

    from hyvideo.config import DiTConfig
    from hyvideo.convert import dit_to_diffusers
    from hyvideo.dit.loader import build_dit

    config = DiTConfig.from_dict(cfg)
    torch.manual_seed(0)
    ours = build_dit(config, dtype=dtype, device="cpu" if device == "cpu" else "meta")
    if device != "cpu":
        ours = ours.to_empty(device=device)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.02)
    if which == "ours":
        return ours
    from diffusers import HunyuanVideoTransformer3DModel

    theirs = HunyuanVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=config.heads_num,
        attention_head_dim=config.head_dim, num_layers=config.mm_double_blocks_depth,
        num_single_layers=config.mm_single_blocks_depth, guidance_embeds=config.guidance_embed,
        text_embed_dim=config.text_states_dim, pooled_projection_dim=config.text_states_dim_2,
        rope_axes_dim=tuple(config.rope_dim_list),
    ).to(device=device, dtype=dtype)
    theirs.load_state_dict(dit_to_diffusers(ours.state_dict()), strict=True)
    del ours
    return theirs.eval()


def worker(which: str, cfg: dict, inp: dict, device: str, dtype_name: str, repeats: int) -> dict:
    """Build one model, run warm-up + timed forwards, report median seconds and peak memory."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    model = _build(which, cfg, dtype, device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *inp["latent"], generator=g).to(device, dtype)
    t = torch.tensor([900.0], device=device)
    states = torch.randn(1, inp["text_len"], cfg["text_states_dim"], generator=g).to(device, dtype)
    mask = torch.zeros(1, inp["text_len"], dtype=torch.int64, device=device)
    mask[:, : inp["valid"]] = 1
    pooled = torch.randn(1, cfg["text_states_dim_2"], generator=g).to(device, dtype)
    guidance = torch.tensor([6000.0], device=device, dtype=dtype)

    def run():
        if which == "ours":
            return model(x, t, states, mask, pooled, guidance)
        return model(x, t, states, mask, pooled, guidance=guidance, return_dict=False)[0]

    cuda = device.startswith("cuda")
    times = []
    with torch.inference_mode():
        run()  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        sampler = RssSampler().start()
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        sampler.stop()
    if cuda:  # peak over everything allocated (weights included), and the forward's own share
        peak = torch.cuda.max_memory_allocated() / 2**20
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # resident-memory growth during the forwards over the weights + inputs baseline
        peak = extra = sampler.peak_growth_mib
    return {"seconds": statistics.median(times), "peak_mib": peak, "forward_mib": extra,
            "times": times}


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


def measure(which, cfg, inp, device, dtype, repeats) -> dict:
    payload = json.dumps([which, cfg, inp, device, dtype, repeats])
    proc = subprocess.run([sys.executable, __file__, "--worker", payload], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true",
                        help="full-size model (3072 hidden, 20+40 blocks) in bf16 at 544x960x129f")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-diffusers", action="store_true", help="measure ours only")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0

    if args.full:
        cfg = json.loads((ROOT / "configs" / "HYVideo-T2-cfgdistill.json").read_text())["dit"]
        inp = dict(latent=[16, 33, 68, 120], text_len=256, valid=60)  # 544x960, 129 frames
        dtype = "bf16"
    else:
        cfg, inp, dtype = MEDIUM, MEDIUM_INPUT, "fp32"
    t, h, w = inp["latent"][1:]
    n_img = t * (h // 2) * (w // 2)
    flops = forward_flops(n_img, inp["text_len"], cfg["hidden_size"], cfg["mm_double_blocks_depth"],
                          cfg["mm_single_blocks_depth"], cfg.get("mlp_width_ratio", 4.0))
    print(f"config: hidden {cfg['hidden_size']}, heads {cfg['heads_num']}, "
          f"{cfg['mm_double_blocks_depth']} double + {cfg['mm_single_blocks_depth']} single blocks; "
          f"latent {inp['latent']}, text {inp['text_len']} tokens ({inp['valid']} valid); "
          f"{n_img} image tokens; {dtype} on {args.device}; {flops / 1e12:.2f} TFLOP per forward")
    ours = measure("ours", cfg, inp, args.device, dtype, args.repeats)
    print(f"ours:      {ours['seconds']:.3f} s/forward (median of {args.repeats}), "
          f"peak {ours['peak_mib']:.0f} MiB (forward's own {ours['forward_mib']:.0f} MiB)")
    if args.device.startswith("cuda"):
        tflops = flops / ours["seconds"] / 1e12
        print(f"ours:      {tflops:.0f} TFLOP/s achieved, MFU {tflops / 790:.1%} of 790 TFLOP/s (bf16 dense)")
    if args.no_diffusers:
        return 0
    theirs = measure("diffusers", cfg, inp, args.device, dtype, args.repeats)
    print(f"diffusers: {theirs['seconds']:.3f} s/forward (median of {args.repeats}), "
          f"peak {theirs['peak_mib']:.0f} MiB (forward's own {theirs['forward_mib']:.0f} MiB)")
    print(f"ratio ours/diffusers: time {ours['seconds'] / theirs['seconds']:.2f}x, "
          f"peak memory {ours['peak_mib'] / max(theirs['peak_mib'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
