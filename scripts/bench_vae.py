"""Benchmark the full-size VAE decode on CPU: ours vs diffusers, untiled vs tiled.

    python scripts/bench_vae.py [--latent 1,16,9,32,32] [--tile-size 128] [--tile-frames 16]

The full-size architecture (config from ``manifests/vae_884-16c-hy.json``, widths
128/256/512/512) with random weights decodes one latent in float32 under
``torch.inference_mode``. Each variant runs in a fresh subprocess, so its peak memory is
``ru_maxrss`` after the decode minus the resident size just before it (model and input already
loaded, every weight page resident). Ours is loaded with ``load_vae`` from a random-weight
folder written once; diffusers' ``AutoencoderKLHunyuanVideo`` gets the same state dict (the key names are
identical); its framewise decoding is off for the untiled run, and ``enable_tiling`` gets the
same tile sizes and strides for the tiled run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT.parent / "shared" / "conformance" / "manifests" / "vae_884-16c-hy.json"
VARIANTS = ("ours-untiled", "ours-tiled", "diffusers-untiled", "diffusers-tiled")
FULL_CONFIG = {  # the manifest's config, used when the manifest is not available
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 16,
    "norm_num_groups": 32, "sample_size": 256, "sample_tsize": 64, "scaling_factor": 0.476986,
}


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _build(variant: str, config: dict, weights: Path, args: argparse.Namespace):
    """Returns a function latents -> pixels for the variant, with the weights resident."""
    sys.path.insert(0, str(ROOT))
    from hyvideo.vae import TilingConfig, load_vae

    tiling = TilingConfig(args.tile_size, args.tile_frames, args.overlap)
    if variant.startswith("ours"):
        model = load_vae(weights.parent, dtype=torch.float32)
        decode = functools.partial(model.decode, tiling=tiling if "-tiled" in variant else False)
    else:
        from diffusers import AutoencoderKLHunyuanVideo

        model = AutoencoderKLHunyuanVideo(
            block_out_channels=tuple(config["block_out_channels"]),
            layers_per_block=config["layers_per_block"], latent_channels=config["latent_channels"],
            norm_num_groups=config["norm_num_groups"], scaling_factor=config["scaling_factor"],
        ).eval().requires_grad_(False)
        state = torch.load(weights, mmap=True, weights_only=True)
        model.load_state_dict(state, strict=True, assign=True)
        if variant.endswith("-tiled"):
            s, ts, f = args.tile_size, args.tile_frames, args.overlap
            model.enable_tiling(tile_sample_min_height=s, tile_sample_min_width=s,
                                tile_sample_min_num_frames=ts,
                                tile_sample_stride_height=int(s * (1 - f)),
                                tile_sample_stride_width=int(s * (1 - f)),
                                tile_sample_stride_num_frames=int(ts * (1 - f)))
        else:
            model.use_framewise_decoding = False  # it would tile in time even with tiling off
        decode = lambda z: model.decode(z).sample
    # Fault every mmap'd weight page in now, so the decode's memory delta excludes weights.
    sum(float(p.sum()) for p in model.parameters())
    return decode


def _config(args: argparse.Namespace) -> dict:
    manifest = Path(args.manifest)
    return json.loads(manifest.read_text())["config"] if manifest.is_file() else FULL_CONFIG


def write_weights(config: dict, folder: Path) -> Path:
    """Random full-size weights (seeded) as an official-layout folder: config.json + .pt."""
    sys.path.insert(0, str(ROOT))
    from hyvideo.vae import build_vae

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(build_vae(config, device="cpu").state_dict(), folder / "pytorch_model.pt")
    return folder / "pytorch_model.pt"


def alternate_worker(args: argparse.Namespace) -> None:
    """Ours and diffusers in one process, decodes alternated: machine load affects both alike."""
    import statistics

    mode = args.worker.split("-", 1)[1]
    decodes = {who: _build(f"{who}-{mode}", _config(args), Path(args.weights), args)
               for who in ("ours", "diffusers")}
    z = torch.randn(*args.latent, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {who: [] for who in decodes}
    with torch.inference_mode():
        for _ in range(args.alternate):
            for who, decode in decodes.items():
                start = time.perf_counter()
                decode(z)
                times[who].append(time.perf_counter() - start)
    print(json.dumps({who: statistics.median(t) for who, t in times.items()}))


def worker(args: argparse.Namespace) -> None:
    if args.worker.startswith("alternate-"):
        return alternate_worker(args)
    decode = _build(args.worker, _config(args), Path(args.weights), args)
    z = torch.randn(*args.latent, generator=torch.Generator().manual_seed(1))
    before_peak, before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kib()
    with torch.inference_mode():
        start = time.perf_counter()
        out = decode(z)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save(out, args.out)
    print(json.dumps({"variant": args.worker, "seconds": seconds, "peak_mib": (peak - before) / 1024,
                      "new_peak": peak > before_peak, "shape": list(out.shape)}))


def run(variant: str, args: argparse.Namespace, weights: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--out", str(out),
           "--weights", str(weights),
           "--latent", ",".join(map(str, args.latent)), "--tile-size", str(args.tile_size),
           "--tile-frames", str(args.tile_frames), "--overlap", str(args.overlap),
           "--manifest", str(args.manifest), "--alternate", str(args.alternate)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 16, 9, 32, 32], help="B,C,T,H,W of the latent")
    parser.add_argument("--tile-size", type=int, default=128, help="spatial tile, pixels")
    parser.add_argument("--tile-frames", type=int, default=16, help="temporal tile, frames")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--manifest", default=str(MANIFEST))
    parser.add_argument("--alternate", type=int, default=0,
                        help="also time ours and diffusers alternately in one process, N rounds each")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, latent {args.latent}, "
          f"tiles {args.tile_size} px / {args.tile_frames} frames, overlap {args.overlap}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_weights(_config(args), Path(tmp) / "vae")
        for mode in ("untiled", "tiled") if args.alternate else ():
            r = run(f"alternate-{mode}", args, weights, Path(tmp) / "unused.pt")
            print(f"{mode:8s} alternated in one process ({args.alternate} rounds, median): ours "
                  f"{r['ours']:.1f} s, diffusers {r['diffusers']:.1f} s, time {r['ours'] / r['diffusers']:.2f}x",
                  flush=True)
        for variant in filter(None, args.variants.split(",")):
            results[variant] = r = run(variant, args, weights, Path(tmp) / f"{variant}.pt")
            outputs[variant] = torch.load(Path(tmp) / f"{variant}.pt", weights_only=True)
            flag = "" if r["new_peak"] else "  (no new peak in the decode: an upper bound)"
            print(f"{variant:18s} {r['seconds']:8.1f} s  peak +{r['peak_mib']:8.0f} MiB  "
                  f"out {r['shape']}{flag}", flush=True)
    for mode in ("untiled", "tiled"):
        a, b = results.get(f"ours-{mode}"), results.get(f"diffusers-{mode}")
        if a and b:
            diff = (outputs[f"ours-{mode}"] - outputs[f"diffusers-{mode}"]).abs().max().item()
            print(f"{mode:8s} ours/diffusers: time {a['seconds'] / b['seconds']:.2f}x, "
                  f"peak memory {a['peak_mib'] / b['peak_mib']:.2f}x, max|diff| {diff:.2e}")
    for who in ("ours", "diffusers"):
        a, b = results.get(f"{who}-tiled"), results.get(f"{who}-untiled")
        if a and b:
            print(f"{who:9s} tiled/untiled: peak memory {a['peak_mib'] / b['peak_mib']:.2f}x, "
                  f"time {a['seconds'] / b['seconds']:.2f}x")


if __name__ == "__main__":
    main()
