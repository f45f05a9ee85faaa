"""Whole-pipeline benchmark: our HunyuanVideoPipeline against diffusers' HunyuanVideoPipeline.

    python scripts/benchmark.py                        # CPU, medium configuration, 3 repeats
    python scripts/benchmark.py --full --device cuda   # real sizes, bf16, 544x960 and 720x1280 x 129
    python scripts/benchmark.py --full --sizes 720x1280 --steps 10 --repeats 3 --json out.json

Both pipelines run in one process on the same configuration with the same random weights: the
diffusers models hold *the same tensors* as ours (the DiT through the key table of
hyvideo/convert.py -- split q/k/v are views of our fused qkv --, the VAE under identical keys,
the text encoders are the very same transformers modules), so the weights take memory once and
every difference in time or memory comes from the code that runs. Runs alternate (ours,
diffusers, then diffusers, ours, ...) ``--repeats`` times and medians are reported, so machine
load affects both alike; the table gives the ratio of the medians and the median of the
per-round ratios (the two runs of a round are adjacent in time, so load drift cancels). Both start from the same noise; the report prints the largest
difference of the final latents and of the decoded frames.

Stages, timed separately for each pipeline: text encoding (both encoders), every denoising step
(the first reported on its own: it pays one-off costs), VAE decode (with the same tiling).
Memory per stage is the peak above the memory held when the run starts (all weights): on an
accelerator ``max_memory_allocated`` after ``reset_peak_memory_stats`` (hyvideo.compat); on the
CPU the resident set size sampled every millisecond by a thread, with glibc's mmap threshold
fixed at 64 KiB so that freed tensors go back to the OS and RSS follows the live tensors
(tracemalloc does not see torch's allocations; ru_maxrss cannot be reset between stages).

DiT FLOPs per forward come from hyvideo/flops.py (nominal: all text_len text tokens); achieved
TFLOP/s = FLOPs x DiT rows per step / seconds per steady-state step, MFU = that / --peak-tflops.

Configurations: ``medium`` (CPU default: DiT hidden 1024, 8 heads, 2 double + 4 single blocks,
a 4-layer Llama of width 1024, CLIP-L shapes, a VAE at 1/8 of the real widths, 17 frames at
256x256) and ``tiny`` (the tiny-random sizes, for smoke tests); ``--full`` (accelerator only):
the 13B DiT of configs/HYVideo-T2-cfgdistill.json in bf16, the real VAE in fp16, Llama-3-8B
and CLIP-L shapes in fp16, at 129 frames, built with random weights on the meta device and
filled in place (no PyTorch default init).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import functools
import json
import math
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hyvideo import compat
from hyvideo.dit.config import DiTConfig
from hyvideo.pipeline.variants import SamplingDefaults, variant_spec
from hyvideo.text.clip import text_tower
from hyvideo.runtime.flops import dit_forward_flops
from hyvideo.vae import VAEConfig

PROMPT = "A cat walks on the grass, realistic style."
SEED = 0
EMBEDDED_CFG = 6.0
FLOW_SHIFT = 7.0
DEFAULT_PEAK_TFLOPS = 989.0  # H100 / H200 SXM dense bf16 (NVIDIA datasheet: 989.4; 1979 is with sparsity)

# The shapes of the released text encoders (llava-llama-3-8b's language model, CLIP-L's text
# tower) and VAE (ckpts/hunyuan-video-t2v-720p/vae/config.json).
LLAMA_3_8B = {"vocab_size": 128320, "hidden_size": 4096, "intermediate_size": 14336,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
              "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0}
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
          "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
          "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": 0,
          "eos_token_id": 2, "pad_token_id": 1}
REAL_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
            "latent_channels": 16, "norm_num_groups": 32, "sample_size": 256, "sample_tsize": 64,
            "scaling_factor": 0.476986}


@dataclass(frozen=True)
class BenchSetup:
    """Sizes and precisions of every component, and the video to generate."""

    name: str
    dit: DiTConfig
    vae: VAEConfig
    llm: dict  # transformers.LlamaConfig keyword arguments
    clip: dict  # transformers.CLIPTextConfig keyword arguments
    height: int
    width: int
    frames: int
    dit_dtype: torch.dtype = torch.float32
    vae_dtype: torch.dtype = torch.float32
    text_dtype: torch.dtype = torch.float32
    text_len: int = 256

    def describe(self) -> str:
        d, v = self.dit, self.vae
        return (f"{self.name}: DiT hidden {d.hidden_size}, {d.heads_num} heads, "
                f"{d.mm_double_blocks_depth} double + {d.mm_single_blocks_depth} single blocks "
                f"({str(self.dit_dtype).removeprefix('torch.')}); VAE widths "
                f"{list(v.block_out_channels)} ({str(self.vae_dtype).removeprefix('torch.')}); "
                f"Llama {self.llm['num_hidden_layers']} x {self.llm['hidden_size']}, CLIP "
                f"{self.clip['num_hidden_layers']} x {self.clip['hidden_size']} "
                f"({str(self.text_dtype).removeprefix('torch.')}); video {self.frames} frames at "
                f"{self.height}x{self.width}")


def _released_dit(**overrides) -> DiTConfig:
    data = variant_spec("HYVideo-T/2-cfgdistill")["dit"]
    return DiTConfig.from_dict({**data, **overrides})


def make_setup(preset: str, height: int | None = None, width: int | None = None,
               frames: int | None = None) -> BenchSetup:
    """``tiny``, ``medium`` (CPU) or ``full`` (the released sizes); size overrides optional."""
    if preset == "full":
        setup = BenchSetup("full", _released_dit(), VAEConfig.from_dict(REAL_VAE), LLAMA_3_8B,
                           CLIP_L, 720, 1280, 129, torch.bfloat16, torch.float16, torch.float16)
    elif preset == "medium":
        llm = dict(LLAMA_3_8B, hidden_size=1024, intermediate_size=3584, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=2)
        dit = _released_dit(hidden_size=1024, heads_num=8, mm_double_blocks_depth=2,
                            mm_single_blocks_depth=4, text_states_dim=1024)
        vae = VAEConfig.from_dict(dict(REAL_VAE, block_out_channels=[16, 32, 64, 64],
                                       norm_num_groups=8))
        setup = BenchSetup("medium", dit, vae, llm, CLIP_L, 256, 256, 17)
    elif preset == "tiny":
        spec = variant_spec("tiny-random")
        dit = _released_dit(**spec["dit"])
        setup = BenchSetup("tiny", dit, VAEConfig.from_dict(spec["vae"]), spec["text_encoder"],
                           spec["text_encoder_2"], 64, 64, 9)
    else:
        raise ValueError(f"unknown configuration {preset!r}; choose tiny, medium or full")
    return replace(setup, height=setup.height if height is None else height,
                   width=setup.width if width is None else width,
                   frames=setup.frames if frames is None else frames)


# ---- random models, built on the meta device and filled in place ----------------------------

def init_random_(module: torch.nn.Module, seed: int) -> None:
    """Random weights in place, one tensor at a time (fast on any device): matrices and kernels
    N(0, 1/fan_in) so activations stay O(1) through deep stacks, norm scales 1 + N(0, 0.02^2),
    other vectors (biases) N(0, 0.02^2)."""
    first = next(module.parameters())
    gen = torch.Generator(first.device).manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            is_norm = "norm" in type(sub).__name__.lower()
            for name, p in sub.named_parameters(recurse=False):
                if p.ndim >= 2:
                    p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)
                else:
                    p.normal_(1.0 if is_norm and name == "weight" else 0.0, 0.02, generator=gen)


def _materialize(module: torch.nn.Module, device: torch.device, seed: int) -> torch.nn.Module:
    """A meta-built module (already in its dtypes: casting on meta is free) allocated on
    ``device`` and filled by :func:`init_random_`."""
    module.to_empty(device=device)
    init_random_(module, seed)
    return module.eval().requires_grad_(False)


def _meta_llama(config: dict, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaModel

    with torch.device("meta"):
        return LlamaModel(LlamaConfig(**config)).to(dtype)


def _meta_clip(config: dict, dtype: torch.dtype):
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        return CLIPTextModel(CLIPTextConfig(**config)).to(dtype)


def build_text_models(setup: BenchSetup, device: torch.device, seed: int = SEED):
    """(LlamaModel, CLIPTextModel) with random weights; their non-persistent buffers (RoPE
    frequencies, CLIP position ids) are computed again, since a meta build leaves them empty."""
    llm = _materialize(_meta_llama(setup.llm, setup.text_dtype), device, seed + 1)
    llm.rotary_emb = type(llm.rotary_emb)(config=llm.config, device=device)
    clip = _materialize(_meta_clip(setup.clip, setup.text_dtype), device, seed + 2)
    emb = text_tower(clip).embeddings
    emb.position_ids = torch.arange(emb.position_embedding.num_embeddings, device=device)[None]
    for name, model in (("Llama", llm), ("CLIP", clip)):
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"{name}: tensors left on the meta device: {left[:5]}")
    return llm, clip


@functools.cache
def tokenizers():
    """The real llava-Llama-3 and CLIP tokenizers, built offline once per process."""
    from hyvideo.text import build_llava_llama3_tokenizer
    from hyvideo.pipeline.tiny import offline_clip_tokenizer

    return build_llava_llama3_tokenizer(), offline_clip_tokenizer()


def _in_dtype(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state dict with every floating tensor in ``dtype``: the tensors already in it are
    passed on as they are (shared), the others copied -- diffusers runs every layer in the
    model dtype, where ours keeps ``final_layer.linear`` in float32 like the reference."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def build_dit_pair(setup: BenchSetup, device: torch.device, attention: str, seed: int = SEED):
    """Our DiT with random weights, and diffusers' transformer holding the same tensors."""
    from diffusers import HunyuanVideoTransformer3DModel

    from hyvideo.checkpoints.keys import dit_to_diffusers
    from hyvideo.dit.config import dit_config_to_diffusers
    from hyvideo.dit.loader import build_dit

    c = setup.dit
    ours = _materialize(build_dit(c, dtype=setup.dit_dtype, device="meta", attention_backend=attention),
                        device, seed)
    with torch.device("meta"):
        theirs = HunyuanVideoTransformer3DModel(**dit_config_to_diffusers(c))
    theirs.load_state_dict(_in_dtype(dit_to_diffusers(ours.state_dict()), setup.dit_dtype),
                           strict=True, assign=True)
    return ours, theirs.eval().requires_grad_(False)


