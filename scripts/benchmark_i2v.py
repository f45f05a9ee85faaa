"""Whole-pipeline benchmark, image to video: our HunyuanVideoI2VPipeline against diffusers'
HunyuanVideoImageToVideoPipeline.

    python scripts/benchmark_i2v.py --repeats 3                  # CPU, medium configuration
    python scripts/benchmark_i2v.py --config tiny --repeats 1    # seconds: a smoke test
    python scripts/benchmark_i2v.py --full --device cuda         # real sizes (accelerator only)

The method is scripts/benchmark.py's (read its docstring): both pipelines in one process on the
same configuration and the same random weight tensors, runs alternated (ours, diffusers, then
diffusers, ours, ...) ``--repeats`` times, medians and per-round ratios, memory per stage above
the memory held at the start of the run. What is image-to-video here:

* **DiT**: the token_replace transformer (HYVideo-I2V: the released guidance-distilled DiT plus
  the image-token modulation), converted through the key table (hyvideo/checkpoints/keys.py) into
  diffusers' ``HunyuanVideoTransformer3DModel(image_condition_type="token_replace")``, which holds
  our tensors (q/k/v as views of our fused qkv).
* **Text**: each pipeline encodes the prompt *with the image* by its own code: ours through
  transformers' ``LlavaModel``, diffusers' through ``LlavaForConditionalGeneration`` whose
  ``.model`` *is* our LlavaModel (same tensors) plus the language-model head it carries (the
  released diffusers folder has one; its forward computes logits for every position, which the
  pipeline then ignores: a real cost of diffusers' encoder, counted in its text stage). CLIP-L's
  pooled output: the same module in both.
* **Image**: one synthetic picture at the video size, so neither pipeline resizes it (our bucket
  choice is ours alone; diffusers takes height and width); the VAE encodes it to its posterior
  mode x the scaling factor in both.
* **Stability**: diffusers' pipeline always mixes the image latent into the starting noise
  (``latents * 0.999 + image * 0.001``); ours does that with ``--i2v-stability``, which is on here.
  Both start from the same noise (our generator's draw for the seed).

Stages: text encoding (LLaVA with the image + CLIP), image encoding (VAE), every denoising step
(the first on its own), VAE decode. Agreement: the text states (valid tokens) and pooled vector,
the final latents (frame 0 is the image latent in both) and the decoded frames.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT = "A cat walks on the grass, realistic style."
SEED = 0
EMBEDDED_CFG = 6.0
FLOW_SHIFT = 7.0  # the official README's value with --i2v-stability
IMAGE_TOKEN, PAD_TOKEN = 128257, 128258  # llava-llama-3-8b's <image> and <pad>


def _t2v_benchmark():
    """scripts/benchmark.py as a module (its random models, meters, clocks and helpers)."""
    name = "hyvideo_benchmark_script"  # the name tests/test_benchmark.py loads it under
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("benchmark.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
    return sys.modules[name]


bench = _t2v_benchmark()

# The LLaVA's vision tower: CLIP ViT-L/14-336 (576 patches, as the official template needs);
# medium keeps its width and 4 of its 24 layers (as the medium Llama keeps 4 of 32).
VIT_L_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
             "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768,
             "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}


@dataclass(frozen=True)
class I2VSetup:
    """scripts/benchmark.py's setup (DiT, VAE, Llama, CLIP, video) with a token_replace DiT, and
    the vision tower that makes the Llama a LLaVA."""

    base: object  # bench.BenchSetup; base.llm is the LLaVA's language model
    vision: dict  # transformers.CLIPVisionConfig keyword arguments

    def describe(self) -> str:
        v = self.vision
        return (f"{self.base.describe()}; image-to-video (token_replace DiT), LLaVA vision tower "
                f"{v['num_hidden_layers']} x {v['hidden_size']} at {v['image_size']} px")

    def llava_config(self):
        from hyvideo.text.llava import llava_config

        return llava_config({
            "model_type": "llava", "text_config": {"model_type": "llama", **self.base.llm},
            "vision_config": {"model_type": "clip_vision_model", **self.vision},
            "image_token_index": IMAGE_TOKEN, "pad_token_id": PAD_TOKEN, "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        }, "benchmark")


def make_setup(preset: str, height: int | None = None, width: int | None = None,
               frames: int | None = None) -> I2VSetup:
    """``tiny``, ``medium`` (CPU) or ``full``: scripts/benchmark.py's sizes, an I2V DiT."""
    base = bench.make_setup(preset, height, width, frames)
    base = replace(base, dit=replace(base.dit, i2v_condition_type="token_replace"))
    if preset == "tiny":
        from hyvideo.pipeline.variants import variant_spec

        vision = variant_spec("tiny-random-i2v")["text_encoder_i2v"]["vision_config"]
        vision = {k: v for k, v in vision.items() if k != "model_type"}
    elif preset == "medium":
        vision = dict(VIT_L_336, num_hidden_layers=4)
    else:
        vision = VIT_L_336
    return I2VSetup(base, vision)


