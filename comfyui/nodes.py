"""The node classes: ComfyUI's declarations (inputs with their limits, outputs, category) over
:mod:`.engine` and :mod:`.generate`.

Limits in ``INPUT_TYPES`` are checked by ComfyUI before a prompt is queued (HTTP 400 from
``/prompt``); what depends on the model (sizes that are multiples of 16, 4n+1 frames, a checkpoint
folder that exists) is checked when the node runs and reported as ComfyUI's ``execution_error``.
"""

from __future__ import annotations

from .engine import TINY, TINY_I2V, ModelSpec, lora_files, lora_path, pipeline_for
from .generate import SamplerSettings, decode, encode_text, image_input, sample

CATEGORY = "HunyuanVideo (hyvideo)"
MODEL, TEXT, I2V_IMAGE = "HYVIDEO_MODEL", "HYVIDEO_TEXT", "HYVIDEO_I2V_IMAGE"
MAX_SEED = 2**63 - 1  # torch generators take signed 64-bit seeds
CUSTOM = "custom"
DEFAULT_VARIANT = "HYVideo-T/2-cfgdistill"


def _variant_choices() -> list[str]:
    """Text-to-video variants, then image-to-video ones, then the I2V random-weight preset
    (``tiny-random`` itself is a model, whose variant picks the preset)."""
    from hyvideo.pipeline.variants import load_variant, variant_names

    names = [name for name in variant_names() if name != TINY]
    return sorted(names, key=lambda name: (name == TINY_I2V, load_variant(name).is_i2v, name))


class HyVideoModelLoader:
    """Loads a HunyuanVideo model once (cached by these inputs) for the other hyvideo nodes."""

    @classmethod
    def INPUT_TYPES(cls):
        from hyvideo.dit.attention import BACKENDS
        from hyvideo.runtime.offload.config import MODES

        return {"required": {
            "model": ("STRING", {"default": TINY, "tooltip":
                      f"{TINY} (random weights, offline test; variant {TINY_I2V} or HYVideo-I2V: the "
                      "image-to-video one), or a checkpoint folder (official ckpts/ layout or diffusers "
                      "layout): a name under ComfyUI/models/hyvideo/ or an absolute path"}),
            "variant": (_variant_choices(), {"default": DEFAULT_VARIANT, "tooltip":
                        "which released DiT the folder holds; HYVideo-I2V* animate an image "
                        "(connect a HunyuanVideo I2V Image node to the text node)"}),
            "resolution": (["720p", "540p"], {"tooltip": "official layout: hunyuan-video-{t2v|i2v}-<resolution>/"}),
            "precision": (["bf16", "fp16", "fp32"], {"default": "bf16"}),
            "fp8": ("BOOLEAN", {"default": False, "tooltip": "load the official FP8 DiT (*_fp8.pt + map)"}),
            "fp8_matmul": ("BOOLEAN", {"default": False, "tooltip": "float8 products (needs fp8; Hopper/Ada GPUs)"}),
            "attention": (list(BACKENDS), {"default": "auto"}),
            "offload": (list(MODES), {"default": "none", "tooltip":
                        "model: components visit the GPU per stage; sequential: per layer; blocks: block swap"}),
            "blocks_on_device": ("INT", {"default": 2, "min": 1, "max": 60, "step": 1,
                                         "tooltip": "offload=blocks: transformer blocks kept on the GPU"}),
            "compile": ("BOOLEAN", {"default": False, "tooltip": "regional torch.compile of the blocks"}),
        }}

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads HunyuanVideo (DiT, VAE, text encoders) with hyvideo's speed and memory options."

    def load(self, model, variant, resolution, precision, fp8, fp8_matmul, attention, offload,
             blocks_on_device, compile):
        spec = ModelSpec(model.strip(), variant, resolution, precision, bool(fp8), bool(fp8_matmul),
                         attention, offload, int(blocks_on_device), bool(compile))
        pipeline_for(spec)  # load now: errors and loading time belong to this node
        return (spec,)