def build_vae_pair(setup: BenchSetup, device: torch.device, seed: int = SEED):
    """Our causal VAE with random weights, and diffusers' AutoencoderKLHunyuanVideo sharing them
    (the official VAE keys are diffusers' keys)."""
    from diffusers import AutoencoderKLHunyuanVideo

    from hyvideo.vae import build_vae

    v = setup.vae
    ours = _materialize(build_vae(v, device="meta", dtype=setup.vae_dtype), device, seed + 3)
    with torch.device("meta"):
        theirs = AutoencoderKLHunyuanVideo(
            in_channels=v.in_channels, out_channels=v.out_channels, latent_channels=v.latent_channels,
            down_block_types=("HunyuanVideoDownBlock3D",) * v.num_blocks,
            up_block_types=("HunyuanVideoUpBlock3D",) * v.num_blocks,
            block_out_channels=tuple(v.block_out_channels), layers_per_block=v.layers_per_block,
            norm_num_groups=v.norm_num_groups, scaling_factor=v.scaling_factor,
            spatial_compression_ratio=v.spatial_compression_ratio,
            temporal_compression_ratio=v.time_compression_ratio,
            mid_block_add_attention=v.mid_block_add_attention)
    theirs.load_state_dict(_in_dtype(ours.state_dict(), setup.vae_dtype), strict=True, assign=True)
    return ours, theirs.eval().requires_grad_(False)


