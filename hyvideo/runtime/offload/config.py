"""Where the weights live while a video is generated: the ``--offload`` modes.

``none``
    Every component stays on the device.
``model`` (the official ``--use-cpu-offload``)
    Components live in CPU memory and visit the device whole for their stage: the text encoders
    for encoding, the DiT for the denoising loop, the VAE for decoding.
``sequential``
    Every weight lives in CPU memory (pinned when the device is an accelerator); each module's
    own weights are copied to the device by a forward pre-hook just before it runs and dropped by
    a forward hook right after. Lowest memory, slowest (every weight crosses the bus every call).
``blocks`` (block swap)
    Text encoders and VAE as in ``model``. For the DiT, the small modules (embedders, token
    refiner, final layer) move to the device for the denoising loop, while the 60 transformer
    blocks live in one pinned CPU buffer each and only ``blocks_on_device`` (K) of them are on
    the device, in K fixed device slots re-filled with ``copy_``. When block i starts, blocks
    i+1..i+K-1 (wrapping past the last block to the first ones, for the next step) are copied on
    a side stream; the compute stream waits for a block's copy event before running it, and a
    slot is refilled only after the compute stream's event recorded at the end of the block that
    used it. Slots are allocated once per denoising loop, not per step.

Every mode computes exactly what ``none`` computes: weights are copied bit for bit and nothing
else changes. Hooks are registered with the public ``nn.Module`` hook API inside
:meth:`use` and removed on exit; no ``forward`` is replaced. On the CPU (no accelerator) there is
nothing to offload to, but the bookkeeping still runs -- the "device copies" are real copies
into separate buffers -- so the tests exercise the same paths; pinning and streams are skipped.

Memory at 720x1280, 129 frames, COMPUTED by ``scripts/memory_plan.py`` (the real code path with
fake tensors and a live-bytes tracker; not yet measured on a GPU -- ``scripts/gpu_check.sh``
compares). Peak tensor bytes on the GPU, GiB, text encoders fp16, DiT bf16 and VAE fp16 with
the official autocast placement, VAE tiled, one prompt:

=============================  ======  =======  ======  ======
mode                           text    denoise  decode  total
=============================  ======  =======  ======  ======
none, bf16 DiT                 38.67   49.59    52.87   52.87
none, ``--use-fp8``            27.07   37.99    41.27   41.27
model, bf16                    14.33   34.93    14.78   34.93
model, ``--use-fp8``           14.33   23.33    14.78   23.33
blocks K=2, bf16               14.33   12.98    14.78   14.78
blocks K=2, ``--use-fp8``      14.33   12.35    14.78   14.78
=============================  ======  =======  ======  ======

Add ~0.5-1 GiB for the CUDA context, allocator rounding and library workspaces. The DiT's
weights are 23.99 GiB in bf16 (11.6 GiB of FP8 blocks + bf16 rest under ``--use-fp8``); the
Llama-3 8B text encoder's 14.0 GiB and the VAE decode (float32 group-norm outputs under
autocast) set the floor of ``model`` and ``blocks``, so ``none`` cannot fit 40 GB. The denoising
peak is inside a single block (its ``linear1`` output, 4.77 GiB, and its activation). Ulysses 8 lowers each rank's denoising peak (``model``, bf16:
26.34 GiB). Host memory: ``blocks`` pins the blocks in one arena of power-of-two chunks (bf16:
23.2 GiB of blocks in 24.0 GiB; pinned one block at a time they took 40.0 GiB), ``sequential``
likewise every tensor (bf16 DiT + text encoders + VAE: 39.0 GiB instead of 48.8 GiB). Every step
streams all block weights (~25 GB bf16 / ~12.5 GB FP8) over PCIe, ~1 s at ~25 GB/s pinned; one
block's copy (~27 ms for a 648 MiB double block) is far shorter than its compute at 720p (0.2
PFLOP, ~0.5 s at 400 TFLOP/s), so the prefetch hides the transfer.
"""


from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

log = logging.getLogger(__name__)

MODES = ("none", "model", "sequential", "blocks")
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class OffloadConfig:
    """Which offload mode, and its parameters (``blocks_on_device``: K for ``blocks``)."""

    mode: str = "none"
    blocks_on_device: int = 2
    pin_memory: bool = True  # pin the CPU copies when the device is an accelerator

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown offload mode {self.mode!r}: use one of {', '.join(MODES)}")
        k = self.blocks_on_device
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"blocks on device must be an integer >= 1 (2-4 is typical), got {k!r}")

    def load_device(self, device: torch.device | str) -> torch.device:
        """Where the components should be loaded: the device for ``none``, else the CPU."""
        return torch.device(device) if self.mode == "none" else _CPU

    def describe(self) -> str:
        """One line saying what the mode does."""
        return {
            "none": "offload none: every component stays on the device",
            "model": "offload model (the official --use-cpu-offload): components live in CPU memory; the text "
                     "encoders, the DiT and the VAE each move whole to the device for their stage",
            "sequential": "offload sequential: weights live in CPU memory and each layer's weights "
                          "are copied to the device just before it runs (lowest memory, slowest)",
            "blocks": f"offload blocks: {self.blocks_on_device} DiT transformer blocks at a time on "
                      "the device, the others in pinned CPU memory, prefetched on a side stream; "
                      "text encoders and VAE move whole for their stage",
        }[self.mode]


class Offload(Protocol):
    """What the pipeline uses: ``with offload.use("dit"): ...`` around each stage."""

    def use(self, name: str): ...

    def describe(self) -> str: ...

    def close(self) -> None: ...
