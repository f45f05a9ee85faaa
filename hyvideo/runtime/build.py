"""A ready pipeline from load options and runtime options: the one assembly point.

:class:`RuntimeOptions` groups the speed and memory options, each as its own typed config built by
the application (never from flag names here): the device, the offload mode, the step cache,
regional compile and float8 products. :func:`load_pipeline` loads the components
(:mod:`hyvideo.pipeline.components`), applies these options around the models, and hands the
pipeline an :class:`~hyvideo.pipeline.execution.Execution` that runs its stages accordingly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from hyvideo import compat
from hyvideo.dit.fp8 import ACTIVATION_SCALES
from hyvideo.pipeline.components import load_components
from hyvideo.pipeline.options import LoadOptions
from hyvideo.pipeline.execution import Execution
from hyvideo.pipeline.i2v import HunyuanVideoI2VPipeline
from hyvideo.pipeline.t2v import HunyuanVideoPipeline
from hyvideo.pipeline.types import UsageError
from hyvideo.runtime.cache import CacheConfig
from hyvideo.runtime.offload.config import OffloadConfig

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    """The current accelerator (CUDA, ROCm, XPU, MPS...) if there is one, else the CPU."""
    return compat.current_device()


def device_for_rank(local_rank: int) -> torch.device:
    """This process's device under torchrun: accelerator ``local_rank``, or the CPU."""
    acc = compat.accelerator_type()
    return torch.device(acc, local_rank) if acc is not None else torch.device("cpu")


@dataclass(frozen=True)
class CompileConfig:
    """Regional ``torch.compile`` of the transformer blocks (see :mod:`hyvideo.runtime.compile`)."""

    mode: str = "default"


@dataclass(frozen=True)
class Fp8MatmulConfig:
    """Float8 products for the official FP8 checkpoint's layers (``activation_scale``: per row of
    the input, or one for the whole input)."""

    activation_scale: str = "token"

    def __post_init__(self) -> None:
        if self.activation_scale not in ACTIVATION_SCALES:
            raise UsageError(f"fp8 activation scale must be token or tensor, got {self.activation_scale!r}",
                             "fp8_activation_scale")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how the models run: each option is off (None/none) unless given."""

    device: torch.device | None = None  # None: the accelerator if there is one, else the CPU
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    compile: CompileConfig | None = None
    fp8_matmul: Fp8MatmulConfig | None = None

    def resolved_device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else default_device()

    def check(self, load: LoadOptions) -> None:
        """Contradictory options, before anything is loaded (UsageError, one line)."""
        if self.compile is not None and self.offload.mode in ("sequential", "blocks"):
            raise UsageError(f"--compile cannot be combined with --offload {self.offload.mode} (its hooks "
                             "move weights around each layer); use --offload model, or drop --compile",
                             "compile")
        if self.fp8_matmul is not None and not load.paths.use_fp8:
            raise UsageError("--fp8-matmul needs --use-fp8 (the official FP8 checkpoint *_fp8.pt)", "fp8_matmul")


def load_pipeline(load: LoadOptions, runtime: RuntimeOptions | None = None, *,
                  parallel=None) -> HunyuanVideoPipeline:
    """Load ``load.model`` and wrap it in ``runtime``'s options.

    ``parallel`` (a :class:`hyvideo.runtime.parallel.ParallelState`): only rank 0 loads the text
    encoders (their output is broadcast); every rank holds the DiT and the VAE.
    """
    runtime = runtime or RuntimeOptions()
    runtime.check(load)
    device = runtime.resolved_device()
    parts = load_components(load, runtime.offload.load_device(device),
                            with_text=parallel is None or parallel.is_main)
    apply_model_options(parts.dit, runtime, device)
    variant = load.variant
    pipeline_class = HunyuanVideoI2VPipeline if variant.is_i2v else HunyuanVideoPipeline
    return pipeline_class(
        parts.dit, parts.vae, parts.text_encoders, device=device, name=variant.name,
        defaults=variant.sampling, geometry=variant.geometry, vae_tiling=load.vae_tiling,
        autocast=load.autocast, execution=make_execution(parts, device, runtime.offload, parallel),
        step_cache=make_cache(runtime.cache, parallel),
    )


def apply_model_options(dit: torch.nn.Module, runtime: RuntimeOptions, device: torch.device) -> None:
    """Float8 products for the device the DiT runs on, then, last, the blocks compiled."""
    if runtime.fp8_matmul is not None:
        from hyvideo.dit.fp8 import enable_fp8_matmul, fp8_matmul_summary

        enable_fp8_matmul(dit, runtime.fp8_matmul.activation_scale, device=device, dtype=dit.dtype)
        log.info(fp8_matmul_summary(dit))
    if runtime.compile is not None:
        from hyvideo.runtime.compile import compile_blocks

        count = compile_blocks(dit, mode=runtime.compile.mode)
        log.info("compiling %d transformer blocks (regional, dynamic shapes): the first step "
                 "includes the compile time", count)


def make_cache(config: CacheConfig, parallel=None):
    """The step cache (None for mode none); under CFG parallelism its decisions cover both halves."""
    if not config.enabled:
        return None
    from hyvideo.runtime.cache import make_step_cache

    log.info("step cache %s, threshold %g: skips the transformer blocks on steps whose input "
             "changed less than that", config.mode, config.threshold)
    groups = (parallel.cfg_group,) if parallel is not None and parallel.cfg_group is not None else ()
    return make_step_cache(config, groups)


def make_execution(parts, device: torch.device, offload: OffloadConfig, parallel=None) -> Execution:
    """How the stages run: offloading between them and, under torchrun, parallelism."""
    wrapper = None
    if offload.mode != "none":
        from hyvideo.runtime.offload.wrap import offload_components

        log.info(offload.describe())
        components = {"dit": parts.dit, "vae": parts.vae}
        if parts.text_encoders is not None:
            components["text_encoders"] = parts.text_encoders
        wrapper = offload_components(components, device, offload)
    if parallel is not None:
        from hyvideo.runtime.parallel.execution import ParallelExecution

        return ParallelExecution(parallel, offload=wrapper)
    if wrapper is not None:
        return OffloadExecution(wrapper)
    return Execution()


class OffloadExecution(Execution):
    """One process; components visit the device for their stage (an offload wrapper's ``use``)."""

    def __init__(self, offload):
        self.offload = offload

    def stage(self, component: str):
        return self.offload.use(component)

    def close(self) -> None:
        self.offload.close()