def _same_tiling(ours_vae, theirs_vae, tiling: bool) -> None:
    """diffusers' VAE tiles like ours (the official tile sizes and overlap), or not at all."""
    if not tiling:
        theirs_vae.use_framewise_decoding = False  # it would tile in time even with tiling off
        theirs_vae.disable_tiling()
        return
    t = ours_vae.default_tiling
    s, ts = t.sample_size, t.sample_tsize
    theirs_vae.enable_tiling(
        tile_sample_min_height=s, tile_sample_min_width=s, tile_sample_min_num_frames=ts,
        tile_sample_stride_height=int(s * (1 - t.overlap)),
        tile_sample_stride_width=int(s * (1 - t.overlap)),
        tile_sample_stride_num_frames=int(ts * (1 - t.overlap)))


@dataclass
class Pipelines:
    ours: object  # hyvideo.pipeline.t2v.HunyuanVideoPipeline
    diffusers: object  # diffusers.HunyuanVideoPipeline
    weight_bytes: int  # every tensor held, counted once
    shared_bytes: int  # bytes of diffusers' DiT and VAE tensors that are ours too
    diffusers_bytes: int  # bytes of diffusers' DiT and VAE tensors


def build_pipelines(setup: BenchSetup, device: torch.device, attention: str = "sdpa",
                    diffusers_attention: str | None = None, vae_tiling: bool = True) -> Pipelines:
    """Both pipelines over the same random weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers import HunyuanVideoPipeline as DiffusersPipeline

    from hyvideo.pipeline.geometry import Geometry
    from hyvideo.pipeline.t2v import HunyuanVideoPipeline
    from hyvideo.text import CLIPTextEncoder, LLMTextEncoder, TextEncoders

    llm_tok, clip_tok = tokenizers()
    llm, clip = build_text_models(setup, device)
    dit, dit_d = build_dit_pair(setup, device, attention)
    vae, vae_d = build_vae_pair(setup, device)
    if diffusers_attention:
        dit_d.set_attention_backend(diffusers_attention)
    _same_tiling(vae, vae_d, vae_tiling)
    text = TextEncoders(LLMTextEncoder(llm, llm_tok), CLIPTextEncoder(clip, clip_tok))
    defaults = SamplingDefaults(height=setup.height, width=setup.width, video_length=setup.frames,
                                flow_shift=FLOW_SHIFT, embedded_cfg_scale=EMBEDDED_CFG)
    geometry = Geometry(patch_size=tuple(setup.dit.patch_size), heads=setup.dit.heads_num)
    ours = HunyuanVideoPipeline(dit, vae, text, device=device, name=f"benchmark-{setup.name}",
                                defaults=defaults, geometry=geometry, vae_tiling=vae_tiling)
    theirs = DiffusersPipeline(text_encoder=llm, tokenizer=llm_tok, transformer=dit_d, vae=vae_d,
                               scheduler=FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT),
                               text_encoder_2=clip, tokenizer_2=clip_tok)
    theirs.set_progress_bar_config(disable=True)
    own = {t.untyped_storage().data_ptr() for m in (llm, clip, dit, vae)
           for t in [*m.parameters(), *m.buffers()]}
    theirs_tensors = [t for m in (dit_d, vae_d) for t in [*m.parameters(), *m.buffers()]]
    shared = sum(t.nbytes for t in theirs_tensors if t.untyped_storage().data_ptr() in own)
    theirs_bytes = sum(t.nbytes for t in theirs_tensors)
    total = sum(t.nbytes for m in (llm, clip, dit, vae) for t in [*m.parameters(), *m.buffers()])
    return Pipelines(ours, theirs, total + theirs_bytes - shared, shared, theirs_bytes)


# ---- measuring ------------------------------------------------------------------------------

class RssMeter:
    """CPU: peak resident set size above the start, sampled every millisecond by a thread
    (torch kernels release the GIL, so the sampler runs while they do)."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.base = self.peak = self._rss()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self._rss()
            with self._lock:
                self.peak = max(self.peak, rss)

    def start(self) -> None:
        self.base = self.peak = self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def mark(self) -> int:
        """Peak bytes above the start since the previous mark (then the peak restarts)."""
        now = self._rss()
        with self._lock:
            peak, self.peak = max(self.peak, now), now
        return peak - self.base

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class AcceleratorMeter:
    """Accelerator: peak allocated bytes above the start, per stage (the allocator's counters)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0

    def start(self) -> None:
        compat.synchronize(self.device)
        self.base = compat.memory_allocated(self.device) or 0
        compat.reset_peak_memory_stats(self.device)

    def mark(self) -> int:
        compat.synchronize(self.device)
        peak = compat.max_memory_allocated(self.device) or 0
        compat.reset_peak_memory_stats(self.device)
        return peak - self.base

    def stop(self) -> None:
        pass


def memory_meter(device: torch.device):
    return RssMeter() if device.type == "cpu" else AcceleratorMeter(device)


@dataclass
class StageClock:
    """Laps of one run: (stage, seconds, peak bytes above the run's start) in order."""

    device: torch.device
    meter: object
    laps: list[tuple[str, float, int]] = field(default_factory=list)
    _t: float = 0.0

    def start(self) -> None:
        self.laps.clear()
        self.meter.start()
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        compat.synchronize(self.device)  # no-op on the CPU
        now = time.perf_counter()
        self.laps.append((stage, now - self._t, self.meter.mark()))
        self._t = time.perf_counter()  # the memory read is not charged to the next stage

    def stop(self) -> None:
        self.meter.stop()


def run_ours(pipe, setup: BenchSetup, steps: int, clock: StageClock):
    """One generation through our pipeline; laps at its progress events."""
    request = pipe.request(PROMPT, infer_steps=steps, seed=SEED)

    def on_event(event) -> None:
        if event.stage == "text" and event.step == 1:
            clock.lap("text")
        elif event.stage == "denoise":
            clock.lap("step")
        elif event.stage == "decode" and event.step == 0:
            clock.lap("other")
        elif event.stage == "decode" and event.step == event.steps:
            clock.lap("decode")

    clock.start()
    result = pipe(request, callback=on_event, show_progress=False)
    clock.lap("other")
    clock.stop()
    return result.latents.float(), result.videos.float()  # [1, 16, T', H', W'], [1, 3, T, H, W]


def run_diffusers(pipe, setup: BenchSetup, steps: int, clock: StageClock, noise: torch.Tensor):
    """One generation through diffusers, cut at its stages: ``encode_prompt``, ``__call__`` up
    to the latents (laps at ``callback_on_step_end``), then the decode and post-processing that
    ``__call__`` would run (to tensors instead of PIL images, as ours returns)."""
    device = noise.device

    def on_step(_pipe, _i, _t, _kwargs) -> dict:
        clock.lap("step")
        return {}

    with torch.no_grad():  # what diffusers' __call__ runs under
        clock.start()
        embeds, pooled, mask = pipe.encode_prompt(prompt=PROMPT, device=device,
                                                  max_sequence_length=setup.text_len)
        clock.lap("text")
        latents = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, prompt_attention_mask=mask,
                       height=setup.height, width=setup.width, num_frames=setup.frames,
                       num_inference_steps=steps, guidance_scale=EMBEDDED_CFG, latents=noise,
                       output_type="latent", return_dict=False, callback_on_step_end=on_step)[0]
        clock.lap("other")
        z = latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
        video = pipe.vae.decode(z, return_dict=False)[0]
        frames = pipe.video_processor.postprocess_video(video, output_type="pt").cpu()
        clock.lap("decode")
    clock.stop()
    return latents.float().cpu(), frames.permute(0, 2, 1, 3, 4).float()  # -> [1, 3, T, H, W]


