"""The pack's one place that calls hyvideo and ComfyUI's runtime services.

* :class:`ModelSpec` is what a ``HYVIDEO_MODEL`` socket carries: the loader's inputs plus the LoRAs
  stacked on it. It holds no tensors; :func:`pipeline_for` turns it into a loaded pipeline through
  a process-wide cache keyed by the loader inputs, so a model is loaded once and reused by every
  run and every node that names it (LoRAs are attached as side branches at sampling time and never
  change the cached weights).
* ComfyUI's services are imported lazily (``comfy.*`` and ``folder_paths`` exist only inside a
  running ComfyUI), so the pack also imports in a plain Python for its unit tests.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import torch

log = logging.getLogger("hyvideo.comfyui")

TINY = "tiny-random"
TINY_I2V = "tiny-random-i2v"  # the image-to-video preset (token_replace)
# Sub-folders of ComfyUI's models/ where a checkpoint folder name is looked up, in order.
MODEL_FOLDERS = ("hyvideo", "diffusers", "")


class NodeError(ValueError):
    """Bad input to a node: the message names the input, its value and what is valid."""


@dataclass(frozen=True)
class ModelSpec:
    """The loader's inputs, plus the LoRAs stacked on the model by LoRA nodes."""

    model: str
    variant: str
    resolution: str
    precision: str
    use_fp8: bool
    fp8_matmul: bool
    attention: str
    offload: str
    blocks_on_device: int
    compile: bool
    loras: tuple[tuple[str, float], ...] = ()  # (file, strength) in stacking order

    @property
    def load_key(self) -> ModelSpec:
        """What identifies the loaded weights (LoRAs are attached per run)."""
        return replace(self, loras=())

    def with_lora(self, path: str, strength: float) -> ModelSpec:
        return replace(self, loras=(*self.loras, (path, float(strength))))

    @property
    def is_tiny(self) -> bool:
        return self.model in (TINY, TINY_I2V)

    @property
    def hyvideo_model(self) -> str:
        """The hyvideo model (variant) this spec loads: for model ``tiny-random`` the random-weight
        preset of the variant's kind (``tiny-random-i2v`` for the token_replace image-to-video
        variants), else the variant."""
        from hyvideo.pipeline.variants import load_variant

        if self.model == TINY_I2V:
            return TINY_I2V
        if self.model != TINY:
            if self.variant in (TINY, TINY_I2V):
                raise NodeError(f"variant {self.variant} is a random-weight preset: set model to {TINY}, "
                                f"or choose the released variant the folder {self.model!r} holds")
            return self.variant
        kind = load_variant(self.variant).i2v_condition_type
        if kind is None:
            return TINY
        if kind != "token_replace":
            raise NodeError(f"variant {self.variant}: model {TINY} has no random-weight {kind} preset; "
                            f"choose {TINY_I2V} (token_replace) or a checkpoint folder")
        return TINY_I2V

    @property
    def is_i2v(self) -> bool:
        """Whether this is an image-to-video model (its text node and sampler need an image)."""
        from hyvideo.pipeline.variants import load_variant

        return load_variant(self.hyvideo_model).is_i2v


# --- ComfyUI services -----------------------------------------------------------------------------

def comfy_device() -> torch.device:
    """The device ComfyUI computes on (``--cpu`` honoured); hyvideo's default outside ComfyUI."""
    try:
        import comfy.model_management as mm
    except ImportError:
        from hyvideo import compat

        return compat.current_device()
    return torch.device(mm.get_torch_device())


def models_dir() -> Path | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return Path(folder_paths.models_dir)


def check_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException once the user pressed Cancel."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def progress_bar(total: int):
    """ComfyUI's progress bar (its websocket ``progress`` messages); a no-op outside ComfyUI."""
    try:
        import comfy.utils
    except ImportError:
        return None
    return comfy.utils.ProgressBar(total)


def release_memory() -> None:
    """After an interruption or error: drop the run's tensors and the device's cached blocks."""
    gc.collect()
    try:
        import comfy.model_management as mm
    except ImportError:
        from hyvideo import compat

        compat.empty_cache(comfy_device())
        return
    mm.soft_empty_cache(force=True)