# ---- the two pipelines over the same weights ---------------------------------------------------

def build_llava_pair(setup: I2VSetup, device: torch.device, seed: int = SEED):
    """(our LlavaModel, diffusers' LlavaForConditionalGeneration around it), random weights."""
    from transformers import LlavaForConditionalGeneration, LlavaModel

    from hyvideo.text.llava import vision_body

    config, dtype = setup.llava_config(), setup.base.text_dtype
    with torch.device("meta"):
        ours = LlavaModel(config).to(dtype)
        theirs = LlavaForConditionalGeneration(config).to(dtype)
    bench._materialize(ours, device, seed + 1)
    # Non-persistent buffers (RoPE frequencies, patch positions) are empty after a meta build.
    language = ours.language_model
    language.rotary_emb = type(language.rotary_emb)(config=language.config, device=device)
    embeddings = vision_body(ours).embeddings
    embeddings.position_ids = torch.arange(embeddings.num_positions, device=device).expand(1, -1)
    theirs.model = ours  # the same tensors; only the head is diffusers' own
    bench._materialize(theirs.lm_head, device, seed + 4)
    return ours, theirs.eval().requires_grad_(False)


def build_clip(setup: I2VSetup, device: torch.device, seed: int = SEED):
    from hyvideo.text.clip import text_tower

    clip = bench._materialize(bench._meta_clip(setup.base.clip, setup.base.text_dtype), device, seed + 2)
    emb = text_tower(clip).embeddings
    emb.position_ids = torch.arange(emb.position_embedding.num_embeddings, device=device)[None]
    return clip


def tensors(*modules) -> list[torch.Tensor]:
    return [t for m in modules for t in [*m.parameters(), *m.buffers()]]