def starting_noise(pipe, setup: BenchSetup, device: torch.device) -> torch.Tensor:
    """The noise our pipeline draws for ``SEED`` (same generator, shape and dtype)."""
    from hyvideo.pipeline.t2v import draw_noise

    thw = pipe.vae.latent_shape(setup.frames, setup.height, setup.width)
    return draw_noise((pipe.dit.config.in_channels, *thw), [SEED], device, setup.text_dtype)


# ---- the benchmark --------------------------------------------------------------------------

def stage_figures(laps: list[tuple[str, float, int]]) -> dict[str, float]:
    """Seconds and peak bytes of each stage of one run."""
    steps = [(s, m) for name, s, m in laps if name == "step"]
    text = [(s, m) for name, s, m in laps if name == "text"]
    decode = [(s, m) for name, s, m in laps if name == "decode"]
    later = [s for s, _ in steps[1:]] or [steps[0][0]]
    return {
        "text_s": sum(s for s, _ in text), "first_step_s": steps[0][0],
        "step_s": statistics.fmean(later), "denoise_s": sum(s for s, _ in steps),
        "decode_s": sum(s for s, _ in decode), "total_s": sum(s for _, s, _ in laps),
        "text_peak": max(m for _, m in text), "denoise_peak": max(m for _, m in steps),
        "decode_peak": max(m for _, m in decode), "peak": max(m for _, _, m in laps),
    }