def free_comfy_models() -> None:
    """Before loading ours: ComfyUI's own models leave the device (they reload on demand)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.unload_all_models()
    mm.soft_empty_cache()


# --- the model cache ------------------------------------------------------------------------------

_lock = threading.Lock()
_pipelines: dict[ModelSpec, object] = {}
_loras: dict[str, object] = {}  # LoRA file -> LoraWeights matched to the cached DiT


def resolve_model_folder(name: str) -> Path:
    """A checkpoint root: an absolute path, or a folder name under ComfyUI's models/hyvideo/,
    models/diffusers/ or models/ (official ``ckpts/`` layout or the diffusers layout)."""
    text = name.strip()
    if not text:
        raise NodeError(f"model is empty: give {TINY} or a checkpoint folder")
    path = Path(text).expanduser()
    if path.is_absolute():
        if not path.is_dir():
            raise NodeError(f"model folder {path} not found")
        return path
    base = models_dir()
    tried = [base / sub / text if sub else base / text for sub in MODEL_FOLDERS] if base else [path]
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise NodeError(f"model folder {text!r} not found (looked in {', '.join(str(t) for t in tried)}); "
                    f"put the checkpoints in ComfyUI/models/hyvideo/{text} or give an absolute path")


def load_options(spec: ModelSpec):
    """hyvideo's (LoadOptions, RuntimeOptions) for ``spec`` on ComfyUI's device."""
    from hyvideo.checkpoints.layouts import CheckpointPaths
    from hyvideo.pipeline.options import LoadOptions, Precisions
    from hyvideo.runtime.build import CompileConfig, Fp8MatmulConfig, RuntimeOptions
    from hyvideo.runtime.offload.config import OffloadConfig

    device = comfy_device()
    if spec.is_tiny:
        load = LoadOptions(model=spec.hyvideo_model, attention=spec.attention)
    else:
        # On a CPU the half-precision kernels are slow or missing: the VAE and text encoders
        # follow the DiT's precision there; on an accelerator they keep the official fp16.
        other = spec.precision if device.type == "cpu" else "fp16"
        paths = CheckpointPaths(model_base=resolve_model_folder(spec.model),
                                model_resolution=spec.resolution, use_fp8=spec.use_fp8)
        load = LoadOptions(model=spec.hyvideo_model, paths=paths, attention=spec.attention,
                           precisions=Precisions(spec.precision, other, other, other))
    runtime = RuntimeOptions(
        device=device, offload=OffloadConfig(spec.offload, spec.blocks_on_device),
        compile=CompileConfig() if spec.compile else None,
        fp8_matmul=Fp8MatmulConfig() if spec.fp8_matmul else None)
    return load, runtime


def pipeline_for(spec: ModelSpec):
    """The loaded pipeline of ``spec`` (cached: one model at a time is kept)."""
    from hyvideo.runtime.build import load_pipeline

    key = spec.load_key
    with _lock:
        pipe = _pipelines.get(key)
        if pipe is not None:
            return pipe
        unload_all()  # one HunyuanVideo model in memory: a 13B DiT does not fit twice
        free_comfy_models()
        load, runtime = load_options(spec)
        log.info("hyvideo: loading %s", load.model if spec.is_tiny else load.paths.model_base)
        pipe = load_pipeline(load, runtime)
        _pipelines[key] = pipe
        return pipe


def unload_all() -> None:
    for pipe in _pipelines.values():
        close = getattr(getattr(pipe, "execution", None), "close", None)
        if close is not None:
            close()
    _pipelines.clear()
    _loras.clear()
    release_memory()


def cached_models() -> list[ModelSpec]:
    return list(_pipelines)


def lora_files() -> list[str]:
    try:
        import folder_paths
    except ImportError:
        return []
    return folder_paths.get_filename_list("loras")


def lora_path(name: str) -> Path:
    path = Path(name)
    if path.is_absolute():
        return path
    try:
        import folder_paths
    except ImportError:
        return path
    full = folder_paths.get_full_path("loras", name)
    if full is None:
        raise NodeError(f"LoRA {name!r} not found in ComfyUI/models/loras")
    return Path(full)


def use_loras(pipe, loras: tuple[tuple[str, float], ...]) -> None:
    """Attach exactly ``loras`` to the DiT as side branches (scaled), detaching any others."""
    from hyvideo.dit.lora import LoraSpec, attach_lora, detach_loras, load_lora

    detach_loras(pipe.dit)
    paths = [str(lora_path(name)) for name, _ in loras]
    if len(set(paths)) != len(paths):
        raise NodeError("the same LoRA file is stacked twice: combine the strengths in one LoRA node")
    for path in paths:  # resolved against the plain DiT, before any side branch is attached
        if path not in _loras:
            _loras[path] = load_lora(pipe.dit, LoraSpec(Path(path), 1.0))
    for path, (_, strength) in zip(paths, loras, strict=True):
        attach_lora(pipe.dit, _loras[path], scale=strength)