def build_pipelines(setup: I2VSetup, device: torch.device, attention: str = "sdpa",
                    diffusers_attention: str | None = None, vae_tiling: bool = True):
    """bench.Pipelines of our HunyuanVideoI2VPipeline and diffusers' I2V pipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoImageToVideoPipeline

    from hyvideo.pipeline.geometry import Geometry
    from hyvideo.pipeline.i2v import HunyuanVideoI2VPipeline
    from hyvideo.pipeline.variants import SamplingDefaults
    from hyvideo.text import CLIPTextEncoder
    from hyvideo.text.llava import (I2VTextEncoders, LlavaEncodeSettings, LlavaTextImageEncoder,
                                    clip_image_processor, interleave_for)

    b = setup.base
    llm_tok, clip_tok = bench.tokenizers()
    llava, llava_d = build_llava_pair(setup, device)
    clip = build_clip(setup, device)
    dit, dit_d = bench.build_dit_pair(b, device, attention)
    vae, vae_d = bench.build_vae_pair(b, device)
    if diffusers_attention:
        dit_d.set_attention_backend(diffusers_attention)
    bench._same_tiling(vae, vae_d, vae_tiling)
    processor = clip_image_processor(setup.vision["image_size"])
    settings = LlavaEncodeSettings(b.text_len, 2, False, interleave_for("token_replace"))
    text = I2VTextEncoders(LlavaTextImageEncoder(llava, llm_tok, processor, settings, pad_token_id=PAD_TOKEN),
                           CLIPTextEncoder(clip, clip_tok))
    defaults = SamplingDefaults(height=b.height, width=b.width, video_length=b.frames,
                                flow_shift=FLOW_SHIFT, embedded_cfg_scale=EMBEDDED_CFG)
    geometry = Geometry(patch_size=tuple(b.dit.patch_size), heads=b.dit.heads_num)
    ours = HunyuanVideoI2VPipeline(dit, vae, text, device=device, name=f"benchmark-i2v-{b.name}",
                                   defaults=defaults, geometry=geometry, vae_tiling=vae_tiling)
    theirs = HunyuanVideoImageToVideoPipeline(
        text_encoder=llava_d, tokenizer=llm_tok, transformer=dit_d, vae=vae_d,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT), text_encoder_2=clip,
        tokenizer_2=clip_tok, image_processor=processor)
    theirs.set_progress_bar_config(disable=True)
    own = {t.untyped_storage().data_ptr() for t in tensors(llava, clip, dit, vae)}
    theirs_tensors = tensors(llava_d, dit_d, vae_d)
    shared = sum(t.nbytes for t in theirs_tensors if t.untyped_storage().data_ptr() in own)
    theirs_bytes = sum(t.nbytes for t in theirs_tensors)
    total = sum(t.nbytes for t in tensors(llava, clip, dit, vae))
    return bench.Pipelines(ours, theirs, total + theirs_bytes - shared, shared, theirs_bytes)


def make_image(height: int, width: int):
    """A deterministic picture at the video size: colour gradients, a disc and stripes."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 127 + 120 * np.sin(x / 7.0) * np.cos(y / 11.0)
    disc = (x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (min(height, width) * 0.2) ** 2
    rgb = np.stack([np.where(disc, 250, r), np.where(disc, 240, g), np.where(disc, 40, b)], -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def i2v_image(setup: I2VSetup):
    """Our I2VImage of :func:`make_image`: the picture is already the video size (no bucket)."""
    from hyvideo.pipeline.image_input import I2VImage, vae_pixels

    b = setup.base
    picture = make_image(b.height, b.width)
    return I2VImage(picture, b.height, b.width, vae_pixels(picture))


# ---- one run of each -------------------------------------------------------------------------

def run_ours(pipe, setup: I2VSetup, steps: int, clock, image):
    """One generation through our pipeline; laps at its progress events (the text stage ends
    where the VAE's encoder starts on the image)."""
    request = pipe.request(PROMPT, image, infer_steps=steps, seed=SEED, i2v_stability=True)

    def on_event(event) -> None:
        if event.stage == "text" and event.step == 1:
            clock.lap("image")
        elif event.stage == "denoise":
            clock.lap("step")
        elif event.stage == "decode" and event.step == 0:
            clock.lap("other")
        elif event.stage == "decode" and event.step == event.steps:
            clock.lap("decode")

    hook = pipe.vae.encoder.register_forward_pre_hook(lambda module, args: clock.lap("text"))
    try:
        clock.start()
        result = pipe(request, callback=on_event, show_progress=False)
        clock.lap("other")
    finally:
        hook.remove()
        clock.stop()
    return result.latents.float(), result.videos.float()  # [1, 16, T', H', W'], [1, 3, T, H, W]


def run_diffusers(pipe, setup: I2VSetup, steps: int, clock, noise: torch.Tensor, image):
    """One generation through diffusers, cut at its stages: ``encode_prompt`` (with the image),
    ``__call__`` up to the latents (its image encoding ends at the transformer's first call;
    steps at ``callback_on_step_end``), then the decode and post-processing ``__call__`` would
    run (to tensors, as ours returns)."""
    b, device = setup.base, noise.device
    first_call = [True]

    def before_dit(module, args, kwargs) -> None:
        if first_call[0]:
            clock.lap("image")
            first_call[0] = False

    def on_step(_pipe, _i, _t, _kwargs) -> dict:
        clock.lap("step")
        return {}

    hook = pipe.transformer.register_forward_pre_hook(before_dit, with_kwargs=True)
    try:
        with torch.no_grad():  # what diffusers' __call__ runs under
            clock.start()
            embeds, pooled, mask = pipe.encode_prompt(image=image.image, prompt=PROMPT, device=device,
                                                      max_sequence_length=b.text_len, image_embed_interleave=4)
            clock.lap("text")
            latents = pipe(image=image.image, prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                           prompt_attention_mask=mask, height=b.height, width=b.width, num_frames=b.frames,
                           num_inference_steps=steps, guidance_scale=EMBEDDED_CFG, latents=noise,
                           output_type="latent", return_dict=False, callback_on_step_end=on_step)[0]
            clock.lap("other")
            z = latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
            video = pipe.vae.decode(z, return_dict=False)[0]
            frames = pipe.video_processor.postprocess_video(video, output_type="pt").cpu()
            clock.lap("decode")
    finally:
        hook.remove()
        clock.stop()
    text = (embeds.float().cpu(), mask.cpu(), pooled.float().cpu())
    return latents.float().cpu(), frames.permute(0, 2, 1, 3, 4).float(), text  # -> [1, 3, T, H, W]


# ---- the benchmark --------------------------------------------------------------------------

TIME_ROWS = [("text encoding (LLaVA with the image, CLIP)", "text_s"), ("image encoding (VAE)", "image_s"),
             ("first denoising step", "first_step_s"), ("denoising step (mean of 2..N)", "step_s"),
             ("all denoising steps", "denoise_s"), ("VAE decode", "decode_s"), ("whole pipeline", "total_s")]
MEMORY_ROWS = [("text encoding", "text_peak"), ("image encoding", "image_peak"),
               ("denoising (max over steps)", "denoise_peak"), ("VAE decode", "decode_peak"),
               ("whole pipeline", "peak")]


def stage_figures(laps: list[tuple[str, float, int]]) -> dict[str, float]:
    """scripts/benchmark.py's figures of one run, plus the image-encoding stage."""
    figures = bench.stage_figures(laps)
    image = [(s, m) for name, s, m in laps if name == "image"]
    figures.update(image_s=sum(s for s, _ in image), image_peak=max(m for _, m in image))
    return figures


def text_agreement(pipe, image, theirs_text) -> dict[str, float | bool]:
    """Our conditioning of the prompt with the image against diffusers' (valid tokens only:
    padding positions are masked out of every attention)."""
    states_d, mask_d, pooled_d = theirs_text
    with torch.inference_mode():
        cond, _ = pipe.encode_prompt(pipe.request(PROMPT, image))
    states, mask, pooled = cond.states.float().cpu(), cond.mask.cpu(), cond.pooled.float().cpu()
    same_mask = mask.shape == mask_d.shape and bool(torch.equal(mask.long(), mask_d.long()))
    valid = mask[0].bool() if same_mask else torch.zeros(0, dtype=torch.bool)
    diff = float((states[0][valid] - states_d[0][valid]).abs().max()) if same_mask else float("nan")
    return {"text_mask_equal": same_mask, "text_tokens": int(valid.sum()),
            "text_states_max_abs_diff": diff, "text_states_max_abs": float(states_d[0][valid].abs().max()),
            "pooled_max_abs_diff": float((pooled - pooled_d).abs().max())}


def run_alternated(pipes, setup: I2VSetup, device: torch.device, steps: int, repeats: int,
                   warmup: int = 0) -> dict:
    """Repeats of (ours, diffusers) with the order swapped every round; raw laps, medians and
    the numerical agreement of the two."""
    image = i2v_image(setup)
    noise = bench.starting_noise(pipes.ours, setup.base, device)
    runners = {"ours": lambda clock, n: run_ours(pipes.ours, setup, n, clock, image),
               "diffusers": lambda clock, n: run_diffusers(pipes.diffusers, setup, n, clock, noise, image)}
    laps, outputs = bench.alternate(runners, device, steps, repeats, warmup)
    (lat_a, vid_a), (lat_b, vid_b, text_b) = outputs["ours"], outputs["diffusers"]
    agreement = {"latents_max_abs_diff": float((lat_a - lat_b).abs().max()),
                 "latents_max_abs": float(lat_b.abs().max()),
                 "image_latent_max_abs_diff": float((lat_a[:, :, :1] - lat_b[:, :, :1]).abs().max()),
                 "frames_max_abs_diff": float((vid_a - vid_b).abs().max()),
                 "frames_shape": list(vid_a.shape), **text_agreement(pipes.ours, image, text_b)}
    return {"laps": laps, "summary": {k: bench.summarize(v, stage_figures) for k, v in laps.items()},
            "paired_ratio": bench.paired_ratios(laps["ours"], laps["diffusers"], stage_figures),
            "agreement": agreement}


def benchmark(setup: I2VSetup, device: torch.device, *, steps: int, repeats: int, warmup: int = 0,
              attention: str = "sdpa", diffusers_attention: str | None = None,
              vae_tiling: bool = True) -> dict:
    """Build both pipelines, run them alternated, and return every figure of the report."""
    if steps < 1 or repeats < 1 or warmup < 0:
        raise ValueError("--steps and --repeats must be >= 1 and --warmup >= 0")
    from hyvideo.pipeline.geometry import Geometry
    from hyvideo.pipeline.types import GenerationRequest
    from hyvideo.runtime.flops import dit_forward_flops

    b = setup.base
    # Sizes checked before minutes of building; image-to-video needs more than one frame.
    Geometry(patch_size=tuple(b.dit.patch_size), heads=b.dit.heads_num).check_request(
        GenerationRequest(PROMPT, height=b.height, width=b.width, video_length=b.frames))
    if b.frames < 2:
        raise ValueError(f"--frames {b.frames}: image-to-video needs more than one frame (5, 9, 17, ...)")
    pipes = build_pipelines(setup, device, attention, diffusers_attention, vae_tiling)
    result = run_alternated(pipes, setup, device, steps, repeats, warmup)
    thw = pipes.ours.vae.latent_shape(b.frames, b.height, b.width)
    text_tokens = pipes.ours.text_encoders.llava.output_length  # 144 image + text_len - 4 prompt
    flops = dit_forward_flops(b.dit, thw, text_tokens)
    for s in result["summary"].values():
        s["tflops"] = flops.total / s["step_s"] / 1e12  # one DiT row per step (no real CFG)
    result.update(setup=setup.describe(), latent_thw=list(thw), steps=steps, repeats=repeats,
                  warmup=warmup, vae_tiling=vae_tiling, attention=attention, text_tokens=text_tokens,
                  flops=flops.as_dict(), weight_bytes=pipes.weight_bytes, shared_bytes=pipes.shared_bytes,
                  diffusers_bytes=pipes.diffusers_bytes)
    return result


# ---- the report -----------------------------------------------------------------------------

def _row(name: str, a: float, b: float, p: float | None, scale: float, unit: str, digits: int) -> str:
    ratio = f"{a / b:.2f}x" if b > 0 else "n/a"
    return (f"| {name} | {a / scale:.{digits}f} {unit} | {b / scale:.{digits}f} {unit} | {ratio} | "
            f"{f'{p:.2f}x' if p is not None else 'n/a'} |")


def format_report(result: dict) -> str:
    """The stage table (time, memory, throughput, agreement) as Markdown."""
    ours, theirs, paired = result["summary"]["ours"], result["summary"]["diffusers"], result["paired_ratio"]
    mib = 2**20
    lines = [f"## {result['setup']}",
             (f"latent {result['latent_thw']}, {result['steps']} steps, {result['repeats']} alternated "
              f"repeats (medians), warm-up runs {result['warmup']}, VAE tiling "
              f"{'on' if result['vae_tiling'] else 'off'}, our attention {result['attention']}; weights "
              f"{result['weight_bytes'] / mib:.0f} MiB in all, held once (diffusers' LLaVA, DiT and VAE: "
              f"{result['shared_bytes'] / mib:.0f} of {result['diffusers_bytes'] / mib:.0f} MiB are our "
              "tensors; the rest: its LLaVA's language-model head, the final layer's modulation with "
              "its halves swapped)"), "",
             "| stage | ours | diffusers | ours / diffusers | per-round ratio |", "|---|---|---|---|---|"]
    lines += [_row(name, ours[k], theirs[k], paired[k], 1, "s", 3) for name, k in TIME_ROWS]
    lines += [_row(f"peak memory: {name}", ours[k], theirs[k], paired[k], mib, "MiB", 0)
              for name, k in MEMORY_ROWS]
    f, a = result["flops"], result["agreement"]
    lines += ["", (f"DiT forward: {f['total'] / 1e12:.3f} TFLOP ({f['attention_share']:.1%} attention; "
                   f"{result['text_tokens']} text positions); achieved per steady step: ours "
                   f"{ours['tflops'] * 1000:.1f} GFLOP/s, diffusers {theirs['tflops'] * 1000:.1f} GFLOP/s"),
              (f"agreement: text states {a['text_states_max_abs_diff']:.2e} over {a['text_tokens']} valid "
               f"tokens (max |state| {a['text_states_max_abs']:.2f}; masks "
               f"{'equal' if a['text_mask_equal'] else 'DIFFER'}), pooled {a['pooled_max_abs_diff']:.2e}; "
               f"final latents {a['latents_max_abs_diff']:.2e} (max |latent| {a['latents_max_abs']:.2f}; "
               f"frame 0, the image latent: {a['image_latent_max_abs_diff']:.2e}); decoded frames "
               f"{a['frames_max_abs_diff']:.2e} (frames {a['frames_shape']} in [0, 1])")]
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="real model sizes in bf16/fp16 (accelerator only)")
    p.add_argument("--config", choices=("medium", "tiny"), default="medium",
                   help="size of the random models without --full (default medium)")
    p.add_argument("--size", default=None, help="HEIGHTxWIDTH (medium 256x256, full 720x1280)")
    p.add_argument("--frames", type=int, default=None, help="video frames, 4n+1, > 1 (full: 129)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 3 on the CPU, 10 --full)")
    bench.add_comparison_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hyvideo.runtime.build import default_device

    device = torch.device(args.device) if args.device else default_device()
    if args.full and device.type == "cpu":
        print("error: --full needs a GPU (the 13B DiT and the 8B LLaVA in bf16/fp16); run it with "
              "--device cuda, or drop --full for the CPU medium configuration", file=sys.stderr)
        return 2
    try:
        size = bench._size(args.size) if args.size else (None, None)
        setup = make_setup("full" if args.full else args.config, *size, args.frames)
        steps = args.steps if args.steps is not None else (10 if args.full else 3)
        warmup = args.warmup if args.warmup is not None else (0 if device.type == "cpu" else 1)
        if device.type == "cpu":
            bench.fix_malloc_mmap_threshold()
        env = bench.environment(device)
        print(f"command: {env['command']}\ndate: {env['date']}\ndevice: {env['device']}\n"
              f"torch {env['torch']}, diffusers {env['diffusers']}, transformers {env['transformers']}, "
              f"load average {env['load_average']}", flush=True)
        result = benchmark(setup, device, steps=steps, repeats=args.repeats, warmup=warmup,
                           attention=args.attention, diffusers_attention=args.diffusers_attention,
                           vae_tiling=args.vae_tiling)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + format_report(result), flush=True)
    load = result["load_average_end"] = bench.environment(device)["load_average"]
    print(f"load average at the end {load:.2f} (figures taken under load are noisy: compare the "
          "per-round ratios)" if load is not None else "", flush=True)
    if args.json:
        args.json.write_text(json.dumps({**env, "result": result}, indent=1, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