def summarize(laps_per_run: list[list[tuple[str, float, int]]], figures=stage_figures) -> dict[str, float]:
    """Medians over runs of each stage's seconds and peak bytes."""
    rows = [figures(laps) for laps in laps_per_run]
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def paired_ratios(ours: list, theirs: list, figures=stage_figures) -> dict[str, float | None]:
    """Median over rounds of ours / diffusers within each round: the two runs of a round are
    adjacent in time, so a change of machine load between rounds cancels out."""
    pairs = [(figures(a), figures(b)) for a, b in zip(ours, theirs, strict=True)]
    out = {}
    for k in pairs[0][0]:
        ratios = [a[k] / b[k] for a, b in pairs if b[k] > 0]
        out[k] = statistics.median(ratios) if ratios else None
    return out


def run_alternated(pipes: Pipelines, setup: BenchSetup, device: torch.device, steps: int,
                   repeats: int, warmup: int = 0) -> dict:
    """Repeats of (ours, diffusers) with the order swapped every round; raw laps, medians and
    the numerical agreement of the two."""
    noise = starting_noise(pipes.ours, setup, device)
    runners = {"ours": lambda clock, n: run_ours(pipes.ours, setup, n, clock),
               "diffusers": lambda clock, n: run_diffusers(pipes.diffusers, setup, n, clock, noise)}
    laps, outputs = alternate(runners, device, steps, repeats, warmup)
    (lat_a, vid_a), (lat_b, vid_b) = outputs["ours"], outputs["diffusers"]
    agreement = {"latents_max_abs_diff": float((lat_a - lat_b).abs().max()),
                 "latents_max_abs": float(lat_b.abs().max()),
                 "frames_max_abs_diff": float((vid_a - vid_b).abs().max()),
                 "frames_shape": list(vid_a.shape)}
    return {"laps": laps, "summary": {k: summarize(v) for k, v in laps.items()},
            "paired_ratio": paired_ratios(laps["ours"], laps["diffusers"]), "agreement": agreement}