class HyVideoLoraLoader:
    """Stacks a LoRA on the model (attached at sampling time; the cached weights stay as loaded)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL,),
            "lora": (lora_files(), {"tooltip": "a file in ComfyUI/models/loras"}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
        }}

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "add"
    CATEGORY = CATEGORY

    def add(self, model, lora, strength):
        lora_path(lora)  # a file that vanished since the list was made: say so here
        return (model.with_lora(lora, strength),)


class HyVideoI2VImage:
    """An image to animate: the first frame of an IMAGE, bucketed for image-to-video."""

    @classmethod
    def INPUT_TYPES(cls):
        from hyvideo.pipeline.image_input import I2V_RESOLUTIONS

        return {"required": {
            "image": ("IMAGE", {"tooltip": "its first frame is animated (e.g. from ComfyUI's Load Image)"}),
            "i2v_resolution": (list(I2V_RESOLUTIONS), {"default": "720p", "tooltip":
                               "the bucket set: the video size is the bucket closest to the image's "
                               "aspect ratio (the image is resized and centre-cropped to it); 144p: "
                               "previews and tiny-random-i2v"}),
            "i2v_stability": ("BOOLEAN", {"default": False, "tooltip":
                              "mix the image latent into the starting noise (steadier video; the "
                              "official README pairs it with flow_shift 7, else 17)"}),
        }}

    RETURN_TYPES = (I2V_IMAGE, "INT", "INT")
    RETURN_NAMES = ("i2v_image", "width", "height")
    FUNCTION = "prepare"
    CATEGORY = CATEGORY
    DESCRIPTION = ("The image for HunyuanVideo-I2V: connect it to the text node (the LLaVA encoder "
                   "reads it with the prompt); width and height are the video size it picks.")

    def prepare(self, image, i2v_resolution, i2v_stability):
        prepared = image_input(image, i2v_resolution, i2v_stability)
        width, height = prepared.size
        return (prepared, width, height)


class HyVideoTextEncode:
    """Encodes the prompt (and a negative prompt for CFG), optionally rewritten first; for an
    image-to-video model, with the image (the LLaVA encoder sees both)."""

    @classmethod
    def INPUT_TYPES(cls):
        from hyvideo.apps.rewrite import REWRITE_MODES

        return {
            "required": {
                "model": (MODEL,),
                "prompt": ("STRING", {"multiline": True, "default": "A cat walks on the grass, realistic style."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                    "used with cfg > 1; empty: the official negative prompt"}),
                "rewrite": (["off", *REWRITE_MODES], {"default": "off"}),
            },
            "optional": {
                "image": (I2V_IMAGE, {"tooltip": "image-to-video models: the image, which the LLaVA "
                          "encoder reads with the prompt (from a HunyuanVideo I2V Image node)"}),
                "rewrite_endpoint": ("STRING", {"default": "", "tooltip":
                                     "OpenAI-compatible chat endpoint serving the rewrite model"}),
                "rewrite_model_path": ("STRING", {"default": "", "tooltip": "or a local transformers model folder"}),
            },
        }

    RETURN_TYPES = (TEXT, "STRING")
    RETURN_NAMES = ("text", "prompt")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model, prompt, negative_prompt, rewrite, image=None, rewrite_endpoint="",
               rewrite_model_path=""):
        if rewrite != "off":
            prompt = _rewrite(prompt, rewrite, rewrite_endpoint, rewrite_model_path)
        return (encode_text(model, prompt, negative_prompt, image), prompt)


def _rewrite(prompt: str, mode: str, endpoint: str, model_path: str) -> str:
    from pathlib import Path

    from hyvideo.apps.rewrite import RewriteOptions, build_rewriter

    from .engine import NodeError

    endpoint, model_path = endpoint.strip(), model_path.strip()
    if bool(endpoint) == bool(model_path):
        raise NodeError(f"rewrite {mode}: give exactly one of rewrite_endpoint or rewrite_model_path")
    options = RewriteOptions(mode=mode, endpoint=endpoint or None,
                             model_path=Path(model_path) if model_path else None)
    return build_rewriter(options).rewrite(prompt)


class HyVideoSampler:
    """Video latents: the flow-matching sampler of the released model (text to video, or image
    to video when the loader loaded an I2V model and the text carries the image)."""

    @classmethod
    def INPUT_TYPES(cls):
        from hyvideo.pipeline.geometry import RESOLUTIONS
        from hyvideo.runtime.cache import MODES

        return {"required": {
            "model": (MODEL,),
            "text": (TEXT,),
            "size": ([CUSTOM, *RESOLUTIONS], {"default": CUSTOM, "tooltip": "a preset overrides width and "
                     "height (image to video: the image's bucket is the size, these are ignored)"}),
            "width": ("INT", {"default": 1280, "min": 16, "max": 4096, "step": 16}),
            "height": ("INT", {"default": 720, "min": 16, "max": 4096, "step": 16}),
            "frames": ("INT", {"default": 129, "min": 1, "max": 1025, "step": 4,
                               "tooltip": "4n+1 (image to video: more than 1)"}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED}),
            "flow_shift": ("FLOAT", {"default": 7.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                                     "tooltip": "7 (text to video); image to video: 17, or 7 with i2v_stability"}),
            "embedded_guidance": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 100.0, "step": 0.1}),
            "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 100.0, "step": 0.1,
                              "tooltip": "real classifier-free guidance when > 1 (twice the work)"}),
            "step_cache": (list(MODES), {"default": "none"}),
            "cache_threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.001,
                                          "tooltip": "0: the cache mode's suggested threshold"}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model, text, size, width, height, frames, steps, seed, flow_shift,
               embedded_guidance, cfg, step_cache, cache_threshold):
        if size != CUSTOM:
            from hyvideo.pipeline.geometry import RESOLUTIONS

            height, width = RESOLUTIONS[size]
        settings = SamplerSettings(width, height, frames, steps, seed, flow_shift, embedded_guidance,
                                   cfg, step_cache, cache_threshold)
        return (sample(model, text, settings),)


class HyVideoDecode:
    """Video latents to IMAGE frames [T, H, W, 3] (for ComfyUI's video and image nodes)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL,),
            "samples": ("LATENT",),
            "tiling": ("BOOLEAN", {"default": True, "tooltip": "decode in overlapping tiles (less memory)"}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, model, samples, tiling):
        return (decode(model, samples, tiling),)


NODE_CLASS_MAPPINGS = {
    "HyVideoModelLoader": HyVideoModelLoader,
    "HyVideoLoraLoader": HyVideoLoraLoader,
    "HyVideoI2VImage": HyVideoI2VImage,
    "HyVideoTextEncode": HyVideoTextEncode,
    "HyVideoSampler": HyVideoSampler,
    "HyVideoDecode": HyVideoDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HyVideoModelLoader": "HunyuanVideo Loader (hyvideo)",
    "HyVideoLoraLoader": "HunyuanVideo LoRA (hyvideo)",
    "HyVideoI2VImage": "HunyuanVideo I2V Image (hyvideo)",
    "HyVideoTextEncode": "HunyuanVideo Text Encode (hyvideo)",
    "HyVideoSampler": "HunyuanVideo Sampler (hyvideo)",
    "HyVideoDecode": "HunyuanVideo Decode (hyvideo)",
}
