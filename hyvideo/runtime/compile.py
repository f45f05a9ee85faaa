"""Regional ``torch.compile``: each transformer block compiled on its own, in place.

Compiling the whole DiT traces 60 blocks into one graph (minutes of compile time, and a
recompile whenever anything around the blocks changes). All double blocks share one Python
``forward`` and all single blocks another, so compiling them block by block traces each block
type once and reuses the code for the other 19 / 39 instances (parameters are graph inputs):
two graphs in all, compiled in seconds on a GPU.

``dynamic=True`` marks the token count (image and text) symbolic from the first call, so a new
resolution, frame count or prompt length reuses the compiled blocks instead of recompiling;
``tests/test_compile.py`` checks this with dynamo's counters. ``nn.Module.compile`` keeps the
modules and their state-dict keys as they are (nothing is wrapped or renamed), so checkpoints,
LoRA and FP8 layers work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from hyvideo.dit.model import transformer_blocks

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_blocks(model: nn.Module, *, mode: str = "default", dynamic: bool | None = True) -> int:
    """Compile every double and single block of ``model`` in place; return how many.

    Compilation itself happens lazily, on the first forward (the first denoising step is
    slower by the compile time).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    blocks = transformer_blocks(model)
    for block in blocks:
        block.compile(mode=None if mode == "default" else mode, dynamic=dynamic)
    return len(blocks)


def is_compiled(block: nn.Module) -> bool:
    return getattr(block, "_compiled_call_impl", None) is not None


def reset_compiled() -> None:
    """Forget every compiled graph of this process (tests, benchmarks of compile time)."""
    torch.compiler.reset()