def alternate(runners: dict, device: torch.device, steps: int, repeats: int, warmup: int):
    """Warm-up runs of each, then ``repeats`` rounds of (ours, diffusers) with the order swapped
    every round: the laps of every run, and the first output of each."""
    clock = StageClock(device, memory_meter(device))
    for _ in range(warmup):  # one-step runs: kernels, allocator pools, autotuning
        for run in runners.values():
            run(clock, 1)
    laps: dict[str, list] = {"ours": [], "diffusers": []}
    outputs = {}
    for r in range(repeats):
        for who in ("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours"):
            out = runners[who](clock, steps)
            laps[who].append(list(clock.laps))
            outputs.setdefault(who, out)
    return laps, outputs


def benchmark(setup: BenchSetup, device: torch.device, *, steps: int, repeats: int,
              warmup: int = 0, attention: str = "sdpa", diffusers_attention: str | None = None,
              vae_tiling: bool = True, peak_tflops: float | None = None) -> dict:
    """Build both pipelines, run them alternated, and return every figure of the report."""
    if steps < 1 or repeats < 1 or warmup < 0:
        raise ValueError("--steps and --repeats must be >= 1 and --warmup >= 0")
    from hyvideo.pipeline.geometry import Geometry
    from hyvideo.pipeline.types import GenerationRequest

    # Sizes checked before minutes of building: a one-line UsageError (a ValueError) naming the fix.
    Geometry(patch_size=tuple(setup.dit.patch_size), heads=setup.dit.heads_num).check_request(
        GenerationRequest(PROMPT, height=setup.height, width=setup.width, video_length=setup.frames))
    pipes = build_pipelines(setup, device, attention, diffusers_attention, vae_tiling)
    result = run_alternated(pipes, setup, device, steps, repeats, warmup)
    thw = pipes.ours.vae.latent_shape(setup.frames, setup.height, setup.width)
    flops = dit_forward_flops(setup.dit, thw, setup.text_len)
    rows = 1  # the cfg-distilled model: one DiT row per step (real CFG would run 2)
    for s in result["summary"].values():
        s["tflops"] = flops.total * rows / s["step_s"] / 1e12
        s["mfu"] = s["tflops"] / peak_tflops if peak_tflops else None
    result.update(setup=setup.describe(), latent_thw=list(thw), steps=steps, repeats=repeats,
                  warmup=warmup, vae_tiling=vae_tiling, attention=attention,
                  flops=flops.as_dict(), dit_rows_per_step=rows, peak_tflops=peak_tflops,
                  weight_bytes=pipes.weight_bytes, shared_bytes=pipes.shared_bytes,
                  diffusers_bytes=pipes.diffusers_bytes)
    return result


# ---- the report -----------------------------------------------------------------------------

TIME_ROWS = [("text encoding", "text_s"), ("first denoising step", "first_step_s"),
             ("denoising step (mean of 2..N)", "step_s"), ("all denoising steps", "denoise_s"),
             ("VAE decode", "decode_s"), ("whole pipeline", "total_s")]
MEMORY_ROWS = [("text encoding", "text_peak"), ("denoising (max over steps)", "denoise_peak"),
               ("VAE decode", "decode_peak"), ("whole pipeline", "peak")]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def format_report(result: dict) -> str:
    """The stage table of one configuration (time, memory, throughput, agreement)."""
    ours, theirs = result["summary"]["ours"], result["summary"]["diffusers"]
    mib = 2**20
    lines = [f"## {result['setup']}",
             (f"latent {result['latent_thw']}, {result['steps']} steps, {result['repeats']} "
             f"alternated repeats (medians), warm-up runs {result['warmup']}, VAE tiling "
             f"{'on' if result['vae_tiling'] else 'off'}, our attention {result['attention']}; "
             f"weights {result['weight_bytes'] / mib:.0f} MiB in all, held once (text encoders: "
             f"the same modules; diffusers' DiT and VAE: {result['shared_bytes'] / mib:.0f} of "
             f"{result['diffusers_bytes'] / mib:.0f} MiB are our tensors)"), "",
             "| stage | ours | diffusers | ours / diffusers | per-round ratio |",
             "|---|---|---|---|---|"]
    paired = result["paired_ratio"]

    def row(name: str, key: str, scale: float, unit: str, digits: int) -> str:
        a, b, p = ours[key], theirs[key], paired[key]
        return (f"| {name} | {a / scale:.{digits}f} {unit} | {b / scale:.{digits}f} {unit} | "
                f"{_ratio(a, b)} | {f'{p:.2f}x' if p is not None else 'n/a'} |")

    lines += [row(name, k, 1, "s", 3) for name, k in TIME_ROWS]
    lines += [row(f"peak memory: {name}", k, mib, "MiB", 0) for name, k in MEMORY_ROWS]
    f = result["flops"]
    lines += ["", (f"DiT forward: {f['total'] / 1e12:.3f} TFLOP ({f['attention_share']:.1%} "
                   f"attention; {result['dit_rows_per_step']} row per step)")]
    for who, s in (("ours", ours), ("diffusers", theirs)):
        mfu = (f", MFU {s['mfu']:.1%} of {result['peak_tflops']:.0f} TFLOP/s"
               if s["mfu"] is not None else "")
        lines.append(f"{who}: {s['tflops'] * 1000:.1f} GFLOP/s achieved per steady step{mfu}")
    a = result["agreement"]
    lines.append(f"agreement: max |ours - diffusers| final latents {a['latents_max_abs_diff']:.2e} "
                 f"(max |latent| {a['latents_max_abs']:.2f}), decoded frames "
                 f"{a['frames_max_abs_diff']:.2e} (frames {a['frames_shape']} in [0, 1])")
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    import diffusers
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    else:
        name = str(device)
    return {"command": " ".join(["python", *map(shlex.quote, sys.argv)]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": f"{device} ({name})", "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def fix_malloc_mmap_threshold(threshold: int = 65536) -> bool:
    """glibc only: serve every allocation above ``threshold`` bytes by mmap, so a freed tensor
    leaves the resident set at once (what MALLOC_MMAP_THRESHOLD_ does from the environment)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_mmap_threshold = -3
    return bool(libc.mallopt(m_mmap_threshold, threshold))


# ---- command line ---------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HEIGHTxWIDTH, e.g. 544x960") from None
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help="real model sizes in bf16/fp16 at 129 frames (accelerator only)")
    p.add_argument("--config", choices=("medium", "tiny"), default="medium",
                   help="size of the random models without --full (default medium)")
    p.add_argument("--sizes", default=None,
                   help="comma-separated HEIGHTxWIDTH list (--full default: 544x960,720x1280; "
                        "medium: 256x256)")
    p.add_argument("--frames", type=int, default=None, help="video frames, 4n+1 (full: 129)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps per run (default: 3 on the CPU, 10 with --full)")
    add_comparison_args(p)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help=f"hardware peak for MFU (default {DEFAULT_PEAK_TFLOPS:.0f} on an accelerator, "
                        "none on the CPU)")
    return p.parse_args(argv)


def add_comparison_args(p: argparse.ArgumentParser) -> None:
    """The options every ours-against-diffusers benchmark takes (this one and benchmark_i2v.py)."""
    p.add_argument("--repeats", type=int, default=3, help="alternated runs of each pipeline")
    p.add_argument("--warmup", type=int, default=None,
                   help="one-step warm-up runs of each before timing (default: 0 CPU, 1 otherwise)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the accelerator if any)")
    p.add_argument("--attention", default="sdpa",
                   help="our attention backend (sdpa, flash, flex, sage, auto)")
    p.add_argument("--diffusers-attention", default=None,
                   help="diffusers' attention backend (set_attention_backend), default its own")
    p.add_argument("--no-vae-tiling", dest="vae_tiling", action="store_false",
                   help="decode untiled in both (default: the official tiles in both)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write every figure here")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hyvideo.runtime.build import default_device

    device = torch.device(args.device) if args.device else default_device()
    if args.full and device.type == "cpu":
        print("error: --full needs a GPU (the 13B DiT and an 8B Llama in bf16/fp16); run it on a "
              "CUDA machine with --device cuda, or drop --full for the CPU medium configuration",
              file=sys.stderr)
        return 2
    try:
        sizes = [_size(s) for s in args.sizes.split(",")] if args.sizes else [None]
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.full and sizes == [None]:
        sizes = [(544, 960), (720, 1280)]
    steps = args.steps if args.steps is not None else (10 if args.full else 3)
    warmup = args.warmup if args.warmup is not None else (0 if device.type == "cpu" else 1)
    peak = args.peak_tflops
    if peak is None and device.type != "cpu":
        peak = DEFAULT_PEAK_TFLOPS
    if peak is not None and peak <= 0:
        print(f"error: --peak-tflops must be > 0, got {peak}", file=sys.stderr)
        return 2
    if device.type == "cpu":
        fix_malloc_mmap_threshold()
    env = environment(device)
    print(f"command: {env['command']}\ndate: {env['date']}\ndevice: {env['device']}\n"
          f"torch {env['torch']}, diffusers {env['diffusers']}, transformers {env['transformers']}, "
          f"load average {env['load_average']}", flush=True)
    results = []
    for size in sizes:
        h, w = size or (None, None)
        try:
            setup = make_setup("full" if args.full else args.config, h, w, args.frames)
            result = benchmark(setup, device, steps=steps, repeats=args.repeats, warmup=warmup,
                               attention=args.attention, diffusers_attention=args.diffusers_attention,
                               vae_tiling=args.vae_tiling, peak_tflops=peak)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("\n" + format_report(result), flush=True)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps({**env, "results": results}, indent=1, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
